"""Every Baton service in one process on one bus: the embedded default (`make demo`, component tests)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from pydantic import SecretStr

from baton.audit.completeness import EmbeddedAuditedLog, verify_audit
from baton.audit.keys import encode_public_key, encode_signing_key, generate_signing_key
from baton.audit.sqlite_store import SqliteAuditStore
from baton.audit.verify import VerifyReport
from baton.bus.base import Bus
from baton.bus.embedded import EmbeddedBus
from baton.contracts.registry import LocalSchemaRegistry
from baton.contracts.serde import AvroSerde
from baton.identity import TrustDomain, all_roles, role_of_service
from baton.messaging import EventBus
from baton.model import ModelClient
from baton.policy.ownership import HookOwners, ResourceOwners
from baton.policy.screening import OutputScreen
from baton.runtime import RuntimeSettings, instance_id
from baton.telemetry.tracing import tracer_for
from baton.tools import PythonToolProvider, ToolRegistry
from baton.tools.loader import registry_for
from baton.workflows import agent_kinds, default_workflow_dir, load_workflows, reviewers_declared
from baton_demo.faults import FaultInjectingModel, FaultPlan, handoff_faults
from baton_demo.reviewer import ScriptedReviewer
from baton_demo.world import OWNED_ARGUMENTS, World
from baton_demo.world_tools import world_tools

# Next to the embedded audit store: the anchors the auditor also publishes to a file, and its public key.
AUDIT_ANCHOR_FILE = "audit-anchors.jsonl"
AUDIT_VERIFY_KEY_FILE = "audit-verify.pub"


@dataclass
class _Closing:
    """What the mesh's tools act on (the world) or run through (a user's registry), closed after the agents stop."""

    world: World | None = None
    tools: ToolRegistry | None = None

    async def stop(self) -> None:
        if self.tools is not None:
            await self.tools.close()
        if self.world is not None:
            self.world.close()


@dataclass
class _Reviewing:
    """The scripted reviewer team deciding approvals through the approval service's API, until stopped."""

    reviewer: ScriptedReviewer
    task: asyncio.Task[None]

    async def stop(self) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)
        await self.reviewer.client.aclose()


@dataclass
class Mesh:
    """The running services (each still a separate service object with its own producer identity)."""

    bus: Bus
    serde: AvroSerde
    trust: TrustDomain
    apps: dict[str, Any] = field(default_factory=dict)
    # What the guard and task admission know of the tools' records, and where the tenants' accounts are: a
    # second supervisor replica started on the mesh gets the same (supervisor_settings, owners).
    owners: ResourceOwners | None = None
    spend_db: Path | None = None

    def supervisor_settings(self, **changes: Any) -> Any:
        """Settings for another supervisor replica on this mesh (same spend accounts)."""
        from services.supervisor.config import Settings as SupervisorSettings

        return SupervisorSettings(runtime=RuntimeSettings(bus="embedded"), spend_sqlite_path=self.spend_db, **changes)

    def events(self, service: str, *, role: str | None = None) -> EventBus:
        """An event bus signing as role (by default the service's own: `agent-kyc` signs as `agent:kyc`)."""
        return EventBus(
            bus=self.bus,
            serde=self.serde,
            producer=instance_id(service),
            trust=self.trust.trust(role or role_of_service(service)),
            tracer=tracer_for(service),
        )

    async def stop(self) -> None:
        for app in reversed(list(self.apps.values())):
            await app.stop()


def _check_tool_source(world_db: Path | None, workflow_dir: Path | None) -> None:
    if (world_db is None) == (workflow_dir is None):
        raise ValueError("start_mesh needs either world_db (the reference world) or workflow_dir (a user's tools)")
    if workflow_dir is not None and workflow_dir.resolve() != default_workflow_dir().resolve():
        raise ValueError(f"set BATON_WORKFLOW_DIR={workflow_dir}: the services read their declarations from there")


async def start_mesh(
    bus: Bus,
    *,
    world_db: Path | None = None,
    workflow_dir: Path | None = None,
    audit_db: Path | None = None,
    ledger_db: Path | None = None,
    faults: FaultPlan | None = None,
    backoff_base_s: float = 0.05,
    seed: int = 0,
    trust: TrustDomain | None = None,
    approvals: bool | None = None,
    reviewer: bool = True,
    approvals_http_port: int | None = None,
    approval_sla_s: float | None = None,
    model_wrapper: Callable[[str, ModelClient], ModelClient] | None = None,
) -> Mesh:
    """Start the validator, the supervisor, one agent service per declared kind and (given audit_db) the
    auditor on its embedded store, on a started bus; each signs with its own identity (generated for
    this process unless a trust domain is given). Agents share one tool registry and one ledger (default:
    ledger.db beside the world, or in the current directory's .baton/): over the reference world's tool pack at
    world_db, or over the tool pack (tools.yaml) of a user's workflow_dir, which must be BATON_WORKFLOW_DIR (the
    services read their declarations from there). approvals (default: when the declarations hold reviewers.yaml):
    the approval service runs (its page on approvals_http_port when given: 0 = a free port), and unless reviewer is
    false a scripted reviewer team decides every approval through its API. approval_sla_s overrides every declared
    approval SLA. model_wrapper(kind, model) replaces an agent kind's model (a test's misbehaving one)."""
    from services.agent import app as agent_app
    from services.agent.config import Settings as AgentSettings
    from services.approvals import app as approvals_app
    from services.approvals.config import Settings as ApprovalsSettings
    from services.auditor import app as auditor_app
    from services.auditor.config import Settings as AuditorSettings
    from services.handoff_validator import app as validator_app
    from services.handoff_validator.config import Settings as ValidatorSettings
    from services.policy_guard import app as guard_app
    from services.policy_guard.config import Settings as GuardSettings
    from services.supervisor import app as supervisor_app
    from services.supervisor.config import Settings as SupervisorSettings

    _check_tool_source(world_db, workflow_dir)
    runtime = RuntimeSettings(bus="embedded")
    if trust is None:
        trust = TrustDomain.generate(all_roles(agent_kinds(load_workflows())))
    mesh = Mesh(bus=bus, serde=AvroSerde(LocalSchemaRegistry()), trust=trust)
    if audit_db is not None:
        # An ephemeral key: the demo's audit verifies with the public key it writes next to the store.
        key = encode_signing_key(generate_signing_key())
        mesh.apps["auditor"] = await auditor_app.start(
            mesh.events("auditor"),
            AuditorSettings(
                runtime=runtime,
                store="embedded",
                sqlite_path=audit_db,
                signing_key=SecretStr(key),
                anchor_file=audit_db.with_name(AUDIT_ANCHOR_FILE),
            ),
        )
    ledger = ledger_db or (world_db.with_name("ledger.db") if world_db is not None else Path(".baton/ledger.db"))
    mesh.apps["handoff-validator"] = await validator_app.start(
        mesh.events("handoff-validator"), ValidatorSettings(runtime=runtime, ledger_db=ledger)
    )
    if world_db is not None:
        world = World(world_db)
        tools = ToolRegistry([PythonToolProvider(world_tools(world), name="world")])
        mesh.apps["world"] = _Closing(world=world, tools=tools)
    else:
        assert workflow_dir is not None
        tools = registry_for(workflow_dir)
        mesh.apps["tools"] = _Closing(tools=tools)
    await tools.start()
    world_of = mesh.apps.get("world")
    spend_db = ledger.with_name("spend.db")  # the tenants' daily accounts, beside the ledger
    # The world the mesh's tools act on says whose record an id is (not the one at BATON_WORLD_DB).
    owners = mesh.owners = (
        HookOwners(world_of.world.tenant_of, arguments=sorted(OWNED_ARGUMENTS))
        if world_of is not None and world_of.world is not None
        else None
    )
    mesh.spend_db = spend_db
    mesh.apps["policy-guard"] = await guard_app.start(
        mesh.events("policy-guard"),
        GuardSettings(runtime=runtime, spend_sqlite_path=spend_db, approval_sla_s=approval_sla_s),
        owners=owners,
    )
    plan = faults or FaultPlan()
    screen = OutputScreen()  # one for every agent of the mesh: Presidio loads once
    for kind, spec in agent_kinds(load_workflows()).items():
        settings = AgentSettings(runtime=runtime, kind=kind, ledger_db=ledger, seed=seed)
        mesh.apps[f"agent:{kind}"] = await agent_app.start(
            mesh.events(f"agent-{kind}"),
            settings,
            model=(model_wrapper or _same)(kind, FaultInjectingModel(agent_app.build_model(settings, spec), plan)),
            proposal_filter=handoff_faults(plan, spec),
            tools=tools,
            screen=screen,
        )
    if approvals is None:
        approvals = reviewers_declared()
    if approvals:
        approvals_db = ledger.with_name("approvals.db")
        for stale in approvals_db.parent.glob(approvals_db.name + "*"):
            stale.unlink()  # approvals of an earlier run are not this run's
        desk = await approvals_app.start(
            mesh.events("approvals"),
            ApprovalsSettings(
                runtime=runtime,
                sqlite_path=approvals_db,
                http_port=approvals_http_port,
                sweep_s=0.05,
                allow_demo_reviewers=True,  # the mesh is the demo and the tests: its reviewers are the demo's
            ),
        )
        mesh.apps["approvals"] = desk
        if reviewer:
            team = ScriptedReviewer(
                httpx.AsyncClient(transport=httpx.ASGITransport(app=desk.web), base_url="http://approvals")
            )
            mesh.apps["reviewer"] = _Reviewing(team, asyncio.create_task(team.run(), name="scripted-reviewer"))
    mesh.apps["supervisor"] = await supervisor_app.start(
        mesh.events("supervisor"),
        SupervisorSettings(
            runtime=runtime, backoff_base_s=backoff_base_s, spend_sqlite_path=spend_db, await_approvals=approvals
        ),
        owners=owners,
    )
    return mesh


def _same(_kind: str, model: ModelClient) -> ModelClient:
    return model


async def drain_auditor(mesh: Mesh, bus: EmbeddedBus, directory: Path, *, deadline: float) -> Ed25519PublicKey:
    """Write the embedded auditor's public key beside its store and wait (until deadline, a monotonic time) for
    it to have recorded everything on the audited topics; its public key."""
    from services.auditor.app import audited_topics

    auditor = mesh.apps["auditor"].handlers
    public_key: Ed25519PublicKey = auditor.public_key
    (directory / AUDIT_VERIFY_KEY_FILE).write_text(encode_public_key(public_key) + "\n")
    audited = audited_topics()
    while auditor.appended + auditor.skipped < bus.size(audited) and time.monotonic() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.02)  # the auditor drains what the outcomes left behind
    return public_key


async def verify_embedded_audit(bus: EmbeddedBus, audit_db: Path, public_key: Ed25519PublicKey) -> VerifyReport:
    """`baton audit verify` of the embedded store against the bus it audited and the anchor file beside it."""
    from services.auditor.app import audited_topics

    store = SqliteAuditStore(audit_db)
    try:
        report, _sources = await verify_audit(
            store,
            public_key,
            anchor_bus=bus,
            anchor_file=audit_db.with_name(AUDIT_ANCHOR_FILE),
            log=EmbeddedAuditedLog(bus),
            audited=audited_topics(),
        )
    finally:
        await store.close()
    return report
