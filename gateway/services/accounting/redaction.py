"""PII redaction: e-mail addresses, phone numbers, card numbers (Luhn-checked), IBANs (mod-97
and length-checked), US Social Security and UK National Insurance numbers, plus the admin's own
patterns, each replaced by a typed placeholder such as `[EMAIL]` or `[CARD]`.

Our own expressions and checksums rather than Presidio: its recognisers need spaCy models from
a model hub (not installable offline) and cost milliseconds per request, while a checksum or a
fixed shape keeps these few detectors' false positives low at microseconds per prompt. The
built-in expressions start a match only where a run of their characters starts (lookbehind), so
they scan any input in linear time. Admin patterns run under the `regex` module's timeout and
pass check_pattern() when saved.

Modes (a key's, a routing policy's, and the global default):
  off       nothing is redacted
  store     what is stored is redacted: prompts, answers and error messages in the request log
  upstream  that, and the request's message text before it is sent to the provider
"""
from __future__ import annotations

import functools
import logging
import re
from dataclasses import dataclass
from typing import Callable

import orjson
import regex
from re import _constants as sre_constants, _parser as sre_parse   # the stdlib's own parser

log = logging.getLogger("gateway.redaction")

OFF, STORE, UPSTREAM = "off", "store", "upstream"
MODES = (OFF, STORE, UPSTREAM)              # in order of strictness
PATTERN_TIMEOUT_SECONDS = 0.25              # per text and admin pattern; then the text is withheld
WITHHELD = "[REDACTED]"                     # what stands for a text an admin pattern timed out on
MAX_PATTERNS, MAX_PATTERN_CHARS = 20, 300
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,31}$")
_DIGIT = re.compile(r"\d")

# Countries' IBAN lengths (ISO 13616 registry); a candidate must match its country's.
IBAN_LENGTHS = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22, "BR": 29,
    "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DK": 18, "DO": 28, "EE": 20, "EG": 29,
    "ES": 24, "FI": 18, "FO": 18, "FR": 27, "GB": 22, "GE": 22, "GI": 23, "GL": 18, "GR": 27, "GT": 28,
    "HR": 21, "HU": 28, "IE": 22, "IL": 23, "IQ": 23, "IS": 26, "IT": 27, "JO": 30, "KW": 30, "KZ": 20,
    "LB": 28, "LC": 32, "LI": 21, "LT": 20, "LU": 20, "LV": 21, "MC": 27, "MD": 24, "ME": 22, "MK": 19,
    "MR": 27, "MT": 31, "MU": 30, "NL": 18, "NO": 15, "PK": 24, "PL": 28, "PS": 29, "PT": 25, "QA": 29,
    "RO": 24, "RS": 22, "SA": 24, "SC": 31, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "ST": 25, "SV": 28,
    "TL": 23, "TN": 24, "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20,
}


def luhn_ok(digits: str) -> bool:
    """The Luhn checksum of a card number (digits only)."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def iban_ok(compact: str) -> bool:
    """An IBAN (no spaces) of its country's length whose mod-97 check gives 1."""
    if IBAN_LENGTHS.get(compact[:2]) != len(compact):
        return False
    moved = compact[4:] + compact[:4]
    return int("".join(str(int(c, 36)) for c in moved)) % 97 == 1


def _card_ok(s: str) -> bool:
    digits = s.replace(" ", "").replace("-", "")
    return 13 <= len(digits) <= 19 and luhn_ok(digits)


def _iban_ok(s: str) -> bool:
    return iban_ok(s.replace(" ", ""))


_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


def _phone_ok(s: str) -> bool:
    digits = sum(c.isdigit() for c in s)
    if _ISO_DATE.search(s):         # 2024-01-31 2024-02-28 is a date range, not a phone
        return False
    return 8 <= digits <= 15 if s.startswith("+") else 10 <= digits <= 15


@dataclass(frozen=True)
class Detector:
    """A built-in kind of PII: its placeholder, its shape, and the check a candidate must pass."""
    name: str
    regex: re.Pattern
    valid: Callable[[str], bool] | None = None
    needs: str = "digit"            # "digit" or "@": the scan is skipped on text without one
    trim: bool = False              # try shorter candidates, ending at a separator

    def replace(self, m: re.Match) -> str:
        s = m.group()
        if self.valid is None:
            return f"[{self.name}]"
        # The longest prefix ending at a group boundary that passes: "4111 1111 1111 1111 2025".
        ends = [i for i in range(len(s) - 1, 0, -1) if s[i] in " -"] if self.trim else []
        for end in [len(s)] + ends:
            if self.valid(s[:end]):
                return f"[{self.name}]" + s[end:]
        return s


BUILT_IN = (
    Detector("EMAIL", re.compile(r"(?<![\w.+-])[\w.+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}"),
             needs="@"),
    # Compact, or printed in groups of four; cards contiguous, in fours (4-4-4-4[-1..3]) or as
    # Amex (4-6-5). Shapes this narrow keep dates, amounts and ids out.
    Detector("IBAN", re.compile(r"(?<![A-Za-z0-9])[A-Z]{2}\d{2}(?:[A-Z0-9]{11,30}|(?: [A-Z0-9]{4}){2,7}(?: [A-Z0-9]{1,4})?)"
                                r"(?![A-Za-z0-9])"), _iban_ok, trim=True),
    Detector("CARD", re.compile(r"(?<![\d-])(?:\d{13,19}|\d{4}([ -])\d{4}(?:\1\d{1,4}){1,3}|\d{4}([ -])\d{6}\2\d{4,5})"
                                r"(?!\d)"), _card_ok, trim=True),
    Detector("US_SSN", re.compile(r"(?<![\d-])(?!000|666|9\d\d)\d{3}-(?!00)\d{2}-(?!0000)\d{4}(?![\d-])")),
    Detector("UK_NINO", re.compile(r"(?<![A-Za-z0-9])(?!BG|GB|KN|NK|NT|TN|ZZ)[A-CEGHJ-PR-TW-Z][A-CEGHJ-NPR-TW-Z]"
                                   r" ?\d{2} ?\d{2} ?\d{2} ?[A-D](?![A-Za-z0-9])")),
    Detector("PHONE", re.compile(r"(?<![\w+])(?:\+\d{1,3}(?:[ -]?\(\d{1,4}\))?[ -]?\d{1,12}(?:[ -]\d{1,8}){0,5}"
                                 r"|\(\d{1,4}\)[ -]?\d{1,8}(?:[ -]\d{1,8}){0,5}"
                                 r"|\d{1,8}(?:[ -]\d{1,8}){1,5})(?![\w-])"), _phone_ok),
)
KINDS = tuple(d.name for d in BUILT_IN)


def strictest(*modes: str | None) -> str:
    """The strictest of the given modes (None: not set); off when none is set."""
    return max((m for m in modes if m in MODES), key=MODES.index, default=OFF)


def effective_mode(key_mode: str | None, policy_mode: str | None, default: str | None) -> str:
    """What applies to a request: the stricter of the key's and the policy's modes, or the
    global default when neither sets one."""
    if key_mode is None and policy_mode is None:
        return strictest(default)
    return strictest(key_mode, policy_mode)


def check_mode(value, param: str = "redact") -> str | None:
    """A message when `value` is neither a mode nor None."""
    if value is None or value in MODES:
        return None
    return f"{param} must be one of {', '.join(MODES)}."


class Redactor:
    """The built-in detectors plus compiled admin patterns; one per pattern list, shared."""

    def __init__(self, custom: tuple[tuple[str, str], ...] = ()):
        compiled = []
        for name, pattern in custom:
            try:
                compiled.append((name.upper(), regex.compile(pattern)))
            except regex.error:     # saved past check_pattern (by hand): skipped, never fatal
                log.error("redaction pattern %s does not compile; it is skipped", name)
        self.custom = tuple(compiled)

    def text(self, s: str) -> str:
        """`s` with every detected item replaced by its placeholder."""
        if not s:
            return s
        has = {"digit": _DIGIT.search(s) is not None, "@": "@" in s}
        for d in BUILT_IN:
            if has[d.needs]:
                s = d.regex.sub(d.replace, s)
        for name, rx in self.custom:
            placeholder = f"[{name}]"
            try:
                s = rx.sub(lambda _m: placeholder, s, timeout=PATTERN_TIMEOUT_SECONDS)
            except TimeoutError:
                log.warning("redaction pattern %s timed out; the text was withheld", name)
                return WITHHELD
        return s

    def part(self, part, budget: int | None = None):
        """Chat messages or embeddings input with their text redacted (a copy). With a budget,
        only about that many characters are redacted and kept: the rest would be cut anyway."""
        left = [budget]

        def text(s: str) -> str:
            if left[0] is None:
                return self.text(s)
            if left[0] <= 0:
                return ""
            cut = s[:left[0] + 64]          # a margin, so an item across the cut is caught whole
            left[0] -= len(s)
            return self.text(cut)

        if isinstance(part, str):
            return text(part)
        if not isinstance(part, list):
            return part
        return [text(p) if isinstance(p, str) else self._message(p, text) if isinstance(p, dict) else p
                for p in part]

    def body(self, body: dict) -> dict:
        """A request body with the message text (or embeddings input) redacted, for upstream."""
        name = "messages" if "messages" in body else "input" if "input" in body else None
        return body if name is None else {**body, name: self.part(body[name])}

    def messages_body(self, body: dict) -> dict:
        """An Anthropic Messages body (passed through as-is) with its text redacted: system, text
        blocks, tool inputs and results, plain-text documents. Thinking blocks stay as they are:
        their signature covers them. Base64 documents and images are not read."""
        out = dict(body)
        if "system" in body:
            out["system"] = self._blocks(body["system"])
        if isinstance(body.get("messages"), list):
            out["messages"] = [dict(m, content=self._blocks(m.get("content"))) if isinstance(m, dict) else m
                               for m in body["messages"]]
        return out

    def _blocks(self, content):
        if isinstance(content, str):
            return self.text(content)
        if not isinstance(content, list):
            return content
        return [self._block(b) if isinstance(b, dict) and b.get("type") not in _SIGNED else b for b in content]

    def _block(self, b: dict) -> dict:
        out = dict(b)
        if isinstance(b.get("text"), str):
            out["text"] = self.text(b["text"])
        if "content" in b:              # tool_result, or a document's content blocks
            out["content"] = self._blocks(b["content"])
        if isinstance(b.get("input"), dict):
            out["input"] = orjson.loads(_json_text(orjson.dumps(b["input"]).decode(), self.text))
        source = b.get("source")
        if isinstance(source, dict) and source.get("type") == "text" and isinstance(source.get("data"), str):
            out["source"] = dict(source, data=self.text(source["data"]))
        elif isinstance(source, dict) and source.get("type") == "content":
            out["source"] = dict(source, content=self._blocks(source.get("content")))
        return out

    def _message(self, m: dict, text) -> dict:
        out = dict(m)
        content = m.get("content")
        if isinstance(content, str):
            out["content"] = text(content)
        elif isinstance(content, list):
            out["content"] = [dict(p, text=text(p["text"])) if isinstance(p, dict) and isinstance(p.get("text"), str)
                              else p for p in content]
        calls = m.get("tool_calls")
        if isinstance(calls, list):
            out["tool_calls"] = [self._call(c, text) for c in calls]
        return out

    def _call(self, call, text):
        fn = call.get("function") if isinstance(call, dict) else None
        if not isinstance(fn, dict) or not isinstance(fn.get("arguments"), str):
            return call
        return {**call, "function": {**fn, "arguments": _json_text(fn["arguments"], text)}}


_SIGNED = ("thinking", "redacted_thinking")    # Anthropic checks their signatures: left as they are


def _json_text(raw: str, text) -> str:
    """Tool-call arguments with their string values redacted, still valid JSON when they were."""
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return text(raw)

    def walk(v):
        if isinstance(v, str):
            return text(v)
        if isinstance(v, list):
            return [walk(x) for x in v]
        if isinstance(v, dict):
            return {k: walk(x) for k, x in v.items()}
        return v
    return orjson.dumps(walk(value)).decode()


@functools.lru_cache(maxsize=16)
def redactor(custom: tuple[tuple[str, str], ...] = ()) -> Redactor:
    """The shared Redactor for a list of admin patterns ((name, regex), ...)."""
    return Redactor(custom)


def pattern_tuple(patterns) -> tuple[tuple[str, str], ...]:
    """The stored setting (a list of {name, pattern}) as redactor() takes it."""
    return tuple((p["name"], p["pattern"]) for p in patterns or () if isinstance(p, dict))


def check_pattern(name: str, pattern: str) -> str | None:
    """Why an admin pattern cannot be saved, or None. Refused: names that are not identifiers or
    shadow a built-in kind, invalid or overlong expressions, expressions that match the empty
    string, and the shapes that backtrack catastrophically (a repeat inside a repeat, a repeated
    alternation, a back-reference)."""
    if not _NAME.match(name or ""):
        return "Name it with letters, digits and _ (up to 32, starting with a letter)."
    if name.upper() in KINDS:
        return f"{name.upper()} is built in already."
    if not pattern or len(pattern) > MAX_PATTERN_CHARS:
        return f"Give an expression of 1 to {MAX_PATTERN_CHARS} characters."
    try:
        tree = sre_parse.parse(pattern)
        regex.compile(pattern)
    except (sre_constants.error, regex.error) as e:
        return f"Not a valid regular expression: {e}."
    problem = _backtracking(tree, inside_repeat=False)
    if problem:
        return f"Refused: {problem} can take exponential time on some inputs."
    if tree.getwidth()[0] == 0:
        return "The expression can match empty text; it must match at least one character."
    return None


_REPEATS = {sre_constants.MAX_REPEAT, sre_constants.MIN_REPEAT, getattr(sre_constants, "POSSESSIVE_REPEAT", None)}


def _backtracking(items, inside_repeat: bool) -> str | None:
    """The first risky construct in a parsed expression, described; None when there is none."""
    for op, arg in items:
        if op in _REPEATS:
            lo, hi, sub = arg
            repeated = hi is sre_constants.MAXREPEAT or hi > 1
            if repeated and inside_repeat:
                return "a repeat inside a repeat, like (a+)+"
            found = _backtracking(sub, inside_repeat or repeated)
            if found:
                return found
        elif op is sre_constants.BRANCH:
            if inside_repeat:
                return "a repeated alternation, like (a|ab)*"
            for branch in arg[1]:
                if found := _backtracking(branch, inside_repeat):
                    return found
        elif op is sre_constants.SUBPATTERN:
            if found := _backtracking(arg[-1], inside_repeat):
                return found
        elif op in (sre_constants.ASSERT, sre_constants.ASSERT_NOT):
            if found := _backtracking(arg[1], inside_repeat):
                return found
        elif op is sre_constants.GROUPREF or op is sre_constants.GROUPREF_EXISTS:
            return "a back-reference"
        elif op is getattr(sre_constants, "ATOMIC_GROUP", None):
            if found := _backtracking(arg, inside_repeat):
                return found
    return None


def parse_patterns(text: str) -> tuple[list[dict], str | None]:
    """Admin patterns from the settings form, one `NAME = regex` a line, and the first problem
    (naming its line) or None."""
    out: list[dict] = []
    seen: set[str] = set()
    lines = [(i, line.strip()) for i, line in enumerate((text or "").splitlines(), 1)]
    for number, line in lines:
        if not line or line.startswith("#"):
            continue
        name, sep, pattern = line.partition("=")
        name, pattern = name.strip(), pattern.strip()
        problem = "write NAME = regular expression" if not sep else check_pattern(name, pattern)
        if problem is None and name.upper() in seen:
            problem = f"{name.upper()} is defined twice."
        if problem:
            return out, f"Line {number}: {problem}"
        seen.add(name.upper())
        out.append({"name": name.upper(), "pattern": pattern})
    if len(out) > MAX_PATTERNS:
        return out, f"At most {MAX_PATTERNS} patterns."
    return out, None


def check_patterns(patterns) -> str | None:
    """The first problem of a stored pattern list (as the setting holds it), or None."""
    if not isinstance(patterns, list):
        return "Patterns must be a list."
    if len(patterns) > MAX_PATTERNS:
        return f"At most {MAX_PATTERNS} patterns."
    for p in patterns:
        if not isinstance(p, dict) or set(p) != {"name", "pattern"}:
            return "Each pattern needs a name and a pattern."
        if problem := check_pattern(p["name"], p["pattern"]):
            return f"{p['name']}: {problem}"
    return None


def patterns_text(patterns) -> str:
    """The stored patterns as the settings form shows them."""
    return "\n".join(f"{name} = {pattern}" for name, pattern in pattern_tuple(patterns))
