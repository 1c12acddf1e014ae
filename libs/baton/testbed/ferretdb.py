"""Runs FerretDB (the MongoDB wire protocol on SQLite), built from the Go module proxy, on a free port."""

from __future__ import annotations

import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from baton.testbed.kafka_broker import REPO, free_port


def fetch_ferretdb() -> Path:
    """Path of the cached FerretDB binary (built on first use)."""
    out = (
        subprocess.run([str(REPO / "scripts" / "fetch-ferretdb.sh")], check=True, capture_output=True, text=True)
        .stdout.strip()
        .splitlines()[-1]
    )
    return Path(out)


@dataclass
class FerretDB:
    binary: Path
    workdir: Path
    port: int
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"mongodb://127.0.0.1:{self.port}/?directConnection=true"

    @property
    def version(self) -> str:
        out = subprocess.run([str(self.binary), "--version"], capture_output=True, text=True).stdout
        return out.splitlines()[0].removeprefix("version: ").strip() if out else "unknown"

    def start(self, timeout_s: float = 30.0) -> None:
        data = self.workdir / "data"
        data.mkdir(parents=True, exist_ok=True)
        log = (self.workdir / "ferretdb.log").open("wb")
        self.process = subprocess.Popen(
            [
                str(self.binary),
                "--handler=sqlite",
                f"--sqlite-url=file:{data}/",
                f"--listen-addr=127.0.0.1:{self.port}",
                "--telemetry=disable",
                "--log-level=warn",
                "--debug-addr=-",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"FerretDB exited with {self.process.returncode}: "
                    + (self.workdir / "ferretdb.log").read_text()[-2000:]
                )
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"FerretDB did not listen on port {self.port} within {timeout_s}s")

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
            self.process = None


def start_ferretdb() -> FerretDB:
    server = FerretDB(
        binary=fetch_ferretdb(), workdir=Path(tempfile.mkdtemp(prefix="baton-ferretdb-")), port=free_port()
    )
    server.start()
    return server
