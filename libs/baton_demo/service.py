"""`python -m baton_demo.service SERVICE`: one Baton service as `baton run` starts it, with the demo's faults."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from baton.bus.base import Bus
from baton.cli import SERVICES, StartService, run_service
from baton.identity import IdentityConfigError
from baton.messaging import EventBus
from baton.runtime import ServiceConfigError
from baton.workflows import AgentSpec, agent_kinds, load_workflows
from baton_demo.chaos import FlakyBus
from baton_demo.faults import FaultInjectingModel, FaultPlan, handoff_faults


def start_agent(plan: FaultPlan) -> StartService:
    """The agent service's start, its model and handoffs faulty as the plan says (tools: its tool pack)."""
    from services.agent import app as agent_app

    async def start(events: EventBus, settings: Any) -> Any:
        spec = agent_kinds(load_workflows()).get(settings.kind)
        return await agent_app.start(
            events,
            settings,
            model=FaultInjectingModel(agent_app.build_model(settings, spec or AgentSpec(name=settings.kind)), plan),
            # An unknown kind gets no filter: start() refuses it with the list of known kinds.
            proposal_filter=None if spec is None else handoff_faults(plan, spec),
        )

    return start


def flaky(failure_rate: float) -> Callable[[Bus], Bus]:
    """A bus wrapper failing this share of publishes, as an unacknowledged write would."""

    def wrap(bus: Bus) -> Bus:
        logging.getLogger(__name__).warning("chaos: %.0f%% of publishes will fail", failure_rate * 100)
        return FlakyBus(bus, failure_rate=failure_rate, seed=os.getpid())

    return wrap


def main(argv: Sequence[str] | None = None, *, prog: str = "python -m baton_demo.service") -> None:
    """Parse the arguments, run the service until SIGTERM; exit 2 on a configuration it refuses."""
    parser = argparse.ArgumentParser(prog=prog, description=__doc__)
    parser.add_argument("service", choices=list(SERVICES))
    parser.add_argument("--kind", default=None, help="agent kind (for `agent`), else BATON_AGENT_KIND")
    parser.add_argument(
        "--fault-plan",
        type=Path,
        default=os.environ.get("BATON_DEMO_FAULT_PLAN") or None,
        help="agent: JSON fault plan (FaultPlan.dump), default BATON_DEMO_FAULT_PLAN",
    )
    parser.add_argument(
        "--publish-failure-rate",
        type=float,
        default=float(os.environ.get("BATON_DEMO_PUBLISH_FAILURE_RATE") or 0),
        help="share of publishes that fail (default BATON_DEMO_PUBLISH_FAILURE_RATE, else 0)",
    )
    args = parser.parse_args(argv)
    start = None
    if args.service == "agent":
        start = start_agent(FaultPlan.load(args.fault_plan) if args.fault_plan else FaultPlan())
    wrap_bus = flaky(args.publish_failure_rate) if args.publish_failure_rate > 0 else None
    try:
        asyncio.run(run_service(args.service, args.kind, start=start, wrap_bus=wrap_bus))
    except (IdentityConfigError, ServiceConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from exc


if __name__ == "__main__":
    main()
