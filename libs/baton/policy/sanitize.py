"""PII redaction of tool results and logs with Presidio's pattern recognizers, and the query tools' table allow-list.

Only recognizers that need no NLP model are used (Presidio's default AnalyzerEngine would load a spaCy model,
which cannot be downloaded here): each finds candidates with a pattern or `phonenumbers` and validates them
(Luhn for cards, the IBAN checksum, SSN and NINO rules), and the AnonymizerEngine replaces what they find with
`<ENTITY_TYPE>`. Importing Presidio imports spaCy (~2 s), so it happens when the first `Sanitizer` is built,
not when this module is imported.

What is not caught: names, postal addresses and free-form identifiers (they need an NER model), phone numbers
written as a bare digit run with no "phone"/"tel"/... word just before them (indistinguishable from order
numbers and timestamps), card numbers that fail the Luhn check.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from presidio_analyzer import EntityRecognizer
    from presidio_anonymizer import AnonymizerEngine

EMAIL_ADDRESS = "EMAIL_ADDRESS"
PHONE_NUMBER = "PHONE_NUMBER"
CREDIT_CARD = "CREDIT_CARD"
IBAN_CODE = "IBAN_CODE"
US_SSN = "US_SSN"
UK_NINO = "UK_NINO"
DEFAULT_ENTITIES: tuple[str, ...] = (EMAIL_ADDRESS, PHONE_NUMBER, CREDIT_CARD, IBAN_CODE, US_SSN, UK_NINO)
# Presidio scores: a validated email, card or IBAN 1.0, a phone number 0.4, a formatted SSN or a NINO 0.5; the
# "very weak" SSN patterns (any 9 digits: order numbers) score 0.05 and stay under the threshold.
DEFAULT_SCORE_THRESHOLD = 0.4
# National formats are matched for these regions; "+<country code>" numbers are matched whatever the region.
DEFAULT_PHONE_REGIONS: tuple[str, ...] = ("US", "GB", "DE", "FR", "NL", "ES", "IT", "IE")

_PHONE_CONTEXT = re.compile(
    r"(?:phone|tel|mobile|cell|call|fax|whatsapp|sms)\W{0,3}(?:no\.?|number|nr\.?|#)?\W{0,3}$", re.I
)
_FORMATTED_PHONE = re.compile(r"^\+|[\s().-]")
_DIGIT_RUN = re.compile(r"(?<![\w.,:/-])[+(]?\d[\d ().-]*\d")
_PHONE_PAD = 40
_DATE = re.compile(r"\d{4}[./-]\d{1,2}[./-]\d{1,2}|\d{1,2}[./-]\d{1,2}[./-]\d{4}")
# Cheap pre-checks so strings that cannot hold an entity skip its recognizer (most strings in a tool result).
_DIGITS = re.compile(r"\d")
_NINO_SHAPE = re.compile(r"[A-Za-z]{2}\s?\d{2}\s?\d{2}\s?\d{2}\s?[A-Da-d]")


@dataclass(frozen=True)
class Finding:
    """How many values of one kind were redacted at one place; never the values themselves."""

    entity_type: str
    path: str
    count: int


@dataclass(frozen=True)
class Sanitized:
    """A redacted copy of a value and what was redacted in it."""

    value: Any
    findings: tuple[Finding, ...]

    @property
    def redacted(self) -> bool:
        return bool(self.findings)


class QueryRefusedError(ValueError):
    """A query the table allow-list cannot vouch for: it does not parse, or it is not one statement we understand."""


def _child_path(path: str, key: object) -> str:
    if isinstance(key, str) and key.isidentifier():
        return f"{path}.{key}"
    return f"{path}[{key!r}]"


class Sanitizer:
    """Redacts PII from JSON-like values. Build it once: it loads Presidio and its recognizers."""

    def __init__(
        self,
        entities: Collection[str] = DEFAULT_ENTITIES,
        *,
        score_threshold: float = DEFAULT_SCORE_THRESHOLD,
        phone_regions: Sequence[str] = DEFAULT_PHONE_REGIONS,
    ) -> None:
        unknown = set(entities) - set(DEFAULT_ENTITIES)
        if unknown:
            raise ValueError(
                f"unknown entity kinds {sorted(unknown)}: this sanitizer recognizes {list(DEFAULT_ENTITIES)}"
            )
        self.entities = tuple(e for e in DEFAULT_ENTITIES if e in entities)
        self.score_threshold = score_threshold
        self._recognizers = _recognizers(self.entities, tuple(phone_regions))
        self._international_phones = _recognizers((PHONE_NUMBER,), tuple(phone_regions[:1]) or ("US",))[0]
        self._anonymizer = _anonymizer()
        # The first call loads phonenumbers' metadata and tldextract's suffix list (~0.1 s): pay it here.
        self.redact_text("warm-up: +44 20 7946 0958, someone@example.com")

    def sanitize(self, value: Any) -> Sanitized:
        """A copy of value with every PII string redacted, and where; dict keys and non-strings are left as they are."""
        counts: Counter[tuple[str, str]] = Counter()
        redacted = self._walk(value, "$", counts)
        findings = tuple(Finding(entity, path, n) for (path, entity), n in counts.items())
        return Sanitized(redacted, findings)

    def redact_text(self, text: str) -> str:
        """text with its PII replaced by <ENTITY_TYPE>."""
        return self._redact(text, "$", Counter())

    def _walk(self, value: Any, path: str, counts: Counter[tuple[str, str]]) -> Any:
        if isinstance(value, str):
            return self._redact(value, path, counts)
        if isinstance(value, Mapping):
            return {k: self._walk(v, _child_path(path, k), counts) for k, v in value.items()}
        if isinstance(value, list | tuple):
            items = [self._walk(v, f"{path}[{i}]", counts) for i, v in enumerate(value)]
            return items if isinstance(value, list) else tuple(items)
        return value

    def _redact(self, text: str, path: str, counts: Counter[tuple[str, str]]) -> str:
        from presidio_anonymizer.entities import OperatorConfig, RecognizerResult

        found = [r for r in self._analyze(text) if r.score >= self.score_threshold]
        if not found:
            # The very string back: PII-free values stay byte-for-byte equal (they are hashed downstream).
            return text
        result = self._anonymizer.anonymize(
            text=text,
            analyzer_results=[RecognizerResult(r.entity_type, r.start, r.end, r.score) for r in found],
            operators={"DEFAULT": OperatorConfig("replace")},
        )
        for item in result.items:
            counts[(path, item.entity_type)] += 1
        return result.text

    def _analyze(self, text: str) -> list[Any]:
        digits = len(_DIGITS.findall(text))
        results: list[Any] = []
        for recognizer in self._recognizers:
            entity = recognizer.supported_entities[0]
            if entity == EMAIL_ADDRESS and "@" not in text:
                continue
            if entity == US_SSN and digits < 9:
                continue
            if entity == PHONE_NUMBER:
                results.extend(self._phones(recognizer, text) if digits >= 7 else [])
                continue
            if entity in (CREDIT_CARD, IBAN_CODE) and digits < 12:
                continue
            if entity == UK_NINO and (digits < 6 or not _NINO_SHAPE.search(text)):
                continue
            # No NLP engine ran, so there are no NLP artifacts: these recognizers then skip context enhancement.
            results.extend(recognizer.analyze(text, [entity], None))  # type: ignore[arg-type]
        return results

    def _phones(self, recognizer: EntityRecognizer, text: str) -> list[Any]:
        # phonenumbers scans its text once per region (~35 µs a character for 8 regions): it is given only a
        # window around each run shaped like a phone number (7+ digits, not a date), so cost follows the
        # candidates, not the length of the text.
        # A window whose numbers all start with "+" needs one region, not eight: the country code says which.
        windows: list[tuple[int, int, bool]] = []
        for run in _DIGIT_RUN.finditer(text):
            digits = sum(c.isdigit() for c in run.group())
            if digits >= 7 and not _DATE.fullmatch(run.group()) and _plausible_phone(text, *run.span()):
                start, stop = max(0, run.start() - _PHONE_PAD), run.end() + _PHONE_PAD
                national = not run.group().startswith("+")
                if windows and start <= windows[-1][1]:
                    windows[-1] = (windows[-1][0], stop, windows[-1][2] or national)
                else:
                    windows.append((start, stop, national))
        found = []
        for start, stop, national in windows:
            matcher = recognizer if national else self._international_phones
            for result in matcher.analyze(text[start:stop], [PHONE_NUMBER], None):  # type: ignore[arg-type]
                result.start += start
                result.end += start
                if _plausible_phone(text, result.start, result.end):
                    found.append(result)
        return found


def _plausible_phone(text: str, start: int, end: int) -> bool:
    # A bare run of digits is an order number, an amount or a timestamp as often as a phone number: it counts
    # only when a word like "phone" or "tel" stands just before it.
    return bool(_FORMATTED_PHONE.search(text[start:end])) or bool(
        _PHONE_CONTEXT.search(text[max(0, start - 24) : start])
    )


def _recognizers(entities: tuple[str, ...], phone_regions: tuple[str, ...]) -> list[EntityRecognizer]:
    import tldextract
    from presidio_analyzer.predefined_recognizers import (
        CreditCardRecognizer,
        EmailRecognizer,
        IbanRecognizer,
        PhoneRecognizer,
        UkNinoRecognizer,
        UsSsnRecognizer,
    )

    # Presidio validates an email's domain with tldextract, whose default fetches the public suffix list from
    # the network on first use; the snapshot it ships is enough and never blocks on a missing network.
    offline_tlds = tldextract.TLDExtract(suffix_list_urls=(), cache_dir=None)

    class OfflineEmailRecognizer(EmailRecognizer):
        def validate_result(self, pattern_text: str) -> bool:
            return offline_tlds(pattern_text).fqdn != ""

    # Strict grouping: "2024-000123" (an invoice number) is not a phone number even if its digits could be.
    made: dict[str, EntityRecognizer] = {
        EMAIL_ADDRESS: OfflineEmailRecognizer(),
        PHONE_NUMBER: PhoneRecognizer(supported_regions=phone_regions, leniency=2),
        CREDIT_CARD: CreditCardRecognizer(),
        IBAN_CODE: IbanRecognizer(),
        US_SSN: UsSsnRecognizer(),
        UK_NINO: UkNinoRecognizer(),
    }
    return [made[e] for e in entities]


def _anonymizer() -> AnonymizerEngine:
    from presidio_anonymizer import AnonymizerEngine

    return AnonymizerEngine()  # type: ignore[no-untyped-call]


@cache
def default_sanitizer() -> Sanitizer:
    """The process's sanitizer with the default entity kinds, built on first use."""
    return Sanitizer()


def redact_text(text: str) -> str:
    """text with its PII replaced by <ENTITY_TYPE>, with the default sanitizer."""
    return default_sanitizer().redact_text(text)


_TRACEBACKS = logging.Formatter()


class RedactingFilter(logging.Filter):
    """A logging filter that redacts PII from a record's message and arguments.

    Add it to the handlers (a logger's own filters do not see records from its child loggers). The message is
    stored formatted, with its arguments merged in, so no handler formats the clear arguments later; a
    traceback and stack info are redacted too.
    """

    def __init__(self, sanitizer: Sanitizer | None = None, name: str = "") -> None:
        super().__init__(name)
        self._sanitizer = sanitizer

    def filter(self, record: logging.LogRecord) -> bool:
        sanitizer = self._sanitizer or default_sanitizer()
        try:
            message = record.getMessage()
        except (TypeError, ValueError):
            # A message whose arguments do not fit it: redact both as they are rather than lose the record.
            message = f"{record.msg} {record.args!r}"
        record.msg = sanitizer.redact_text(message)
        record.args = None
        if record.exc_info and not record.exc_text:
            # Formatters reuse exc_text when it is set, so the traceback is redacted once, here.
            record.exc_text = sanitizer.redact_text(_TRACEBACKS.formatException(record.exc_info))
        if record.stack_info:
            record.stack_info = sanitizer.redact_text(record.stack_info)
        return True


def tables_outside(query: str, allowed: Collection[str], *, dialect: str | None = None) -> list[str]:
    """The tables query reads or writes that allowed does not list, each once (CTE names are not tables).

    Names are compared case-insensitively as written: a qualified reference (`sales.orders`) needs its qualified
    name in allowed. Raises QueryRefusedError when the query does not parse.
    """
    import sqlglot
    from sqlglot import exp
    from sqlglot.errors import ParseError

    try:
        statements = sqlglot.parse(query, read=dialect)
    except ParseError as error:
        first = error.errors[0] if error.errors else {}
        where = f" at line {first.get('line')}, column {first.get('col')}" if first else ""
        reason = first.get("description") or str(error)
        raise QueryRefusedError(
            f"query refused: it does not parse as SQL{where} ({reason}); send one complete SQL statement"
            + (f" in the {dialect} dialect" if dialect else "")
        ) from error
    parsed = [s for s in statements if s is not None]
    if not parsed:
        raise QueryRefusedError("query refused: it is empty; send one complete SQL statement")
    for statement in parsed:
        if not isinstance(statement, exp.Query | exp.Insert | exp.Update | exp.Delete | exp.Merge):
            # sqlglot reads "selec * frm" as an expression and GRANT or PRAGMA as commands: none is a query.
            raise QueryRefusedError(
                f"query refused: {statement.sql()[:40]!r} is not a SELECT, INSERT, UPDATE, DELETE or MERGE "
                "statement; send one of those"
            )
    permitted = {name.lower() for name in allowed}
    outside: list[str] = []
    for statement in parsed:
        # A CTE's name stands for it only inside the query it is attached to: the same name elsewhere in the
        # statement (say, outside the subquery that defines it) is a real table.
        owners: dict[str, list[Any]] = {}
        for cte in statement.find_all(exp.CTE):
            with_clause = cte.parent
            if with_clause is not None and with_clause.parent is not None:
                owners.setdefault(cte.alias_or_name.lower(), []).append(with_clause.parent)
        for table in statement.find_all(exp.Table):
            name = ".".join(part.name for part in table.parts).lower()
            if not name:
                continue
            if not table.db and name in owners:
                ancestors = {id(node) for node in _ancestors(table)}
                if any(id(owner) in ancestors for owner in owners[name]):
                    continue
            if name not in permitted and name not in outside:
                outside.append(name)
    return outside


def _ancestors(node: Any) -> list[Any]:
    found = []
    while node.parent is not None:
        node = node.parent
        found.append(node)
    return found
