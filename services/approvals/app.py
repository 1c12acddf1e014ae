"""Approval service: wiring only."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any

from baton import topics
from baton.approvals.desk import ApprovalDesk
from baton.approvals.model import ApprovalStore
from baton.bus.base import Subscription
from baton.messaging import EventBus, consume
from baton.runtime import ServiceConfigError, keep_running
from baton.workflows import REVIEWERS_FILE, default_workflow_dir
from services.approvals import SERVICE
from services.approvals.config import Settings
from services.approvals.handlers import ApprovalsHandlers

__all__ = ["SERVICE", "ApprovalsApp", "start"]
# The demo's reviewers sign in with "<name>-demo-token" (workflows/reviewers.yaml says so): public tokens.
DEMO_TOKEN_SUFFIX = "-demo-token"
log = logging.getLogger(__name__)


@dataclass
class ApprovalsApp:
    handlers: ApprovalsHandlers
    subscriptions: list[Subscription]
    store: ApprovalStore
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    web: Any = None  # the reviewer page and API (a FastAPI app)
    server: Any = None  # uvicorn.Server serving it, when served
    port: int | None = None

    async def stop(self) -> None:
        for sub in self.subscriptions:
            await sub.stop()
        if self.server is not None:
            self.server.should_exit = True
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await self.store.close()


def approval_store(settings: Settings) -> ApprovalStore:
    """The store of pending approvals the settings name (not set up yet)."""
    if settings.store == "mongodb":
        from baton.approvals.store_mongo import MongoApprovalStore

        return MongoApprovalStore(settings.mongodb_url, database=settings.mongodb_database)
    from baton.approvals.store_sqlite import SqliteApprovalStore

    return SqliteApprovalStore(settings.sqlite_path)


async def _serve(app: Any, settings: Settings) -> tuple[Any, asyncio.Task[None], int]:
    import uvicorn

    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host=settings.http_host,
            port=settings.http_port or 0,
            log_level="warning",
            lifespan="off",
            timeout_graceful_shutdown=5,  # open event streams end with the server, not 300 s later
        )
    )
    task = asyncio.create_task(server.serve(), name="approvals-http")
    while not server.started:
        if task.done():
            task.result()  # raises why it could not start (e.g. the port is taken)
            raise ServiceConfigError(f"the approval page could not be served on port {settings.http_port}")
        await asyncio.sleep(0.02)
    port = next(s.getsockname()[1] for srv in server.servers for s in srv.sockets)
    return server, task, port


async def start(events: EventBus, settings: Settings) -> ApprovalsApp:
    """Keep approval requests, serve the reviewer page and API, publish decisions."""
    from services.approvals.api import ChangeSignal, create_app
    from services.approvals.reviewers import Reviewers, ReviewersFileError

    path = settings.reviewers_file or default_workflow_dir() / REVIEWERS_FILE
    try:
        reviewers = Reviewers.load(path)
    except ReviewersFileError as exc:
        raise ServiceConfigError(f"the approval service cannot start: {exc}") from exc
    public = sorted(r.name for r in reviewers if reviewers.authenticate(f"{r.name}{DEMO_TOKEN_SUFFIX}") is not None)
    if public and not settings.allow_demo_reviewers:
        raise ServiceConfigError(
            f"the approval service cannot start: {path} gives {', '.join(public)} the demo's public tokens, so anyone "
            "could approve anything; point BATON_APPROVALS_REVIEWERS_FILE at your own reviewers (tokens stored as "
            "sha256), or set BATON_APPROVALS_ALLOW_DEMO_REVIEWERS=true for a demo"
        )
    store = approval_store(settings)
    await store.setup()
    desk = ApprovalDesk(store)
    changes = ChangeSignal()
    secret = settings.session_secret.get_secret_value().encode() if settings.session_secret is not None else None
    web = create_app(desk, reviewers, changes=changes, session_secret=secret)
    handlers = ApprovalsHandlers(events, desk, token_ttl_s=settings.token_ttl_s, changes=changes)
    await events.bus.create_topics([topics.APPROVAL_REQUESTS, topics.APPROVAL_DECISIONS, topics.DEAD_LETTER])
    sub, _ = await consume(
        events, [topics.APPROVAL_REQUESTS], group_id=topics.GROUP_APPROVALS, handler=handlers.on_event
    )
    tasks = [asyncio.create_task(keep_running("approval decisions", lambda: handlers.run(settings.sweep_s)))]
    app = ApprovalsApp(handlers=handlers, subscriptions=[sub], store=store, tasks=tasks, web=web)
    if settings.http_port is not None:
        app.server, served, app.port = await _serve(web, settings)
        app.tasks.append(served)
        log.info("approvals: reviewer page on http://%s:%d/", settings.http_host, app.port)
    return app
