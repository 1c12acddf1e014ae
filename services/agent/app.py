"""Agent service: wiring only. One process serves one agent kind on its own topic."""

from __future__ import annotations

from dataclasses import dataclass

from baton import topics
from baton.bus.base import Subscription
from baton.faults import FaultPlan
from baton.messaging import EventBus, consume
from baton.model import ModelClient, OpenAIChatModel, ScriptedModel
from baton.workflows import load_workflows
from baton.world import World
from services.agent.config import Settings
from services.agent.handlers import AgentHandlers

SERVICE = "agent"


@dataclass
class AgentApp:
    handlers: AgentHandlers
    subscriptions: list[Subscription]
    world: World

    async def stop(self) -> None:
        for sub in self.subscriptions:
            await sub.stop()
        self.world.close()


def build_model(settings: Settings, faults: FaultPlan) -> ModelClient:
    if settings.backend == "openai":
        return OpenAIChatModel(settings.openai_base_url, settings.openai_model, settings.openai_api_key)
    return ScriptedModel(seed=settings.seed, faults=faults)


async def start(
    events: EventBus, settings: Settings, *, faults: FaultPlan | None = None, model: ModelClient | None = None
) -> AgentApp:
    """Subscribe one agent kind on a started bus."""
    workflows = load_workflows()
    owners = [w for w in workflows.values() if any(a.name == settings.kind for a in w.agents)]
    if len(owners) != 1:
        known = sorted(a.name for w in workflows.values() for a in w.agents)
        raise SystemExit(f"BATON_AGENT_KIND={settings.kind!r} must name one declared agent kind; known: {known}")
    workflow = owners[0]
    if faults is None:
        faults = FaultPlan.load(settings.fault_plan) if settings.fault_plan else FaultPlan()
    settings.world_db.parent.mkdir(parents=True, exist_ok=True)
    world = World(settings.world_db)
    handlers = AgentHandlers(
        events,
        workflow=workflow,
        agent=workflow.agent(settings.kind),
        model=model or build_model(settings, faults),
        world=world,
        faults=faults,
        max_context_bytes=settings.max_context_bytes,
    )
    step_topic = topics.agent_steps(settings.kind)
    await events.bus.create_topics(
        [step_topic, topics.STEP_RESULTS, topics.DECISIONS, topics.HANDOFF_PROPOSALS, topics.DEAD_LETTER]
    )
    sub, _ = await consume(events, [step_topic], group_id=topics.agent_group(settings.kind), handler=handlers.on_step)
    return AgentApp(handlers=handlers, subscriptions=[sub], world=world)
