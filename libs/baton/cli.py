"""The one CLI: `baton run SERVICE`, `baton schemas check`, and friends."""

from __future__ import annotations

import asyncio
import importlib
import signal
import sys
from typing import Annotated, Any

import typer

app = typer.Typer(help="Baton: a Kafka-native runtime for multi-agent workflows.", no_args_is_help=True)
schemas_app = typer.Typer(help="Avro contracts.", no_args_is_help=True)
app.add_typer(schemas_app, name="schemas")

# service name -> module holding `Settings`, `start(events, settings)` and `SERVICE`
SERVICES: dict[str, str] = {
    "handoff-validator": "services.handoff_validator",
}


@schemas_app.command("check")
def schemas_check() -> None:
    """Load every schema and run the BACKWARD compatibility gate between consecutive versions."""
    from baton.contracts.catalogue import load_catalogue
    from baton.contracts.compat import check_catalogue

    cat = load_catalogue()
    problems = check_catalogue(cat)
    for problem in problems:
        typer.echo(f"INCOMPATIBLE: {problem}", err=True)
    if problems:
        raise typer.Exit(1)
    versions = sum(len(v) for v in cat.by_subject.values())
    typer.echo(f"{len(cat.by_subject)} subjects, {versions} versions: every new version is BACKWARD compatible")


async def _run_service(name: str) -> None:
    from baton.runtime import build_events, configure_logging

    pkg = SERVICES[name]
    config: Any = importlib.import_module(f"{pkg}.config")
    service_app: Any = importlib.import_module(f"{pkg}.app")
    settings = config.Settings()
    configure_logging(settings.runtime.log_level)
    events = build_events(settings.runtime, service=name)
    await events.bus.start()
    running = await service_app.start(events, settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    typer.echo(f"{name} running on the {settings.runtime.bus} bus; SIGTERM to stop", err=True)
    await stop.wait()
    await running.stop()
    await events.bus.stop()


@app.command("run")
def run(service: Annotated[str, typer.Argument(help=f"One of: {', '.join(SERVICES)}")]) -> None:
    """Start one service in this process (configured through BATON_* environment variables)."""
    if service not in SERVICES:
        typer.echo(f"unknown service {service!r}; choose one of: {', '.join(SERVICES)}", err=True)
        raise typer.Exit(2)
    asyncio.run(_run_service(service))


def main() -> None:
    """Entry point for `python -m baton.cli`."""
    app(sys.argv[1:])
