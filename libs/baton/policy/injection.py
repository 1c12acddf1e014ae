"""Prompt-injection screening of external content (documents, emails, tickets, tool results) with rules, no model.

No maintained library screens offline: the known ones classify with a transformer downloaded from a model hub,
which this project cannot fetch. So this is a rule detector: each string is normalised (Unicode compatibility
forms, zero-width and bidi characters removed, Cyrillic and Greek look-alikes mapped to Latin, leetspeak and
spaced-out letters undone), then matched against rules for what injected text does and benign text rarely does:
tell the reader to drop its instructions, give it a new role, ask for its prompt or secrets, dictate a tool call,
hide text in markup or chat-template tokens, address "the AI" reading it, or ask for secrecy and exfiltration.
Base64 blobs that decode to text are screened too. Each rule has a weight; a string is flagged when its weights
combine (1 - Π(1 - w)) to at least the threshold, so a weak hint alone ("you are now a ...") is not enough.

What it does not catch: paraphrases no rule names, instructions split across fields, languages beyond the few
covered, and attacks phrased as plausible business requests ("the manager already approved this refund").
A flag is a signal for the guard (quarantine, ask for approval, strip the field), not proof.
"""

from __future__ import annotations

import base64
import binascii
import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

DEFAULT_THRESHOLD = 0.5
EXCERPT_CHARS = 60
# A rule's match starts at most _BEFORE characters before one of its triggers and ends within _AFTER after it.
_BEFORE = 100
_AFTER = 160

_INVISIBLE = dict.fromkeys(
    [
        *(0x00AD, 0x034F, 0x061C, 0x115F, 0x1160, 0x17B4, 0x17B5, 0x180E, 0x3164, 0xFEFF, 0xFFA0),
        *range(0x200B, 0x2010),
        *range(0x202A, 0x202F),
        *range(0x2060, 0x2070),
    ],
    None,
)
# Cyrillic and Greek letters that look like Latin ones (NFKC does not map them), and typographic apostrophes.
_HOMOGLYPHS = str.maketrans(
    "аеорсухіјѕԁɡһӏмтвкнАВЕКМНОРСТХУІЈЅαβεικνορτυχΑΒΕΗΙΚΜΝΟΡΤΥΧ’ʼ",
    "aeopcyxijsdghlmtbknABEKMHOPCTXYIJSabeikvoptuxABEHIKMNOPTYX''",
)
_LEET = str.maketrans("013457@$", "oieastas")
_WORD = re.compile(r"[\w@$]+(?:'[\w@$]+)*")
_SPACED = re.compile(r"\b(?:\w[ .\-_*]){3,}\w\b")
_BASE64 = re.compile(r"(?<![A-Za-z0-9+/=])[A-Za-z0-9+/]{24,}={0,2}(?![A-Za-z0-9+/=])")


def _spaced_out(words: list[str]) -> bool:
    run = 0
    for word in words:
        run = run + 1 if len(word) == 1 and word.isalpha() else 0
        if run >= 4:
            return True
    return False


def readings(text: str) -> list[tuple[str, frozenset[str]]]:
    """The normalised forms of text the rules read, each with its set of words.

    Compatibility forms are folded (fullwidth letters), invisible and bidi characters dropped, Cyrillic and Greek
    look-alikes mapped to Latin, spaced-out letters ("i g n o r e") joined; a second reading undoes leetspeak when
    a word mixes letters with 0, 1, 3, 4, 5, 7, @ or $.
    """
    if not text.isascii():
        text = unicodedata.normalize("NFKC", text).translate(_INVISIBLE).translate(_HOMOGLYPHS)
    text = re.sub(r"[^\S\n]+", " ", text.lower())
    words = _WORD.findall(text)
    if _spaced_out(words):
        text = _SPACED.sub(lambda m: re.sub(r"[ .\-_*]", "", m.group()), text)
        words = _WORD.findall(text)
    seen = frozenset(words)
    out = [(text, seen)]
    # Read again with leetspeak undone only when that spells a word some rule looks for ("1gn0re", "pr0mpt").
    undone = {w.translate(_LEET) for w in seen if not w.isalpha() and not w.isdigit()}
    if not undone.isdisjoint(_VOCABULARY):
        leet = text.translate(_LEET)
        out.append((leet, frozenset(_WORD.findall(leet))))
    return out


def normalise(text: str) -> str:
    """text as the rules read it first (see readings)."""
    return readings(text)[0][0]


@dataclass(frozen=True)
class Rule:
    """A named pattern over normalised text, tried only near one of its trigger words (or substrings)."""

    name: str
    weight: float
    words: frozenset[str]
    substrings: tuple[str, ...]
    pattern: re.Pattern[str]
    after: int = _AFTER

    def search(self, text: str, words: frozenset[str]) -> re.Match[str] | None:
        # Python's re tries a pattern at every position (~0.1 µs a character a rule); most strings hold none of a
        # rule's trigger words, and those that do are searched only in a window around each of them.
        windows: list[tuple[int, int]] = []
        for trigger in [*(self.words & words), *(t for t in self.substrings if t in text)]:
            whole_word = trigger in self.words
            at = text.find(trigger)
            while at != -1:
                end = at + len(trigger)
                if not whole_word or (
                    (at == 0 or not text[at - 1].isalnum()) and (end == len(text) or not text[end].isalnum())
                ):
                    windows.append((max(0, at - _BEFORE), end + self.after))
                at = text.find(trigger, end)
        # Overlapping windows are merged, so each character is searched once per rule however often triggers recur.
        windows.sort()
        merged: list[list[int]] = []
        for start, stop in windows:
            if merged and start <= merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], stop)
            else:
                merged.append([start, stop])
        for start, stop in merged:
            match = self.pattern.search(text, start, stop)
            if match:
                return match
        return None


def _rule(name: str, weight: float, triggers: str, pattern: str, *, after: int = _AFTER) -> Rule:
    split = triggers.split()
    words = frozenset(t for t in split if re.fullmatch(r"[^\W\d_]+|don't", t))
    return Rule(name, weight, words, tuple(t for t in split if t not in words), re.compile(pattern), after)


_W = r"(?:\W+\w+){0,4}?\W+"  # up to four words in between
_PRIOR = (
    r"(?:previous|prior|preceding|above|earlier|former|initial|original|old|existing|current|all|any|every|your|"
    r"the|these|those|my)"
)
_ORDERS = (
    r"(?:instructions?|directives?|rules|guidelines|guardrails|constraints|prompts?|commands|orders|programming|"
    r"polic(?:y|ies)|restrictions|safety (?:checks|rules)|system (?:prompt|message))"
)
_MODEL = r"(?:ai|a\.i\.|assistant|agent|bot|chatbot|llm|language model|model|gpt|claude|copilot)"

RULES: tuple[Rule, ...] = (
    _rule(
        "override_instructions",
        0.9,
        "ignore disregard forget skip override bypass drop abandon neglect aside attention follow obey following "
        "obeying",
        rf"\b(?:ignore|disregard|forget|skip|override|bypass|drop|abandon|neglect|set aside|pay no attention to|"
        rf"do not (?:follow|obey)|don'?t (?:follow|obey)|stop (?:following|obeying))\b{_W}?(?:{_PRIOR}\W+)+(?:\w+\W+)?"
        rf"{_ORDERS}\b",
    ),
    _rule(
        "override_everything",
        0.8,
        "forget ignore disregard",
        r"\b(?:forget|ignore|disregard) (?:everything|all) (?:you were|you've been|above|before)",
    ),
    _rule(
        "ignore_above",
        0.7,
        "ignore",
        r"\bignore (?:the |everything )?(?:above|preceding)\b(?! (?:noise|light|message|email))",
    ),
    _rule(
        "rules_void",
        0.8,
        "rules instructions guidelines priority precedence",
        r"\b(?:earlier|previous|prior|old|your) (?:rules|instructions|guidelines) (?:no longer apply|are "
        r"(?:void|cancelled|obsolete|revoked))|\b(?:the )?(?:real|actual|true) instructions\b|\b(?:these|this|the "
        r"following) (?:instructions?|message|document|text) (?:takes?|has|have) (?:priority|precedence)",
    ),
    _rule(
        "new_instructions",
        0.7,
        "instruction instructions task role goal objective purpose job",
        rf"\b(?:new|updated|revised|additional) (?:system )?instructions? (?:for|to) (?:the |any |all )?{_MODEL}|"
        rf"\byour (?:new|real|only|actual) (?:task|role|goal|objective|instructions?|purpose|job)\b",
    ),
    _rule(
        "role_reassignment",
        0.8,
        "now pretend imagine act developer jailbreak jailbroken dan anything",
        r"\byou are now (?:dan|an? (?:unrestricted|unfiltered|jailbroken|evil|different)|no longer|free|"
        r"in (?:developer|god|admin|debug) mode|the (?:store'?s |system )?admin\w*)|"
        r"\bfrom now on,? you (?:are|will|must|only|act)\b|"
        r"\b(?:pretend|imagine) (?:to be|you are|you're)\b|\bact as (?:an? |the )?(?:unrestricted|unfiltered|"
        r"jailbroken|dan|admin\w*|root|developer|system|different)|\bdeveloper mode (?:enabled|on|activated)|"
        r"\bjailbr(?:eak|oken)\b|\bas dan\b|\bdo anything now\b",
    ),
    _rule("role_hint", 0.45, "now", r"\byou are now (?:an?|the|my) \w+"),
    _rule(
        "prompt_exfiltration",
        0.85,
        "prompt instructions configuration message rules window key keys secret secrets credentials",
        r"\b(?:reveal|print|show|output|repeat|display|leak|disclose|dump|quote|recite|write out|tell me|share|give me)"
        r"\W+(?:\w+\W+){0,3}?(?:your|the (?:above|hidden|initial|original|exact|full))\W+(?:\w+\W+){0,2}?"
        r"(?:system prompt|prompt|instructions|configuration|developer message|system message|rules|context window|"
        r"api keys?|secrets?|credentials)\b|\b(?:exact |original |initial )?instructions you were given\b|"
        r"\bhidden instructions\b|\bapi keys? you can see\b",
    ),
    _rule(
        "tool_coercion",
        0.75,
        "_",
        r"\b(?:call|invoke|execute|run|trigger|use)\W+(?:the\W+)?`?[a-z][a-z0-9]*(?:_[a-z0-9]+)+`?\W+"
        r"(?:tool\W+|function\W+)?(?:with|using|passing|for|to)\b|\b[a-z][a-z0-9]*(?:_[a-z0-9]+)+\s*\(\s*[a-z_]+\s*=",
    ),
    _rule(
        "addresses_the_model",
        0.5,
        "ai assistant assistants agent agents bot bots chatbot llm llms model models gpt claude copilot a.i.",
        r"\b(?:attention|note|message|instructions?|hey|dear|hello|hi)\W+(?:\w+\W+){0,3}?(?:to |for )?"
        r"(?:the |any |all )?"
        rf"(?:{_MODEL})s?\b|\bif you are an? (?:ai|llm|language model|assistant|bot|agent)\b|\b(?:{_MODEL})s? "
        rf"(?:reading|processing|summari[sz]ing|parsing) this\b|^\W*(?:{_MODEL})\W*[,:]",
    ),
    _rule(
        "policy_bypass",
        0.55,
        "bypass skip disable ignore override circumvent without no regardless escalate approval disabled",
        r"\b(?:bypass|skip|disable|ignore|override|circumvent)\W+(?:\w+\W+){0,3}?(?:the |your |all |any )?"
        r"(?:verification|approval|fraud|kyc|safety|security|compliance|guard ?rails?|checks?|escalation|review)\b|"
        r"\b(?:without|no) (?:any )?(?:checks|confirmation|approval|verification)\b|\bregardless of the evidence\b|"
        r"\bdo not (?:escalate|ask for approval)\b|\bsafety checks (?:are )?disabled\b|\bsystem override\b",
    ),
    _rule(
        "secrecy",
        0.6,
        "tell telling inform informing mention mentioning alert alerting notify notifying",
        r"\b(?:do not|don'?t|never|without) (?:tell|telling|inform|informing|mention|mentioning|alert|alerting|notify|"
        r"notifying)\w*\W+(?:\w+\W+){0,2}?(?:the )?(?:user|customer|human|operator|reviewer|admin|anyone|them)\b",
    ),
    _rule(
        "exfiltration",
        0.6,
        "send forward upload post email transfer leak ![",
        r"\b(?:send|forward|upload|post|email|transfer|leak)\W+(?:\w+\W+){0,4}?(?:conversation|history|customer "
        r"(?:list|data|emails|records)|card details|credentials|passwords|all customer|database|every customer)\w*"
        r"(?:\W+\w+){0,3}\W+(?:to|at)\b|!\[[^\]]*\]\(https?://[^)]*[?&]\w+=",
    ),
    _rule(
        "chat_template",
        0.8,
        "[inst] [/inst] << <| # system assistant",
        # Line starts matter here: readings keep newlines.
        r"(?m)\[/?inst\]|<<\s*/?sys\s*>>|<\|(?:im_start|im_end|system|user|assistant|endoftext|eot_id|"
        r"start_header_id)\|>|^\s*#{2,}\s*(?:system|instructions?|assistant)\b|^\s*(?:system|assistant)\s*:\s|"
        r"\bsystem\s*(?:prompt|message)?\s*:\s*(?:you|the user|ignore)",
    ),
    _rule(
        "hidden_comment",
        0.7,
        "<!--",
        rf"<!--(?:(?!-->|<!--).){{0,400}}?\b(?:{_MODEL}|ignore|instructions?|approve|do not mention|you must|system)\b",
        after=420,
    ),
    _rule(
        "multilingual_override",
        0.9,
        "ignorez ignore ignora ignoriere ignorier negeer esqueça esqueca oublie oublies oubliez vergiss olvida "
        "dimentica",
        r"\b(?:ignorez|ignore|ignora|ignoriere|ignorier|negeer|esqueça|esqueca|oublie[sz]?|vergiss|olvida|dimentica)"
        r"\W+(?:\w+\W+){0,3}?(?:instructions|instrucciones|anweisungen|istruzioni|instruções|instrucoes|instructies|"
        r"consignes|regeln|reglas|regole|regras)\b",
    ),
    _rule(
        "multilingual_role",
        0.7,
        "jetzt maintenant ahora ora agora nu affiche montre zeige muestra mostra",
        r"\b(?:du bist jetzt|tu es maintenant|ahora eres|ora sei|agora você é|je bent nu)\b|"
        r"\b(?:affiche|montre|zeige|muestra|mostra)\W+(?:\w+\W+){0,2}?(?:prompt|instructions|anweisungen|instrucciones)",
    ),
)


# Words some rule looks for, and words attacks are made of: a leetspeak reading is worth it only if it spells one.
_VOCABULARY = frozenset(w for rule in RULES for w in rule.words) | {
    *("previous", "prior", "above", "earlier", "instructions", "rules", "prompt", "system", "restrictions"),
    *("unrestricted", "policy", "policies", "refund", "approve", "approved", "verified", "admin", "administrator"),
    *("guardrails", "safety", "call", "invoke", "execute", "run", "use", "http", "https", "customer", "data"),
}


@dataclass(frozen=True)
class InjectionFlag:
    """One rule that fired on the string at path (a JSON path), its weight, and a short excerpt of the match."""

    path: str
    rule: str
    score: float
    excerpt: str


def _child_path(path: str, key: object) -> str:
    if isinstance(key, str) and key.isidentifier():
        return f"{path}.{key}"
    return f"{path}[{key!r}]"


def _excerpt(text: str, start: int, end: int) -> str:
    snippet = text[start:end]
    return snippet if len(snippet) <= EXCERPT_CHARS else snippet[: EXCERPT_CHARS - 1] + "…"


class InjectionScreen:
    """Flags instruction-like content in external values; stateless once built, safe to share."""

    def __init__(self, *, threshold: float = DEFAULT_THRESHOLD, rules: tuple[Rule, ...] = RULES) -> None:
        self.threshold = threshold
        self.rules = rules
        # Which rules a word or substring can wake: most strings wake none and cost one set intersection.
        self._by_word: dict[str, set[str]] = {}
        for rule in rules:
            for word in rule.words:
                self._by_word.setdefault(word, set()).add(rule.name)
        self._by_substring = [(sub, rule.name) for rule in rules for sub in rule.substrings]

    def screen(self, value: Any) -> tuple[InjectionFlag, ...]:
        """The flags of every string in value (dicts, lists, strings) that reaches the threshold; () when none does."""
        flags: list[InjectionFlag] = []
        self._walk(value, "$", flags)
        return tuple(flags)

    def score_text(self, text: str) -> tuple[float, list[tuple[str, float, str]]]:
        """text's combined score and the (rule, weight, excerpt) of every rule that fired."""
        hits = self._hits(text)
        for blob in _BASE64.finditer(text):
            decoded = _decoded_text(blob.group())
            if decoded:
                inner, inner_hits = self.score_text(decoded)
                if inner >= self.threshold:
                    hits.append((f"encoded:{inner_hits[0][0]}", inner, _excerpt(blob.group(), 0, 24)))
        miss = 1.0
        for _, weight, _ in hits:
            miss *= 1 - weight
        return 1 - miss, hits

    def _hits(self, text: str) -> list[tuple[str, float, str]]:
        hits: dict[str, tuple[str, float, str]] = {}
        for reading, words in readings(text):
            woken = {name for word in words & self._by_word.keys() for name in self._by_word[word]}
            woken.update(name for sub, name in self._by_substring if sub in reading)
            for rule in self.rules:
                if rule.name in woken and rule.name not in hits:
                    match = rule.search(reading, words)
                    if match:
                        hits[rule.name] = (rule.name, rule.weight, _excerpt(reading, *match.span()))
        return list(hits.values())

    def _walk(self, value: Any, path: str, flags: list[InjectionFlag]) -> None:
        if isinstance(value, str):
            score, hits = self.score_text(value)
            if score >= self.threshold:
                flags.extend(InjectionFlag(path, rule, weight, excerpt) for rule, weight, excerpt in hits)
        elif isinstance(value, Mapping):
            for key, item in value.items():
                self._walk(item, _child_path(path, key), flags)
        elif isinstance(value, list | tuple):
            for i, item in enumerate(value):
                self._walk(item, f"{path}[{i}]", flags)


def _decoded_text(blob: str) -> str | None:
    """blob decoded from base64 when it is mostly readable text (an attachment's bytes are not)."""
    try:
        raw = base64.b64decode(blob + "=" * (-len(blob) % 4), validate=True)
        text = raw.decode("utf-8")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None
    printable = sum(c.isprintable() or c.isspace() for c in text)
    return text if text and printable / len(text) > 0.95 and " " in text else None
