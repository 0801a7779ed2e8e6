"""Prompts and completions kept with request logs, only while the admin's log_prompts setting
is on, each cut to PROMPT_LOG_MAX_CHARS, redacted as the request's redaction mode says, and
encrypted at rest (Fernet, the provider keys' key). Headers (and so API keys) are never kept."""
from __future__ import annotations

import logging

import orjson
from cryptography.fernet import Fernet, InvalidToken
from flask import Flask

from gateway.services.accounting import redaction
from gateway.services.accounting.redaction import Redactor
from gateway.services.admin import settings

log = logging.getLogger("gateway.prompt_log")
TRUNCATED = " …[truncated]"
SEALED = "gw-enc1:"         # marks an encrypted value; rows stored before encryption have none
UNREADABLE = "[stored encrypted; cannot be decrypted with the current GATEWAY_ENCRYPTION_KEY]"
STORED = ("request_body", "response_text")


def limit(app: Flask) -> int:
    """Characters to keep of a prompt or a completion; 0 while storage is off."""
    if not settings.cached(app, "log_prompts"):
        return 0
    return max(1, int(app.config["PROMPT_LOG_MAX_CHARS"]))


def redactor_for(app: Flask, key_mode: str | None, policy_mode: str | None) -> tuple[str, Redactor | None]:
    """The redaction mode of a request by a key (its own mode) under a policy (its mode), and
    the redactor to apply (None when off); the default and patterns are console settings."""
    mode = redaction.effective_mode(key_mode, policy_mode, settings.cached(app, "redact_default"))
    if mode == redaction.OFF:
        return mode, None
    return mode, redaction.redactor(redaction.pattern_tuple(settings.cached(app, "redact_patterns")))


def clip(text: str, cap: int) -> str:
    return text if len(text) <= cap else text[:cap] + TRUNCATED


def _redacted_clip(text: str, cap: int, redactor: Redactor | None) -> str:
    # Redact before cutting, so an item across the cut is caught whole.
    return clip(redactor.text(text) if redactor is not None else text, cap)


def request_text(body: dict, cap: int, redactor: Redactor | None = None) -> str | None:
    """The chat messages (or embeddings input) as JSON, redacted when a redactor is given."""
    part = body.get("messages") if "messages" in body else body.get("input")
    if part is None:
        return None
    if redactor is not None:
        part = redactor.part(part, budget=cap)
    try:
        raw = orjson.dumps(part)
    except TypeError:
        return None
    # Cut the bytes first: a multi-megabyte body is never decoded whole.
    return clip(raw[:cap * 4].decode("utf-8", "ignore"), cap)


def reply_text(data: bytes, cap: int, redactor: Redactor | None = None) -> str | None:
    """The answer text and tool calls of an OpenAI-shaped chat completion."""
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(obj, dict):
        return None
    parts: list[str] = []
    for choice in obj.get("choices") or ():
        message = choice.get("message") or {}
        content = message.get("content")
        if isinstance(content, list):       # content parts
            content = "".join(p.get("text") or "" for p in content if isinstance(p, dict))
        if content:
            parts.append(str(content))
        for call in message.get("tool_calls") or ():
            fn = call.get("function") or {}
            parts.append(f"[tool call] {fn.get('name')} {fn.get('arguments') or ''}")
    return _redacted_clip("\n\n".join(parts), cap, redactor) if parts else None


class StreamText:
    """Accumulates the text of OpenAI chat chunks as they pass, up to the cap (and a margin, so
    redaction sees an item across the cut whole); stops parsing once full."""

    def __init__(self, cap: int, redactor: Redactor | None = None):
        self.cap = cap
        self.redactor = redactor
        self.parts: list[str] = []
        self.size = 0
        self.full = False

    def add(self, chunk: bytes) -> None:
        if self.full:
            return
        try:
            obj = orjson.loads(chunk)
        except orjson.JSONDecodeError:
            return
        if not isinstance(obj, dict):
            return
        for choice in obj.get("choices") or ():
            delta = choice.get("delta") or {}
            if delta.get("content"):
                self._put(str(delta["content"]))
            for call in delta.get("tool_calls") or ():
                fn = call.get("function") or {}
                if fn.get("name"):
                    self._put(f"\n[tool call] {fn['name']} ")
                if fn.get("arguments"):
                    self._put(str(fn["arguments"]))

    def _put(self, text: str) -> None:
        self.parts.append(text)
        self.size += len(text)
        if self.size > self.cap + 64:
            self.full = True

    def value(self) -> str | None:
        return _redacted_clip("".join(self.parts).lstrip("\n"), self.cap, self.redactor) if self.parts else None


def seal_text(fernet: Fernet, value: str) -> str:
    """`value` encrypted, marked so unseal() knows it."""
    return SEALED + fernet.encrypt(value.encode()).decode()


def seal_rows(fernet: Fernet, rows: list[dict]) -> None:
    """Encrypt the stored prompt and answer of insert rows in place (only rows that have one)."""
    for r in rows:
        for name in STORED:
            value = r.get(name)
            if value is not None:
                r[name] = seal_text(fernet, value)


def unseal(fernet: Fernet, value: str | None) -> str | None:
    """A stored prompt or answer as text: decrypted, or as it is when stored before encryption."""
    if value is None or not value.startswith(SEALED):
        return value
    try:
        return fernet.decrypt(value[len(SEALED):].encode()).decode()
    except InvalidToken:
        log.warning("a stored prompt could not be decrypted: GATEWAY_ENCRYPTION_KEY changed?")
        return UNREADABLE
