"""Both approval stores keep the same promises: a request kept once, each change atomic across replicas, the
lists (pending by queue, due, the outbox, decided since) right, everything still there after a restart."""

from __future__ import annotations

import asyncio
from dataclasses import replace

from baton.approvals.model import Approval, ApprovalState, OpenStore, Vote
from tests.unit.test_approval_desk import T0, request


def _pending(approval_id: str, *, queue: str = "support-leads", at: float = 0.0) -> Approval:
    ask = request(approval_id, queue=queue, requested_at=T0 + at, expires_at=T0 + 100 + at)
    return Approval(request=ask, state=ApprovalState.PENDING, queue=queue, expires_at=ask.expires_at)


async def test_a_request_is_kept_once_and_read_back_whole(open_store: OpenStore) -> None:
    store = await open_store()
    first = _pending("ap-1")
    assert await store.add(first) and not await store.add(replace(first, queue="elsewhere"))
    assert await store.get("ap-1") == first and await store.get("ap-none") is None


async def test_changes_from_two_replicas_at_once_are_each_applied_exactly_once(open_store: OpenStore) -> None:
    one, two = await open_store(), await open_store()
    await one.add(_pending("ap-1"))

    def vote(n: int) -> object:
        def change(current: Approval) -> tuple[Approval, None]:
            return replace(current, votes=(*current.votes, Vote(f"r{n}", "approve", "", T0))), None

        return change

    await asyncio.gather(*(store.update("ap-1", vote(i)) for i, store in enumerate([one, two] * 20)))  # type: ignore[arg-type]
    final = await one.get("ap-1")
    assert final is not None and len(final.votes) == 40 and len({v.reviewer for v in final.votes}) == 40
    assert final.version == 41


async def test_the_lists_pending_due_outbox_and_decided(open_store: OpenStore) -> None:
    store = await open_store()
    for i, queue in enumerate(["support-leads", "compliance", "support-leads"]):
        await store.add(_pending(f"ap-{i}", queue=queue, at=i))
    assert [a.approval_id for a in await store.pending()] == ["ap-0", "ap-1", "ap-2"]
    assert [a.approval_id for a in await store.pending(queue="support-leads")] == ["ap-0", "ap-2"]
    assert [a.approval_id for a in await store.due(T0 + 101.5)] == ["ap-0", "ap-1"]

    def decide(current: Approval) -> tuple[Approval, None]:
        return replace(current, state=ApprovalState.APPROVED, decided_at=T0 + 50, decided_by=("alice",)), None

    await store.update("ap-1", decide)
    assert [a.approval_id for a in await store.pending()] == ["ap-0", "ap-2"]
    assert [a.approval_id for a in await store.unpublished()] == ["ap-1"]
    assert [a.approval_id for a in await store.decided_since(T0)] == ["ap-1"]
    await store.update("ap-1", lambda current: (replace(current, published=True), None))
    assert await store.unpublished() == [] and await store.decided_since(T0 + 51) == []


async def test_everything_is_still_there_after_a_restart(open_store: OpenStore) -> None:
    store = await open_store()
    await store.add(_pending("ap-1"))
    await store.update("ap-1", lambda current: (replace(current, votes=(Vote("alice", "approve", "ok", T0),)), None))
    await store.close()
    again = await open_store()
    kept = await again.get("ap-1")
    assert kept is not None and kept.votes == (Vote("alice", "approve", "ok", T0),) and kept.version == 2
    assert [a.approval_id for a in await again.pending()] == ["ap-1"]
