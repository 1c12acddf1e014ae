"""Handoff validator service: wiring only."""

from __future__ import annotations

from dataclasses import dataclass

from baton import topics
from baton.bus.base import BusRecord, Subscription
from baton.control import ControlState, listen
from baton.handoff import CheckpointView
from baton.messaging import EventBus, EventConsumer, consume
from baton.receipts import LedgerToolReceipts
from baton.runtime import ServiceConfigError
from baton.workflows import agent_kinds, load_workflows
from services.handoff_validator.config import Settings
from services.handoff_validator.handlers import HandoffValidatorHandlers

SERVICE = "handoff-validator"


@dataclass
class HandoffValidatorApp:
    """A running validator: its handlers and subscriptions."""

    handlers: HandoffValidatorHandlers
    subscriptions: list[Subscription]

    async def stop(self) -> None:
        for sub in self.subscriptions:
            await sub.stop()
        if isinstance(self.handlers.receipts, LedgerToolReceipts):
            self.handlers.receipts.close()


def declared_inputs() -> dict[str, list[str]]:
    """Each agent kind's declared inputs, from the workflow declarations."""
    return {name: list(spec.inputs) for name, spec in agent_kinds(load_workflows()).items()}


async def start(events: EventBus, settings: Settings) -> HandoffValidatorApp:
    """Subscribe the validator on a started bus."""
    if settings.runtime.bus == "kafka" and settings.ledger_db is None and not settings.without_tool_receipts:
        raise ServiceConfigError(
            "the handoff validator has no record of tool results to check tool values against: set "
            "BATON_HANDOFF_VALIDATOR_LEDGER_DB to the agents' ledger (BATON_AGENT_LEDGER_DB), where tool receipts "
            "are recorded, or set "
            "BATON_HANDOFF_VALIDATOR_WITHOUT_TOOL_RECEIPTS=true to run knowingly without that check"
        )
    await events.bus.create_topics([topics.HANDOFF_PROPOSALS, topics.HANDOFF_VERDICTS, topics.DEAD_LETTER])
    await events.bus.create_topics([topics.CHECKPOINTS], compacted=True)
    handlers = HandoffValidatorHandlers(
        events,
        view=CheckpointView(capacity=settings.checkpoint_capacity),
        required_inputs={**declared_inputs(), **settings.required_inputs},
        workflows=load_workflows(),
        receipts=LedgerToolReceipts(settings.ledger_db) if settings.ledger_db is not None else None,
        max_context_bytes=settings.max_context_bytes,
        max_context_depth=settings.max_context_depth,
        checkpoint_wait_s=settings.checkpoint_wait_s,
        judged_capacity=settings.judged_capacity,
        control=ControlState(),
    )
    feed_consumer = EventConsumer(
        events, group_id=f"{topics.GROUP_HANDOFF_VALIDATOR}.checkpoints", handler=handlers.on_checkpoint, traced=False
    )

    async def feed(record: BusRecord) -> None:
        await feed_consumer(record)
        handlers.view.advance(record.partition, record.offset + 1)

    # Every replica reads every running workflow's checkpoint (no group), so any replica can judge any proposal.
    # In offset order (not by key): the feed's position says every checkpoint before it was applied.
    control = await listen(events, handlers.control)
    assert control.subscription is not None
    checkpoints = await events.bus.subscribe([topics.CHECKPOINTS], group_id=None, handler=feed, by_key=False)
    proposals, _ = await consume(
        events, [topics.HANDOFF_PROPOSALS], group_id=topics.GROUP_HANDOFF_VALIDATOR, handler=handlers.on_proposal
    )
    return HandoffValidatorApp(handlers=handlers, subscriptions=[proposals, checkpoints, control.subscription])
