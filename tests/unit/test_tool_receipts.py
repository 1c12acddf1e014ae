"""ToolReceipts: the ledger-backed and the in-memory adapter answer the same contract; the ledger records each
result where the tool ran, whatever the tool."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from baton.context import context_sha256
from baton.handoff import ToolReceipt
from baton.ledger import Ledger
from baton.receipts import LedgerToolReceipts, MemoryToolReceipts, ToolReceipts
from baton.workflows import load_workflows
from baton_demo.world import World
from tests.harness.world_tools import step_tools

REFUND = load_workflows()["support_refund"]


@pytest.fixture
def world(tmp_path: Path) -> World:
    w = World(tmp_path / "world.db")
    w.seed(customers=5, seed=1)
    return w


@pytest.fixture(params=["memory", "ledger"])
async def receipts(
    request: pytest.FixtureRequest, world: World, tmp_path: Path
) -> AsyncIterator[tuple[ToolReceipts, dict[str, str]]]:
    """An adapter that has seen lookup_ticket run under key k1 and issue_refund under k2 (twice: replayed)."""
    ledger = Ledger(tmp_path / "ledger.db")
    tenant = world.tenant_of("ticket_id", "tkt-00001") or ""
    lookup = await step_tools(world, ledger, workflow_id="wf", agent="ticket_lookup", tenant=tenant, version=1)
    issue = await step_tools(world, ledger, workflow_id="wf", agent="refund_issuer", tenant=tenant, version=3)
    read = await lookup.run(REFUND.agent("ticket_lookup").tools[0], {"ticket_id": "tkt-00001"}, 0)
    spec = REFUND.agent("refund_issuer").tools[0]
    refund = await issue.run(spec, {"ticket_id": "tkt-00001", "amount": 1.0}, 0)
    again = await issue.run(spec, {"ticket_id": "tkt-00001", "amount": 1.0}, 0)
    assert again.replayed and again.result == refund.result
    hashes = {read.key: context_sha256(read.result), refund.key: context_sha256(refund.result)}
    if request.param == "memory":
        yield (
            MemoryToolReceipts(
                [
                    ToolReceipt(read.key, "lookup_ticket", hashes[read.key]),
                    ToolReceipt(refund.key, "issue_refund", hashes[refund.key]),
                ]
            ),
            hashes,
        )
    else:
        adapter = LedgerToolReceipts(ledger.path)
        yield adapter, hashes
        adapter.close()
    ledger.close()


async def test_a_recorded_call_is_found_with_its_tool_and_result_hash(
    receipts: tuple[ToolReceipts, dict[str, str]],
) -> None:
    source, hashes = receipts
    k1, k2 = sorted(hashes, key=lambda k: "issue_refund" in k)
    found = await source.find({k1, k2, "never-ran"})
    assert found == {
        k1: [ToolReceipt(k1, "lookup_ticket", hashes[k1])],
        k2: [ToolReceipt(k2, "issue_refund", hashes[k2])],  # a replay returns the same result: one receipt
    }
    assert await source.find(set()) == {}


async def test_a_ledger_without_receipts_yet_answers_none(tmp_path: Path) -> None:
    sqlite3.connect(tmp_path / "empty.db").close()
    adapter = LedgerToolReceipts(tmp_path / "empty.db")
    assert await adapter.find({"k1"}) == {}
    adapter.close()
