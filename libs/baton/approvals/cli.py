"""`baton approvals`: list, show, approve and reject pending approvals through the approval service's API."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

if TYPE_CHECKING:
    from baton.approvals.client import ApprovalsClient

T = TypeVar("T")

approvals_app = typer.Typer(
    help="Human approvals: what waits for you, and your decision (through the approval service's HTTP API).",
    no_args_is_help=True,
)

Url = Annotated[
    str,
    typer.Option("--url", envvar="BATON_APPROVALS_URL", help="the approval service [default: http://127.0.0.1:8480]"),
]
Token = Annotated[
    str,
    typer.Option(
        "--token", envvar="BATON_APPROVALS_TOKEN", help="your reviewer token (reviewers.yaml)", show_default=False
    ),
]


def _call(url: str, token: str, action: Callable[[ApprovalsClient], T]) -> T:
    from baton.approvals.client import DEFAULT_URL, ApprovalsApiError, ApprovalsClient

    if not token:
        typer.echo("approvals: no token; pass --token or set BATON_APPROVALS_TOKEN to your reviewer token", err=True)
        raise typer.Exit(2)
    try:
        with ApprovalsClient(url or DEFAULT_URL, token) as client:
            return action(client)
    except ApprovalsApiError as exc:
        typer.echo(f"approvals: {exc} ({exc.code})", err=True)
        raise typer.Exit(1) from exc


def _votes(summary: dict[str, Any]) -> str:
    required = summary.get("required", summary.get("required_approvals", 1))
    approved = summary.get("approved", summary.get("approvals", 0))
    return f"{approved} of {required}"


def _when(value: Any) -> str:
    import datetime

    if isinstance(value, int | float):
        return datetime.datetime.fromtimestamp(value, tz=datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    return "—" if value is None else str(value)


def _text(value: Any) -> str:
    import json

    if value is None or value == "":
        return "—"
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def _print_summary(summary: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    console.print(f"[bold]{summary.get('title') or summary['id']}[/bold]")
    facts = Table.grid(padding=(0, 2))
    facts.add_column(style="bold")
    facts.add_column()
    for label, value in (
        ("id", summary["id"]),
        ("state", summary.get("state")),
        ("queue", summary.get("queue")),
        ("due", _when(summary.get("deadline"))),
        ("approvals", _votes(summary)),
        ("why (agent)", summary.get("why")),
        ("why (policy)", summary.get("policy_reason")),
        ("confidence", summary.get("confidence")),
        ("decision point", summary.get("decision_point")),
        ("lineage", " → ".join(summary.get("lineage") or []) or None),
        ("tenant", summary.get("tenant")),
        ("tier", summary.get("tier")),
        ("digest", summary.get("digest")),
    ):
        facts.add_row(label, _text(value))
    console.print(facts)
    changes = summary.get("what_changes") or {}
    if changes.get("diff"):
        diff = Table(title="What will change")
        for column in ("field", "before", "after"):
            diff.add_column(column)
        for row in changes["diff"]:
            diff.add_row(_text(row.get("field")), _text(row.get("before")), _text(row.get("after")))
        console.print(diff)
    if changes.get("plan"):
        plan = Table(title="The call")
        for column in ("argument", "value", "taken from"):
            plan.add_column(column)
        for row in changes["plan"]:
            plan.add_row(_text(row.get("argument")), _text(row.get("value")), _text(row.get("bound_from")))
        console.print(plan)


@approvals_app.command("list")
def list_pending(
    queue: Annotated[str | None, typer.Option(help="only this queue")] = None,
    url: Url = "",
    token: Token = "",
) -> None:
    """The pending approvals you see, oldest first."""
    from rich.console import Console
    from rich.table import Table

    found = _call(url, token, lambda c: c.pending(queue))
    if not found:
        typer.echo("nothing waits for you" + (f" on {queue}" if queue else ""))
        return
    table = Table()
    for column in ("id", "queue", "title", "approvals", "due"):
        table.add_column(column, overflow="fold")
    for s in found:
        table.add_row(s["id"], s.get("queue", ""), s.get("title", ""), _votes(s), _when(s.get("deadline")))
    Console().print(table)


@approvals_app.command("show")
def show(
    approval_id: Annotated[str, typer.Argument(help="the approval's id")], url: Url = "", token: Token = ""
) -> None:
    """One approval: what will change, why, and the votes so far."""
    _print_summary(_call(url, token, lambda c: c.get(approval_id)))


@approvals_app.command("approve")
def approve(
    approval_id: Annotated[str, typer.Argument(help="the approval's id")],
    reason: Annotated[str, typer.Option(help="a comment for the record")] = "",
    url: Url = "",
    token: Token = "",
) -> None:
    """Approve the action exactly as its summary shows it now (refused if it changed since)."""
    decided = _call(url, token, lambda c: c.approve(approval_id, reason=reason))
    typer.echo(f"approved {decided['id']}: {decided.get('state')}, {_votes(decided)} approvals")


@approvals_app.command("reject")
def reject(
    approval_id: Annotated[str, typer.Argument(help="the approval's id")],
    reason: Annotated[str, typer.Option(help="why (required: the requesting side sees it)")],
    url: Url = "",
    token: Token = "",
) -> None:
    """Reject it, saying why."""
    decided = _call(url, token, lambda c: c.reject(approval_id, reason=reason))
    typer.echo(f"rejected {decided['id']}: {decided.get('state')}")


@approvals_app.command("stats")
def stats(url: Url = "", token: Token = "") -> None:
    """The last 90 days: requested, decided, approved, rejected, expired, time to decision, agreement."""
    from rich.console import Console
    from rich.table import Table

    groups = _call(url, token, lambda c: c.stats())["groups"]
    columns = ("requested", "approved", "rejected", "expired", "escalated", "pending")
    table = Table()
    table.add_column("workflow / decision")
    for column in (*columns, "p50 s", "p95 s", "agree"):
        table.add_column(column, justify="right")

    def figure(value: Any, fmt: str = "{}") -> str:
        return "-" if value is None else fmt.format(value)

    for name, g in sorted(groups.items(), key=lambda item: (item[0] != "total", item[0])):
        table.add_row(
            name,
            *(str(g.get(c, 0)) for c in columns),
            figure(g.get("time_to_decision_p50_s"), "{:.0f}"),
            figure(g.get("time_to_decision_p95_s"), "{:.0f}"),
            figure(g.get("agreement_rate"), "{:.0%}"),
        )
    Console().print(table)
