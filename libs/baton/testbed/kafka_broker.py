"""Runs a real single-node Apache Kafka broker (KRaft) from Maven Central jars with the machine's JDK."""

from __future__ import annotations

import base64
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

# The checkout: the fetch scripts live in its scripts/ (the bench and the tests run from a checkout).
REPO = Path(__file__).resolve().parents[3]

_LOG4J2 = """\
status = warn
appender.out.type = Console
appender.out.name = OUT
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = WARN
rootLogger.appenderRef.out.ref = OUT
logger.server.name = kafka.server.KafkaRaftServer
logger.server.level = INFO
"""


def free_port() -> int:
    """A TCP port on loopback nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def fetch_kafka() -> Path:
    """Jars directory of the cached Kafka distribution (downloaded with mvn on first use)."""
    out = (
        subprocess.run([str(REPO / "scripts" / "fetch-kafka.sh")], check=True, capture_output=True, text=True)
        .stdout.strip()
        .splitlines()[-1]
    )
    return Path(out) / "libs"


def _cluster_id() -> str:
    """A random KRaft cluster id, as Kafka's own ``Uuid.randomUuid`` makes it.

    Kafka's command line reads an id that starts with ``-`` as an option (one
    in 64 random ids did, and ``StorageTool format`` failed), so such ids are
    drawn again, exactly as Kafka does.
    """
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


@dataclass
class KafkaBroker:
    """A broker process; `bootstrap` is host:port for clients."""

    libs: Path
    workdir: Path
    port: int
    process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def version(self) -> str:
        for jar in self.libs.glob("kafka_*.jar"):
            m = re.match(r"kafka_[0-9.]+-(.+)\.jar$", jar.name)
            if m:
                return m.group(1)
        return "unknown"

    @property
    def log_path(self) -> Path:
        return self.workdir / "broker.log"

    def _java(self, *args: str) -> list[str]:
        java = shutil.which("java")
        if java is None:
            raise RuntimeError("java not found: install a JDK 17 (apt-get install openjdk-17-jre-headless)")
        return [
            java,
            "-Xms256m",
            "-Xmx768m",
            f"-Dlog4j2.configurationFile={self.workdir / 'log4j2.properties'}",
            "-cp",
            f"{self.libs}/*",
            *args,
        ]

    def start(self, *, timeout_s: float = 90.0, partitions: int = 4) -> None:
        """Format storage, start the broker and wait until it accepts connections."""
        controller = free_port()
        props = self.workdir / "server.properties"
        props.write_text(
            "\n".join(
                [
                    "process.roles=broker,controller",
                    "node.id=1",
                    f"controller.quorum.bootstrap.servers=127.0.0.1:{controller}",
                    f"listeners=PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{controller}",
                    f"advertised.listeners=PLAINTEXT://127.0.0.1:{self.port}",
                    "controller.listener.names=CONTROLLER",
                    "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
                    f"log.dirs={self.workdir / 'data'}",
                    f"num.partitions={partitions}",
                    "offsets.topic.replication.factor=1",
                    "offsets.topic.num.partitions=4",
                    "transaction.state.log.replication.factor=1",
                    "transaction.state.log.min.isr=1",
                    "share.coordinator.state.topic.replication.factor=1",
                    "share.coordinator.state.topic.min.isr=1",
                    "group.initial.rebalance.delay.ms=0",
                    "auto.create.topics.enable=true",
                    "",
                ]
            )
        )
        (self.workdir / "log4j2.properties").write_text(_LOG4J2)
        cluster_id = _cluster_id()
        formatted = subprocess.run(
            self._java("kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(props), "--standalone"),
            capture_output=True,
        )
        if formatted.returncode != 0:
            raise RuntimeError(
                f"formatting the Kafka storage failed (exit {formatted.returncode}): "
                f"{formatted.stderr.decode(errors='replace')[-2000:]}{formatted.stdout.decode(errors='replace')[-2000:]}"
            )
        log = self.log_path.open("wb")
        self.process = subprocess.Popen(self._java("kafka.Kafka", str(props)), stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"Kafka exited with {self.process.returncode}; see {self.log_path}:\n"
                    + self.log_path.read_text()[-3000:]
                )
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return
            except OSError:
                time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"Kafka did not listen on {self.bootstrap} within {timeout_s}s; see {self.log_path}")

    def stop(self) -> None:
        """Stop the broker (SIGTERM, then SIGKILL after 20 s)."""
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None
        shutil.rmtree(self.workdir / "data", ignore_errors=True)


def start_broker(workdir: Path | None = None) -> KafkaBroker:
    """Fetch (once) and start a broker in a fresh directory."""
    libs = fetch_kafka()
    work = workdir or Path(tempfile.mkdtemp(prefix="baton-kafka-"))
    broker = KafkaBroker(libs=libs, workdir=work, port=int(os.environ.get("BATON_TEST_KAFKA_PORT", "0")) or free_port())
    broker.start()
    return broker
