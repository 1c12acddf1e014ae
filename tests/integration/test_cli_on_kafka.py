"""`baton publish` puts a TaskRequested on the real broker that any Avro consumer can read."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import pytest

from baton import topics
from baton.bus.base import BusRecord
from baton.bus.kafka import KafkaBus
from baton.contracts.models import TaskRequested
from baton.contracts.serde import AvroSerde
from baton.identity import CLIENT, SIGNATURE_HEADER, SIGNER_HEADER, signed_message
from tests.harness.identities import DOMAIN, write_keys

pytestmark = pytest.mark.integration


async def _baton(*args: str, env: dict[str, str] | None = None) -> tuple[int | None, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "baton",
        *args,
        env={**os.environ, **(env or {})},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode, out.decode(), err.decode()


async def test_baton_publish_writes_an_avro_task_signed_as_the_client(
    kafka_bootstrap: str, serde: AvroSerde, unique: str, tmp_path: Path
) -> None:
    code, out, err = await _baton(
        "publish",
        "support_refund",
        '{"ticket_id": "tkt-00001"}',
        "--tenant",
        "acme",
        "--workflow-id",
        f"cli-{unique}",
        env={
            "BATON_BUS": "kafka",
            "BATON_KAFKA_BOOTSTRAP": kafka_bootstrap,
            "BATON_KEYS_DIR": str(write_keys(tmp_path / "keys")),
        },
    )
    assert code == 0, err
    assert out.strip() == f"cli-{unique}"
    bus = KafkaBus(kafka_bootstrap)
    found: list[TaskRequested] = []

    async def keep(record: BusRecord) -> None:
        if record.key != f"cli-{unique}".encode():
            return  # other tests share the topic, some with garbage on purpose
        event = await serde.decode(record.value)
        if isinstance(event, TaskRequested) and event.envelope.workflow_id == f"cli-{unique}":
            message = signed_message(record.topic, record.key, record.value)
            assert (
                DOMAIN.keyring.verify(record.header(SIGNER_HEADER), record.header(SIGNATURE_HEADER), message) == CLIENT
            )
            found.append(event)

    await bus.replay([topics.TASKS], keep)
    [task] = found
    assert task.workflow_type == "support_refund" and task.envelope.tenant_id == "acme"
    assert task.envelope.schema_version == 2


async def test_baton_publish_without_a_signing_key_says_how_to_make_one(kafka_bootstrap: str) -> None:
    env = {"BATON_BUS": "kafka", "BATON_KAFKA_BOOTSTRAP": kafka_bootstrap, "BATON_KEYS_DIR": "", "BATON_KEYRING": ""}
    code, _, err = await _baton("publish", "support_refund", "{}", env=env)
    assert code == 2, err
    assert "no signing key for role 'client'" in err and "baton keys generate" in err


async def test_baton_publish_refuses_bad_json_with_a_clear_error() -> None:
    code, _, err = await _baton("publish", "support_refund", "{not json")
    assert code == 2 and "INPUT_JSON is not JSON" in err
