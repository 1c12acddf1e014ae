"""What GenAI spans say about a model and a tool call, sanitized: nothing the guard redacts reaches a span."""

from __future__ import annotations

import json
from typing import Any

# A span attribute is bounded like a log line: the arguments' head, never a whole document.
MAX_ARGUMENTS_CHARS = 2048


def model_identity(model: object) -> tuple[str, str]:
    """(gen_ai.provider.name, gen_ai.request.model) of a model client: its own `provider` and `model` when it
    declares them (`provider` defaults to openai: the OpenAI-compatible backend), else its class name."""
    inner = getattr(model, "inner", None)  # a wrapper (the demo's fault injector) speaks for the model it wraps
    if inner is not None and inner is not model:
        return model_identity(inner)
    provider = getattr(model, "provider", None)
    name = getattr(model, "model", None)
    if isinstance(name, str) and name:
        return (provider if isinstance(provider, str) and provider else "openai"), name
    return "baton", type(model).__name__


def sanitized_json(value: Any) -> str:
    """value as JSON with every PII string redacted by the guard's sanitizer (Presidio recognizers), cut to a
    bounded length."""
    from baton.policy.sanitize import default_sanitizer

    try:
        text = json.dumps(default_sanitizer().sanitize(value).value, sort_keys=True, default=str)
    except Exception as exc:  # a span never costs the call: without the arguments rather than in clear
        return f"<not recorded: {type(exc).__name__} while sanitizing>"
    if len(text) > MAX_ARGUMENTS_CHARS:
        return text[:MAX_ARGUMENTS_CHARS] + f"…[{len(text)} chars]"
    return text
