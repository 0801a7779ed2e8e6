"""Prompts and completions kept with request logs, only while the admin's log_prompts setting
is on, each cut to PROMPT_LOG_MAX_CHARS. Headers (and so API keys) are never kept."""
from __future__ import annotations

import orjson
from flask import Flask

from gateway.services.admin import settings

TRUNCATED = " …[truncated]"


def limit(app: Flask) -> int:
    """Characters to keep of a prompt or a completion; 0 while storage is off."""
    if not settings.cached(app, "log_prompts"):
        return 0
    return max(1, int(app.config["PROMPT_LOG_MAX_CHARS"]))


def clip(text: str, cap: int) -> str:
    return text if len(text) <= cap else text[:cap] + TRUNCATED


def request_text(body: dict, cap: int) -> str | None:
    """The chat messages (or embeddings input) as JSON."""
    part = body.get("messages") if "messages" in body else body.get("input")
    if part is None:
        return None
    try:
        raw = orjson.dumps(part)
    except TypeError:
        return None
    # Cut the bytes first: a multi-megabyte body is never decoded whole.
    return clip(raw[:cap * 4].decode("utf-8", "ignore"), cap)


def reply_text(data: bytes, cap: int) -> str | None:
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
    return clip("\n\n".join(parts), cap) if parts else None


class StreamText:
    """Accumulates the text of OpenAI chat chunks as they pass, up to the cap; stops parsing
    once full."""

    def __init__(self, cap: int):
        self.cap = cap
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
        if self.size > self.cap:
            self.full = True

    def value(self) -> str | None:
        return clip("".join(self.parts).lstrip("\n"), self.cap) if self.parts else None
