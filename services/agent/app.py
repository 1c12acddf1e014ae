"""Agent service: wiring only. One process serves one agent kind on its own topic."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from baton import topics
from baton.bus.base import Subscription
from baton.ledger import AgentStore
from baton.messaging import EventBus, consume
from baton.model import ModelClient, OpenAIChatModel, ScriptedModel
from baton.workflows import load_workflows
from services.agent.config import Settings
from services.agent.handlers import AgentHandlers, ProposalFilter

SERVICE = "agent"


@dataclass
class AgentApp:
    handlers: AgentHandlers
    subscriptions: list[Subscription]
    world: AgentStore

    async def stop(self) -> None:
        for sub in self.subscriptions:
            await sub.stop()
        self.world.close()


def build_model(settings: Settings) -> ModelClient:
    """The model backend the settings name."""
    if settings.backend == "openai":
        return OpenAIChatModel(settings.openai_base_url, settings.openai_model, settings.openai_api_key)
    return ScriptedModel(seed=settings.seed)


async def start(
    events: EventBus,
    settings: Settings,
    *,
    open_world: Callable[[Path], AgentStore],
    model: ModelClient | None = None,
    proposal_filter: ProposalFilter | None = None,
) -> AgentApp:
    """Subscribe one agent kind on a started bus; its step ledger and tools are open_world(settings.world_db)."""
    workflows = load_workflows()
    owners = [w for w in workflows.values() if any(a.name == settings.kind for a in w.agents)]
    if len(owners) != 1:
        known = sorted(a.name for w in workflows.values() for a in w.agents)
        raise SystemExit(f"BATON_AGENT_KIND={settings.kind!r} must name one declared agent kind; known: {known}")
    workflow = owners[0]
    settings.world_db.parent.mkdir(parents=True, exist_ok=True)
    world = open_world(settings.world_db)
    handlers = AgentHandlers(
        events,
        workflow=workflow,
        agent=workflow.agent(settings.kind),
        model=model or build_model(settings),
        world=world,
        max_context_bytes=settings.max_context_bytes,
        proposal_filter=proposal_filter,
    )
    step_topic = topics.agent_steps(settings.kind)
    await events.bus.create_topics(
        [step_topic, topics.STEP_RESULTS, topics.DECISIONS, topics.HANDOFF_PROPOSALS, topics.DEAD_LETTER]
    )
    sub, _ = await consume(events, [step_topic], group_id=topics.agent_group(settings.kind), handler=handlers.on_step)
    return AgentApp(handlers=handlers, subscriptions=[sub], world=world)
