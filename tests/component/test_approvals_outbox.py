"""The approval service's outbox: every stored decision is published once acknowledged, each on its own (one that
cannot be published holds up no other), with the reviewer's comment bounded; a malformed preview in a request costs
the reviewer the preview, never the approval."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from baton import identity, topics
from baton.approvals.desk import ApprovalDesk
from baton.approvals.store_sqlite import SqliteApprovalStore
from baton.bus.base import BusRecord
from baton.bus.embedded import EmbeddedBus
from baton.contracts.models import ApprovalDecided, Event
from baton.contracts.registry import LocalSchemaRegistry
from baton.contracts.serde import AvroSerde
from baton.messaging import EventBus
from services.approvals.api import ChangeSignal
from services.approvals.handlers import MAX_COMMENT_CHARS, ApprovalsHandlers
from tests.harness.identities import trust
from tests.unit.test_approval_desk import ALICE, BOB, request


class FailingFor(EventBus):
    """Publishes like the bus, except the decision on one approval, which is never acknowledged."""

    poisoned = "ap-0"

    async def publish(self, topic: str, event: Event) -> bytes:
        if isinstance(event, ApprovalDecided) and event.approval_id == self.poisoned:
            raise ValueError("MessageTooLargeError: the broker refuses this record")
        return await super().publish(topic, event)


@pytest.fixture
async def running(tmp_path: Path) -> AsyncIterator[tuple[ApprovalsHandlers, ApprovalDesk, EmbeddedBus]]:
    bus = EmbeddedBus(partitions=2)
    await bus.start()
    store = SqliteApprovalStore(tmp_path / "approvals.db")
    await store.setup()
    desk = ApprovalDesk(store)
    events = FailingFor(
        bus=bus, serde=AvroSerde(LocalSchemaRegistry()), producer="approvals-test", trust=trust(identity.APPROVALS)
    )
    yield ApprovalsHandlers(events, desk, token_ttl_s=60, changes=ChangeSignal()), desk, bus
    await store.close()
    await bus.stop()


async def test_one_decision_that_cannot_be_published_holds_up_no_other(
    running: tuple[ApprovalsHandlers, ApprovalDesk, EmbeddedBus],
) -> None:
    handlers, desk, bus = running
    for i in range(3):
        await desk.receive(request(f"ap-{i}", required=1))
    await desk.decide("ap-0", reviewer=ALICE, kind="reject", reason="x" * 5_000_000)
    await desk.decide("ap-1", reviewer=BOB, kind="approve", reason="ok")
    await desk.decide("ap-2", reviewer=ALICE, kind="reject", reason="y" * 5_000)
    assert await handlers.publish_decided() == 2
    assert [a.approval_id for a in await desk.unpublished()] == ["ap-0"]  # kept, tried again next sweep
    published: list[ApprovalDecided] = []

    async def keep(record: BusRecord) -> None:
        event = await handlers._events.serde.decode(record.value)
        assert isinstance(event, ApprovalDecided)
        published.append(event)

    await bus.replay([topics.APPROVAL_DECISIONS], keep)
    by_id = {e.approval_id: e for e in published}
    assert sorted(by_id) == ["ap-1", "ap-2"]
    assert by_id["ap-1"].approval_token and by_id["ap-1"].decided_by == ["bob"]
    assert len(by_id["ap-2"].comment or "") == MAX_COMMENT_CHARS and not by_id["ap-2"].approval_token
    FailingFor.poisoned = "none"
    try:
        assert await handlers.publish_decided() == 1 and await desk.unpublished() == []
    finally:
        FailingFor.poisoned = "ap-0"
