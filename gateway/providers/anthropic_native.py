"""Anthropic Messages passed through as-is: a /v1/messages client's own body goes to an
Anthropic deployment, and the answer comes back untouched but for `model`.

Nothing is translated, so what chat cannot carry survives: cache_control, thinking blocks and
their signatures, documents, citations, server tools, stop_sequence, exact stop reasons and
usage. Usage is still read by the chat adapter's own parsers (anthropic_messages.py), so usage
records, quota settlement and prices see what they always see."""
from __future__ import annotations

import orjson

from gateway.providers import anthropic_messages
from gateway.providers.base import Reply, StreamError, Target, UpstreamRequest, Usage

DIALECTS = frozenset({"messages"})      # the inbound dialects this module sends as-is
FORWARDED_HEADERS = ("anthropic-beta",)     # client headers that reach the upstream; never auth


def native_request(target: Target, body: dict, dialect: str, headers: dict) -> UpstreamRequest | None:
    """The client's Messages body as the request to `target` (its upstream model name put in);
    None when `dialect` is not one this module speaks."""
    if dialect not in DIALECTS:
        return None
    out = {**body, "model": target.model}
    sent = anthropic_messages.headers_for(target)
    for name in FORWARDED_HEADERS:
        if isinstance(headers.get(name), str) and headers[name]:
            sent[name] = headers[name]
    return UpstreamRequest(target.base_url.rstrip("/") + "/messages", sent, orjson.dumps(out))


def capped(body: dict, cap: int) -> dict:
    """`body` asking for at most `cap` answer tokens (a quota's allowance). Thinking goes when
    its budget no longer fits under max_tokens, as the chat adapter does, so the request stays valid."""
    max_tokens = body.get("max_tokens")
    out = dict(body, max_tokens=min(max_tokens, cap) if isinstance(max_tokens, int) else cap)
    thinking = out.get("thinking")
    if isinstance(thinking, dict) and (thinking.get("budget_tokens") or 0) >= out["max_tokens"]:
        del out["thinking"]
    return out


def native_response(data: bytes, target: Target, model: str) -> Reply:
    """The upstream's message as the client gets it, naming `model` (the name it asked for);
    read by the chat parser too, for its usage and the prompt log."""
    chat = anthropic_messages.chat_response(data, target)      # StreamError when it is no message
    obj = orjson.loads(data)
    obj["model"] = model
    return Reply(orjson.dumps(obj), chat.usage, chat=chat.body)


class NativeStream:
    """Passes Anthropic's stream events on (names and data as sent), `model` replaced in
    message_start. The chat adapter's ChatStream reads each event alongside: usage, the end,
    text for estimates, and errors (StreamError), exactly as on the translated path."""

    def __init__(self, target: Target, model: str):
        self._reader = anthropic_messages.ChatStream(target, {})
        self.model = model
        self.chat: list[bytes] = []     # the last event as OpenAI chunks, for the prompt log

    @property
    def usage(self) -> Usage | None:
        return self._reader.usage

    @property
    def done(self) -> bool:
        return self._reader.done

    @property
    def text_chars(self) -> int:
        return self._reader.text_chars

    def feed(self, event: str | None, data: bytes) -> list[bytes]:
        """One upstream event as the SSE frame to send on (always one: pings too)."""
        self.chat = self._reader.feed(event, data)      # validates the JSON; raises on `error`
        obj = orjson.loads(data)
        kind = obj.get("type") if isinstance(obj.get("type"), str) else event
        if kind == "message_start":
            if not isinstance(obj.get("message"), dict):
                raise StreamError("message_start carries no message")
            obj["message"]["model"] = self.model
            data = orjson.dumps(obj)
        elif b"\n" in data:        # a multi-line data field: one line, so the frame stays one event
            data = orjson.dumps(obj)
        name = (event or kind or "message").encode()
        return [b"event: " + name + b"\ndata: " + data + b"\n\n"]
