"""Approvals on a real Kafka broker, every service its own process: 100 refunds wait for humans while 200 others
complete; the approval service and the supervisor are killed (SIGKILL) with the 100 pending and started again; no
approval is lost; reviewers decide through the HTTP API (two distinct reviewers per refund); every workflow
resumes exactly once after its decision, each approved refund is paid once and no rejected one at all."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest

from baton import identity, topics
from baton.bus.base import BusRecord
from baton.bus.kafka import KafkaBus
from baton.client import BatonClient, Outcome
from baton.contracts.models import StepRequested, WorkflowCompleted, WorkflowHalted
from baton.contracts.registry import LocalSchemaRegistry
from baton.contracts.serde import AvroSerde
from baton.messaging import EventBus
from baton.testbed.processes import ServiceProcesses
from baton.workflows import load_workflows
from baton_demo.reviewer import DEMO_TOKENS, REFUND_CEILING, ScriptedReviewer
from baton_demo.world import World
from tests.harness.identities import trust, write_keys
from tests.harness.kafka_broker import KafkaBroker, free_port

pytestmark = pytest.mark.e2e

AGENTS = [a.name for a in load_workflows()["support_refund"].agents]
PENDING = 100
OTHERS = 200


async def _pending(api: httpx.AsyncClient) -> list[dict[str, object]]:
    answer = await api.get("/api/approvals", headers={"Authorization": f"Bearer {DEMO_TOKENS['alice']}"})
    answer.raise_for_status()
    listed: list[dict[str, object]] = answer.json()
    return listed


async def _until(what: str, check: object, procs: ServiceProcesses, *, timeout_s: float = 240.0) -> None:
    """Wait until check() (an async callable) holds; fail naming what did not happen and which process died."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            if await check():  # type: ignore[operator]
                return
        await asyncio.sleep(0.2)
    pytest.fail(f"{what} did not happen within {timeout_s:.0f}s; dead processes: {procs.dead()}")


async def test_pending_approvals_block_nothing_survive_kills_and_resume_each_workflow_once(
    own_broker: KafkaBroker, tmp_path: Path
) -> None:
    world = World(tmp_path / "world.db")
    world.seed(customers=900, seed=11)
    amounts = {t: world.preview_refund(t)["amount"] for t in world.ticket_ids()}
    big = [t for t, a in amounts.items() if a > 500][:PENDING]
    small = [t for t, a in amounts.items() if 0 < a <= 500][:OTHERS]
    assert (len(big), len(small)) == (PENDING, OTHERS)
    port = free_port()
    env = {
        "BATON_BUS": "kafka",
        "BATON_KAFKA_BOOTSTRAP": own_broker.bootstrap,
        "BATON_KEYS_DIR": str(write_keys(tmp_path / "keys")),
        "BATON_LOG_LEVEL": "WARNING",
        "BATON_WORLD_DB": str(tmp_path / "world.db"),
        "BATON_AGENT_LEDGER_DB": str(tmp_path / "ledger.db"),
        "BATON_HANDOFF_VALIDATOR_LEDGER_DB": str(tmp_path / "ledger.db"),
        "BATON_POLICY_GUARD_SPEND_SQLITE_PATH": str(tmp_path / "spend.db"),
        "BATON_SUPERVISOR_SPEND_SQLITE_PATH": str(tmp_path / "spend.db"),
        "BATON_SUPERVISOR_AWAIT_APPROVALS": "true",
        "BATON_APPROVALS_SQLITE_PATH": str(tmp_path / "approvals.db"),
        "BATON_APPROVALS_HTTP_PORT": str(port),
        "BATON_APPROVALS_ALLOW_DEMO_REVIEWERS": "true",
    }
    (tmp_path / "logs").mkdir()
    procs = ServiceProcesses(env=env, logdir=tmp_path / "logs")
    bus = KafkaBus(own_broker.bootstrap, client_id="approvals-e2e")
    await bus.start()
    await bus.create_topics([*topics.CORE_TOPICS, *(topics.agent_steps(a) for a in AGENTS)])
    serde = AvroSerde(LocalSchemaRegistry())
    api = httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10)
    client = BatonClient(EventBus(bus=bus, serde=serde, producer="e2e-client", trust=trust(identity.CLIENT)))
    outcomes: dict[str, Outcome] = {}
    seen: Counter[str] = Counter()

    async def collect() -> None:
        async with contextlib.aclosing(client.outcomes()) as stream:
            async for outcome in stream:
                wf = outcome.envelope.workflow_id
                if wf.startswith("ap-"):
                    seen[wf] += 1  # outcomes() dedupes by event id: a second one would be a second outcome
                    outcomes.setdefault(wf, outcome)

    collector = asyncio.create_task(collect())
    try:
        for service in ("supervisor", "handoff-validator", "policy-guard", "approvals"):
            procs.start(service, service)
        for kind in AGENTS:
            procs.start(f"agent-{kind}", "agent", "--kind", kind)

        def tenant(ticket: str) -> str:
            owner = world.tenant_of("ticket_id", ticket)
            assert owner is not None
            return owner

        for i, ticket in enumerate(big):
            await client.submit(
                "support_refund", {"ticket_id": ticket}, tenant_id=tenant(ticket), workflow_id=f"ap-big-{i}"
            )

        async def all_pending() -> bool:
            return len(await _pending(api)) == PENDING

        await _until(f"{PENDING} approvals pending", all_pending, procs)
        # With 100 workflows waiting for humans, 200 others run through the same services.
        started = time.monotonic()
        for i, ticket in enumerate(small):
            await client.submit(
                "support_refund", {"ticket_id": ticket}, tenant_id=tenant(ticket), workflow_id=f"ap-small-{i}"
            )

        async def others_done() -> bool:
            return sum(1 for wf in outcomes if wf.startswith("ap-small-")) == OTHERS

        await _until(f"{OTHERS} workflows completing past the pending approvals", others_done, procs)
        print(f"{OTHERS} workflows completed in {time.monotonic() - started:.1f}s with {PENDING} approvals pending")
        assert not [wf for wf in outcomes if wf.startswith("ap-big-")]  # nobody decided yet: none of them ended
        assert len(await _pending(api)) == PENDING

        # Both killed with every approval pending, then started again: nothing is lost.
        procs.kill("approvals")
        procs.kill("supervisor")
        procs.start("approvals-2", "approvals")
        procs.start("supervisor-2", "supervisor")
        await _until(f"the restarted approval service listing the {PENDING} approvals", all_pending, procs)

        reviewer = ScriptedReviewer(api)
        decided = await reviewer.review_once()
        assert decided == PENDING and reviewer.approved + reviewer.rejected == PENDING

        async def all_ended() -> bool:
            return len(outcomes) == PENDING + OTHERS

        await _until("every workflow's outcome after its decision", all_ended, procs)
        await asyncio.sleep(2)  # anything sent twice would arrive now
        steps: list[StepRequested] = []

        async def keep(record: BusRecord) -> None:
            event = await serde.decode(record.value)
            if isinstance(event, StepRequested) and event.envelope.workflow_id.startswith("ap-big-"):
                steps.append(event)

        await bus.replay([topics.agent_steps("refund_issuer")], keep)
        dead_letters = sum((await bus.end_offsets(topics.DEAD_LETTER)).values())
    finally:
        collector.cancel()
        await asyncio.gather(collector, return_exceptions=True)
        await api.aclose()
        procs.stop_all()
        await bus.stop()

    expected = {
        f"ap-big-{i}": ("WorkflowCompleted", "")
        if amounts[t] <= REFUND_CEILING
        else ("WorkflowHalted", "APPROVAL_REJECTED")
        for i, t in enumerate(big)
    }
    expected.update({f"ap-small-{i}": ("WorkflowCompleted", "") for i in range(OTHERS)})
    got = {wf: (type(o).__name__, getattr(o, "reason_code", "")) for wf, o in outcomes.items()}
    assert got == expected
    assert set(seen.values()) == {1}, {wf: n for wf, n in seen.items() if n > 1}
    approved = sum(1 for wf, (kind, _) in expected.items() if wf.startswith("ap-big-") and kind == "WorkflowCompleted")
    assert 0 < approved < PENDING  # both decisions are exercised
    halted = [o for o in outcomes.values() if isinstance(o, WorkflowHalted)]
    assert all("rejected by alice" in o.reason for o in halted)
    assert sum(isinstance(o, WorkflowCompleted) for o in outcomes.values()) == OTHERS + approved
    # Each waiting workflow resumed exactly once: one step request carrying its approval.
    resumed = Counter(
        s.envelope.workflow_id for s in {s.envelope.event_id: s for s in steps}.values() if s.approval_token
    )
    assert len(resumed) == approved and set(resumed.values()) == {1}
    # The approved refunds were paid once each, the rejected ones never.
    db = sqlite3.connect(tmp_path / "world.db")
    paid = db.execute("SELECT executions FROM tool_calls WHERE tool = 'issue_refund'").fetchall()
    refunds = db.execute("SELECT COUNT(*) FROM refunds").fetchone()[0]
    db.close()
    assert refunds == OTHERS + approved and len(paid) == OTHERS + approved and {n for (n,) in paid} == {1}
    assert world.verify().ok
    world.close()
    assert dead_letters == 0
