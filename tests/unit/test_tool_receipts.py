"""ToolReceipts: the world-backed and the in-memory adapter answer the same contract; World.call records."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from baton.context import context_sha256
from baton.handoff import ToolReceipt
from baton.receipts import MemoryToolReceipts, ToolReceipts, WorldToolReceipts
from baton_demo.world import World


@pytest.fixture
def world(tmp_path: Path) -> World:
    w = World(tmp_path / "world.db")
    w.seed(customers=5, seed=1)
    return w


@pytest.fixture(params=["memory", "world"])
async def receipts(request: pytest.FixtureRequest, world: World) -> AsyncIterator[tuple[ToolReceipts, dict[str, str]]]:
    """An adapter that has seen lookup_customer run under key k1 and issue_refund under k2."""
    customer = world.call(
        "lookup_customer",
        {"customer_id": "cust-00001"},
        idempotency_key="k1",
        tenant_id=world.tenant_of("customer_id", "cust-00001") or "",
    )
    refund = world.call(
        "issue_refund",
        {"ticket_id": "tkt-00001", "amount": 1.0},
        idempotency_key="k2",
        tenant_id=world.tenant_of("ticket_id", "tkt-00001") or "",
    )
    world.call(
        "issue_refund",
        {"ticket_id": "tkt-00001", "amount": 1.0},
        idempotency_key="k2",
        tenant_id=world.tenant_of("ticket_id", "tkt-00001") or "",
    )  # replayed
    hashes = {"k1": context_sha256(customer), "k2": context_sha256(refund)}
    if request.param == "memory":
        yield (
            MemoryToolReceipts(
                [ToolReceipt("k1", "lookup_customer", hashes["k1"]), ToolReceipt("k2", "issue_refund", hashes["k2"])]
            ),
            hashes,
        )
        return
    adapter = WorldToolReceipts(world.path)
    yield adapter, hashes
    adapter.close()


async def test_a_recorded_call_is_found_with_its_tool_and_result_hash(
    receipts: tuple[ToolReceipts, dict[str, str]],
) -> None:
    source, hashes = receipts
    found = await source.find({"k1", "k2", "never-ran"})
    assert found == {
        "k1": [ToolReceipt("k1", "lookup_customer", hashes["k1"])],
        "k2": [ToolReceipt("k2", "issue_refund", hashes["k2"])],  # a replay returns the same result: one receipt
    }
    assert await source.find(set()) == {}


async def test_recording_receipts_does_not_count_as_a_repeated_side_effect(world: World) -> None:
    world.call(
        "lookup_customer",
        {"customer_id": "cust-00002"},
        idempotency_key="k3",
        tenant_id=world.tenant_of("customer_id", "cust-00002") or "",
    )
    world.call(
        "lookup_customer",
        {"customer_id": "cust-00002"},
        idempotency_key="k3",
        tenant_id=world.tenant_of("customer_id", "cust-00002") or "",
    )
    report = world.verify()
    assert report.ok and report.counts["tool_calls_repeated"] == 0


async def test_a_world_without_receipts_yet_answers_none(tmp_path: Path) -> None:
    sqlite3.connect(tmp_path / "empty.db").close()
    adapter = WorldToolReceipts(tmp_path / "empty.db")
    assert await adapter.find({"k1"}) == {}
    adapter.close()
