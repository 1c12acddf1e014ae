"""`baton audit verify --against-kafka` on a real broker, with the embedded SQLite store and with MongoDB
(FerretDB): an intact audit verifies; cutting its tail with its anchors, or emptying it, fails naming
the offsets the broker holds and the store does not."""

from __future__ import annotations

import asyncio
import os
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import SecretStr

from baton import topics
from baton.audit.keys import encode_public_key, encode_signing_key, generate_signing_key
from baton.audit.store import AuditStore
from baton.bus.kafka import KafkaBus
from baton.contracts.models import Envelope, TaskRequested
from baton.contracts.serde import AvroSerde
from baton.messaging import EventBus
from services.auditor.app import start
from services.auditor.config import Settings
from tests.audit.test_anchors import _delete_anchors
from tests.audit.test_audit_store_contract import Tamper
from tests.harness.identities import trust
from tests.harness.kafka_broker import KafkaBroker, start_broker

pytestmark = pytest.mark.integration

EVENTS = 60


@pytest.fixture
def fresh_broker() -> Iterator[KafkaBroker]:
    """A broker of this test's own: the auditor's group is a constant, and its offsets are the proof."""
    broker = start_broker()
    try:
        yield broker
    finally:
        broker.stop()


async def _verify(env: dict[str, str]) -> tuple[int | None, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "baton",
        "audit",
        "verify",
        "--against-kafka",
        env={**os.environ, **env},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    return proc.returncode, out.decode() + err.decode()


async def _until(store: AuditStore, count: int, timeout_s: float) -> None:
    async def counted() -> None:
        while await store.count() < count:  # noqa: ASYNC110 - the auditor has no completion signal
            await asyncio.sleep(0.2)

    await asyncio.wait_for(counted(), timeout_s)


@pytest.mark.parametrize("store_kind", ["embedded", "mongodb"])
async def test_verify_against_kafka_proves_the_audit_whole_and_names_what_was_cut(
    store_kind: str, fresh_broker: KafkaBroker, serde: AvroSerde, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    key = generate_signing_key()
    (tmp_path / "verify.pub").write_text(encode_public_key(key.public_key()))
    database = f"audit_kafka_{uuid.uuid4().hex[:8]}"
    settings = Settings(
        store="embedded" if store_kind == "embedded" else "mongodb",
        sqlite_path=tmp_path / "audit.db",
        mongodb_url=request.getfixturevalue("mongodb_url") if store_kind == "mongodb" else "mongodb://unused/",
        mongodb_database=database,
        signing_key=SecretStr(encode_signing_key(key)),
        anchor_file=tmp_path / "anchors.jsonl",
        anchor_idle_s=0.2,
        batch_size=20,
    )
    env = {
        "BATON_BUS": "kafka",
        # No approval service runs here: a refund that needs a human ends escalated to its queue.
        "BATON_SUPERVISOR_AWAIT_APPROVALS": "false",
        "BATON_KAFKA_BOOTSTRAP": fresh_broker.bootstrap,
        "BATON_AUDITOR_STORE": settings.store,
        "BATON_AUDITOR_SQLITE_PATH": str(settings.sqlite_path),
        "BATON_AUDITOR_MONGODB_URL": settings.mongodb_url,
        "BATON_AUDITOR_MONGODB_DATABASE": database,
        "BATON_AUDITOR_VERIFY_KEY_FILE": str(tmp_path / "verify.pub"),
    }
    bus = KafkaBus(fresh_broker.bootstrap, client_id="audit-against-kafka", partitions=2)
    await bus.start()
    try:
        app = await start(EventBus(bus=bus, serde=serde, producer="auditor-it", trust=trust("auditor")), settings)
        try:
            for i in range(EVENTS):
                envelope = Envelope(workflow_id=f"wf-{i % 7}", tenant_id="t", producer="it")
                task = TaskRequested(
                    envelope=envelope, workflow_type="support_refund", input_json="{}", requested_by="it"
                )
                await bus.publish(topics.TASKS, await serde.encode(task), key=envelope.workflow_id.encode())
            await bus.publish(topics.TASKS, b"\x01 not avro", key=b"wf-0")
            await _until(app.store, EVENTS + 1, 60)
        finally:
            await app.stop()  # commits, then anchors what it holds

        code, out = await _verify(env)
        assert code == 0, out
        assert f"{EVENTS + 1} records in the log below the auditor's committed offsets" in out

        store = settings.build_store(create=False)
        try:
            docs = await Tamper(store).docs()
            partition = max({d["partition"] for d in docs}, key=lambda p: sum(d["partition"] == p for d in docs))
            tail = [d for d in docs if d["partition"] == partition][-3:]
            await Tamper(store).delete([d["_id"] for d in tail])
            await _delete_anchors(store, tp=(topics.TASKS, partition), from_offset=tail[0]["offset"])
            cut = f"{tail[0]['offset']}-{tail[-1]['offset']}"
            # The anchor file is gone too: the compacted topic alone proves the cut.
            (tmp_path / "anchors.jsonl").unlink()
            code, out = await _verify(env)
            assert code == 1, out
            assert f"{topics.TASKS}/{partition}: offsets {cut} (3 record(s)) are in the log below" in out
            assert "not in the store: deleted" in out

            await Tamper(store).delete([d["_id"] for d in await Tamper(store).docs()])
            await _delete_anchors(store)
            code, out = await _verify(env)
            assert code == 1, out
            assert "audit FAILED: 0 records" in out
            for p in {d["partition"] for d in docs}:
                assert f"{topics.TASKS}/{p}" in out
            assert "were deleted" in out or "not in the store: deleted" in out
        finally:
            await store.close()
        if store_kind == "embedded":
            # The store itself deleted: the broker's log still names every record the audit lacks.
            (tmp_path / "audit.db").unlink()
            code, out = await _verify(env)
            assert code == 1, out
            assert "no audit store" in out and "checking the broker's log" in out
            for p in {d["partition"] for d in docs}:
                assert f"{topics.TASKS}/{p}" in out
            assert not (tmp_path / "audit.db").exists()
    finally:
        await bus.stop()
