"""The auditor's keys: it refuses to start without a real one, `baton audit keygen` makes a pair, and
`baton audit verify` on a path that holds no store says so and creates nothing."""

from __future__ import annotations

import asyncio
import stat
from pathlib import Path

import pytest
from pydantic import SecretStr
from typer.testing import CliRunner

from baton import topics
from baton.audit.anchors import read_anchor_file, read_anchor_topic
from baton.audit.completeness import EmbeddedAuditedLog, verify_audit
from baton.audit.keys import DEV_KEY, AuditKeyError, encode_signing_key, generate_signing_key
from baton.bus.embedded import EmbeddedBus
from baton.cli import app
from baton.contracts.models import Envelope, TaskRequested
from baton.contracts.registry import LocalSchemaRegistry
from baton.contracts.serde import AvroSerde
from baton.messaging import EventBus
from services.auditor.app import audited_topics, start
from services.auditor.config import Settings
from tests.harness.identities import trust

_KEY_ENV = ("BATON_AUDITOR_SIGNING_KEY", "BATON_AUDITOR_SIGNING_KEY_FILE", "BATON_AUDITOR_VERIFY_KEY")


@pytest.fixture(autouse=True)
def _no_keys_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (*_KEY_ENV, "BATON_AUDITOR_VERIFY_KEY_FILE", "BATON_AUDITOR_ANCHOR_FILE"):
        monkeypatch.delenv(name, raising=False)


def _events() -> EventBus:
    return EventBus(
        bus=EmbeddedBus(partitions=2),
        serde=AvroSerde(LocalSchemaRegistry()),
        producer="auditor-test",
        trust=trust("auditor"),
    )


async def test_the_auditor_refuses_to_start_without_a_key_and_creates_nothing(tmp_path: Path) -> None:
    where = tmp_path / "never" / "audit.db"
    with pytest.raises(AuditKeyError, match=r"no signing key.*baton audit keygen"):
        await start(_events(), Settings(sqlite_path=where))
    assert not where.parent.exists()


async def test_the_auditor_refuses_the_published_development_key(tmp_path: Path) -> None:
    with pytest.raises(AuditKeyError, match="published development key"):
        await start(_events(), Settings(sqlite_path=tmp_path / "audit.db", signing_key=SecretStr(DEV_KEY)))
    with pytest.raises(AuditKeyError, match="not an Ed25519 private key"):
        await start(_events(), Settings(sqlite_path=tmp_path / "audit.db", signing_key=SecretStr("c2hvcnQ=")))


def test_keygen_writes_a_pair_the_auditor_and_the_verifier_load(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["audit", "keygen", "--out", str(tmp_path / "keys")])
    assert result.exit_code == 0, result.output
    private, public = tmp_path / "keys" / "auditor-signing.key", tmp_path / "keys" / "auditor-verify.pub"
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    settings = Settings(signing_key_file=private, verify_key_file=public)
    assert settings.private_key().public_key() == settings.public_key()
    again = CliRunner().invoke(app, ["audit", "keygen", "--out", str(tmp_path / "keys")])
    assert again.exit_code == 1 and "refusing to overwrite" in again.output


def test_verify_on_a_path_without_a_store_says_so_and_creates_nothing(tmp_path: Path) -> None:
    CliRunner().invoke(app, ["audit", "keygen", "--out", str(tmp_path)])
    public = tmp_path / "auditor-verify.pub"
    where = tmp_path / "nothing" / "here" / "audit.db"
    env = {"BATON_AUDITOR_SQLITE_PATH": str(where), "BATON_AUDITOR_VERIFY_KEY_FILE": str(public)}
    result = CliRunner().invoke(app, ["audit", "verify"], env=env)
    assert result.exit_code == 1
    assert f"no audit store at {where}" in result.output and "nothing was created" in result.output
    assert not (tmp_path / "nothing").exists()
    empty = tmp_path / "empty.db"
    empty.touch()
    result = CliRunner().invoke(app, ["audit", "verify"], env={**env, "BATON_AUDITOR_SQLITE_PATH": str(empty)})
    assert result.exit_code == 1 and "no audit store" in result.output
    assert empty.stat().st_size == 0
    trace = CliRunner().invoke(app, ["audit", "trace", "wf-1"], env=env)
    assert trace.exit_code == 1 and not (tmp_path / "nothing").exists()


def test_verify_without_a_public_key_says_where_to_get_one(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["audit", "verify"], env={"BATON_AUDITOR_SQLITE_PATH": str(tmp_path / "a.db")})
    assert result.exit_code == 2 and "BATON_AUDITOR_VERIFY_KEY_FILE" in result.output


async def test_the_service_anchors_the_tail_soon_to_the_topic_and_the_file(tmp_path: Path) -> None:
    """No shutdown and fewer records than anchor_every: the interval alone gets the tail anchored."""
    key = generate_signing_key()
    events = _events()
    bus = events.bus
    assert isinstance(bus, EmbeddedBus)
    settings = Settings(
        sqlite_path=tmp_path / "audit.db",
        signing_key=SecretStr(encode_signing_key(key)),
        anchor_file=tmp_path / "anchors.jsonl",
        anchor_every=1000,
        anchor_idle_s=0.05,
    )
    running = await start(events, settings)
    try:
        for i in range(6):
            env = Envelope(workflow_id=f"wf-{i}", tenant_id="t", producer="test")
            task = TaskRequested(envelope=env, workflow_type="support_refund", input_json="{}", requested_by="t")
            await bus.publish(topics.TASKS, await events.serde.encode(task), key=env.workflow_id.encode())
        wanted = {(topics.TASKS, p): end - 1 for p, end in (await bus.end_offsets(topics.TASKS)).items() if end}

        async def anchored() -> None:
            while True:
                newest: dict[tuple[str, int], int] = {}
                for a in await read_anchor_topic(bus, []):
                    tp = (a["topic"], a["partition"])
                    newest[tp] = max(newest.get(tp, -1), a["offset"])
                if all(newest.get(tp, -1) >= o for tp, o in wanted.items()):
                    return
                await asyncio.sleep(0.02)

        await asyncio.wait_for(anchored(), 10)
        assert running.handlers.anchors_published >= len(wanted)
        in_file = {(a["topic"], a["partition"], a["offset"]) for a in read_anchor_file(tmp_path / "anchors.jsonl", [])}
        assert {(t, p, o) for (t, p), o in wanted.items()} <= in_file
        report, sources = await verify_audit(
            running.store,
            key.public_key(),
            anchor_bus=bus,
            anchor_file=settings.anchor_file,
            log=EmbeddedAuditedLog(bus),
            audited=audited_topics(),
        )
        assert report.ok, report.problems
        assert report.log_records == 6 and sources == [
            f"topic {topics.AUDIT_ANCHORS}",
            f"file {tmp_path}/anchors.jsonl",
        ]
    finally:
        await running.stop()
