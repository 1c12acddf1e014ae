"""One logger configuration for every service: one JSON line per event, with the service, the trace and
span ids of the event being handled and its workflow id (python-json-logger formats; a filter adds the
context). Redaction (the PII filter of the services that see tool results) runs before formatting."""

from __future__ import annotations

import contextlib
import contextvars
import logging
import sys
from collections.abc import Iterator

from pythonjsonlogger.json import JsonFormatter

from baton.telemetry import tracing

_workflow: contextvars.ContextVar[str | None] = contextvars.ContextVar("baton_workflow", default=None)

FIELDS = "%(asctime)s %(levelname)s %(name)s %(message)s"
RENAMED = {"asctime": "ts", "levelname": "level", "name": "logger", "message": "msg"}


def set_workflow(workflow_id: str | None) -> None:
    """Name the workflow the current handler works on (inside `about`, it ends with the block)."""
    _workflow.set(workflow_id)


@contextlib.contextmanager
def about(workflow_id: str | None) -> Iterator[None]:
    """Log lines of the block name workflow_id (a consumer wraps each record's handling in it)."""
    token = _workflow.set(workflow_id)
    try:
        yield
    finally:
        _workflow.reset(token)


class ContextFilter(logging.Filter):
    """Adds service, trace_id, span_id and workflow_id to every record (None when there is none)."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def filter(self, record: logging.LogRecord) -> bool:
        ids = tracing.trace_ids()
        record.service = self.service
        record.trace_id = ids[0] if ids else None
        record.span_id = ids[1] if ids else None
        record.workflow_id = _workflow.get()
        return True


def json_formatter() -> logging.Formatter:
    """The JSON line format: ts, level, logger, msg, service, trace_id, span_id, workflow_id (and exc_info)."""
    return JsonFormatter(
        FIELDS,
        rename_fields=RENAMED,
        json_ensure_ascii=False,
        reserved_attrs=None,
    )


def configure(service: str, level: str = "INFO", *, redact: bool = False) -> None:
    """Configure the root logger of a service process: JSON lines on stderr, the context filter, and when
    redact, every record through the PII filter first (agents and the guard, which see tool results)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(json_formatter())
    if redact:
        from baton.policy.sanitize import RedactingFilter, default_sanitizer

        # Built before the filter is installed: Presidio logs while it loads, and a filter loading it from inside
        # that record would import it twice over.
        handler.addFilter(RedactingFilter(default_sanitizer()))
    handler.addFilter(ContextFilter(service))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
