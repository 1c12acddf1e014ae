"""Agent service: wiring only. One process serves one agent kind on its own topic."""

from __future__ import annotations

from dataclasses import dataclass

from baton import topics
from baton.bus.base import Subscription
from baton.control import ControlListener, ControlState, ToolCalls, after_tool_calls, listen
from baton.guard_client import GuardClient
from baton.ledger import Ledger
from baton.messaging import EventBus, consume
from baton.model import ModelClient, OpenAIChatModel, ScriptedModel
from baton.policy.screening import OutputScreen
from baton.tools.base import ToolError
from baton.tools.check import agent_tool_problems
from baton.tools.loader import registry_for
from baton.tools.registry import ToolRegistry
from baton.workflows import AgentSpec, default_workflow_dir, load_workflows
from services.agent.config import Settings
from services.agent.handlers import AgentHandlers, ProposalFilter

SERVICE = "agent"


@dataclass
class AgentApp:
    handlers: AgentHandlers
    subscriptions: list[Subscription]
    ledger: Ledger
    tools: ToolRegistry
    owns_tools: bool
    guard: GuardClient

    async def stop(self) -> None:
        for sub in self.subscriptions:
            await sub.stop()
        await self.guard.stop()
        if self.owns_tools:
            await self.tools.close()
        self.ledger.close()


def build_model(settings: Settings, agent: AgentSpec) -> ModelClient:
    """The agent's declared model (the key from configuration), else the service's configured one."""
    declared = agent.model
    if declared is not None and declared.backend == "openai":
        assert declared.base_url is not None and declared.name is not None  # the declaration requires both
        if not settings.openai_api_key and not declared.on_this_host:
            raise SystemExit(
                f"agent {agent.name} declares model {declared.name} at {declared.base_url}, but no key is configured: "
                "set BATON_AGENT_OPENAI_API_KEY (keys come from configuration, never from the declaration)"
            )
        return OpenAIChatModel(declared.base_url, declared.name, settings.openai_api_key)
    if declared is None and settings.backend == "openai":
        return OpenAIChatModel(settings.openai_base_url, settings.openai_model, settings.openai_api_key)
    return ScriptedModel(seed=settings.seed)


def build_tools(settings: Settings, agent: AgentSpec) -> ToolRegistry:
    """The registry over the tool pack beside the declarations and the modules in BATON_AGENT_TOOLS (not started),
    with the HTTP tools this agent calls (it needs their secrets, not every tool's)."""
    return registry_for(
        default_workflow_dir(),
        pack=settings.tool_pack,
        modules=settings.tool_modules(),
        only={t.name for t in agent.tools},
    )


async def start(
    events: EventBus,
    settings: Settings,
    *,
    model: ModelClient | None = None,
    tools: ToolRegistry | None = None,
    proposal_filter: ProposalFilter | None = None,
    screen: OutputScreen | None = None,
) -> AgentApp:
    """Subscribe one agent kind on a started bus; `tools`, when given, is a started registry shared with others."""
    workflows = load_workflows()
    owners = [w for w in workflows.values() if any(a.name == settings.kind for a in w.agents)]
    if len(owners) != 1:
        known = sorted(a.name for w in workflows.values() for a in w.agents)
        raise SystemExit(f"BATON_AGENT_KIND={settings.kind!r} must name one declared agent kind; known: {known}")
    workflow = owners[0]
    agent = workflow.agent(settings.kind)
    owns_tools = tools is None
    registry = tools if tools is not None else build_tools(settings, agent)
    if owns_tools:
        try:
            await registry.start()  # closes what it started when it fails
        except ToolError as exc:
            raise SystemExit(f"agent {agent.name} cannot start: its tools are not available: {exc}") from exc
    ledger: Ledger | None = None
    guard = GuardClient(events, timeout_s=settings.guard_timeout_s)
    control: ControlListener | None = None
    try:
        problems = agent_tool_problems(agent, registry)
        if problems:
            raise SystemExit(
                f"agent {agent.name} of workflow {workflow.name} cannot start; its declared tools do not match the "
                "registry:\n  " + "\n  ".join(problems)
            )
        ledger = Ledger(settings.ledger_db)
        # Every tool call is the policy guard's to authorize: its signed grant is checked where the tool runs.
        await guard.start()
        tool_calls = ToolCalls(ControlState())
        handlers = AgentHandlers(
            events,
            workflow=workflow,
            agent=agent,
            model=model or build_model(settings, agent),
            tools=registry,
            ledger=ledger,
            max_context_bytes=settings.max_context_bytes,
            proposal_filter=proposal_filter,
            guard=guard,
            screen=screen or OutputScreen(),
            kill_switch=tool_calls,
        )
        # Before the first step: a kill already in force refuses it.
        control = await listen(events, tool_calls.state, on_command=after_tool_calls(tool_calls))
        step_topic = topics.agent_steps(settings.kind)
        await events.bus.create_topics(
            [step_topic, topics.STEP_RESULTS, topics.DECISIONS, topics.HANDOFF_PROPOSALS, topics.DEAD_LETTER]
        )
        sub, _ = await consume(
            events, [step_topic], group_id=topics.agent_group(settings.kind), handler=handlers.on_step
        )
    except BaseException:
        await guard.stop()
        if control is not None:
            await control.stop()
        if ledger is not None:
            ledger.close()
        if owns_tools:
            await registry.close()
        raise
    assert control.subscription is not None
    subscriptions = [sub, control.subscription]
    return AgentApp(
        handlers=handlers,
        subscriptions=subscriptions,
        ledger=ledger,
        tools=registry,
        owns_tools=owns_tools,
        guard=guard,
    )
