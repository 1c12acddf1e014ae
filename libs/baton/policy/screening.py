"""What a tool's result may carry into Baton's events: PII redacted, instruction-like content flagged.

Applied where the result first appears (the agent runtime's tool executor), before it is recorded, hashed or
put in a context, so a redacted value never reaches the ledger, an event, the audit or a log in clear; the
injection screen reads the redacted text, so its excerpts carry no PII either. A flagged result never feeds the
model: the step escalates to a human (structural defence first: tool results are data in the context, never
instructions, and nothing critical runs without the guard's grant).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from baton.policy.injection import InjectionFlag, InjectionScreen
from baton.policy.sanitize import Finding, Sanitizer, default_sanitizer


@dataclass(frozen=True)
class Screened:
    """A tool result as it may travel on, with what was redacted from it and what was flagged in it."""

    result: Any
    redactions: tuple[Finding, ...] = ()
    injections: tuple[InjectionFlag, ...] = ()


class OutputScreen:
    """PII redaction (Presidio's recognizers) and injection screening of tool results; built once per process
    (the first sanitizer loads Presidio, about 2 s)."""

    def __init__(self, sanitizer: Sanitizer | None = None, injections: InjectionScreen | None = None) -> None:
        self._sanitizer = sanitizer or default_sanitizer()
        self._injections = injections or InjectionScreen()

    def redact_text(self, text: str) -> str:
        """A message (e.g. a tool's failure quoting its result) with its PII redacted."""
        return self._sanitizer.redact_text(text)

    def screen(self, result: Any) -> Screened:
        sanitized = self._sanitizer.sanitize(result)
        return Screened(sanitized.value, sanitized.findings, self._injections.screen(sanitized.value))
