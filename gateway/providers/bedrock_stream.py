"""Bedrock ConverseStream: AWS event-stream frames (application/vnd.amazon.eventstream, not SSE)
split by botocore's own decoder, and the Converse stream events turned into OpenAI chunks."""
from __future__ import annotations

import secrets
import time
from typing import Iterator

import orjson
from botocore.eventstream import EventStreamBuffer, ParserError

from gateway.providers.base import StreamError, Target, Usage, requested_model
from gateway.providers.sse import Event, EventTooLarge

EXCEPTION = "exception:"    # prefix of the event name events() gives an in-stream exception
FINISH_REASONS = {"end_turn": "stop", "stop_sequence": "stop", "max_tokens": "length",
                  "model_context_window_exceeded": "length", "tool_use": "tool_calls",
                  "content_filtered": "content_filter", "guardrail_intervened": "content_filter"}


def events(chunks: Iterator[bytes], max_event_bytes: int) -> Iterator[Event]:
    """Split an event stream into (event type, JSON payload) pairs, as sse_events does for SSE.
    An exception frame comes out as ("exception:<type>", payload); a frame over the cap or a
    broken frame (bad length, bad CRC) raises."""
    buffer = EventStreamBuffer()
    pending = 0         # bytes received and not yet part of a whole message
    for chunk in chunks:
        buffer.add_data(chunk)
        pending += len(chunk)
        try:
            for message in buffer:
                pending -= message.prelude.total_length
                yield _event(message)
        except ParserError as e:
            raise StreamError(f"upstream sent a broken event-stream frame ({type(e).__name__})") from None
        if pending > max_event_bytes:
            raise EventTooLarge(max_event_bytes)
    if pending:
        raise StreamError("upstream ended the stream inside an event-stream frame")


def _event(message) -> Event:
    headers = message.headers
    kind = headers.get(":message-type")
    if kind == "event":
        return str(headers.get(":event-type") or ""), message.payload
    if kind == "exception":
        return EXCEPTION + str(headers.get(":exception-type") or "exception"), message.payload
    # ":message-type: error" carries its text in headers, not in the payload
    text = headers.get(":error-message") or headers.get(":error-code") or "stream error"
    return EXCEPTION + str(headers.get(":error-code") or "error"), orjson.dumps({"message": text})


def finish_reason(stop_reason: str | None) -> str:
    """Bedrock's stopReason as an OpenAI finish_reason."""
    return FINISH_REASONS.get(stop_reason or "", "stop")


def usage_from(obj: dict | None) -> Usage | None:
    """Read a Converse `usage` object; None when absent.

    Bedrock's inputTokens leaves out cached input, OpenAI's prompt_tokens counts it."""
    if not isinstance(obj, dict) or not obj:
        return None
    cache_read = obj.get("cacheReadInputTokens") or 0
    prompt = (obj.get("inputTokens") or 0) + cache_read + (obj.get("cacheWriteInputTokens") or 0)
    return Usage(prompt_tokens=prompt, completion_tokens=obj.get("outputTokens") or 0,
                 cached_tokens=cache_read)


def openai_usage(usage: Usage) -> dict:
    """A Usage as OpenAI's `usage` object."""
    return {"prompt_tokens": usage.prompt_tokens, "completion_tokens": usage.completion_tokens,
            "total_tokens": usage.total_tokens,
            "prompt_tokens_details": {"cached_tokens": usage.cached_tokens}}


class ChatStream:
    """Turns ConverseStream events into OpenAI chunks, all under one id, created and model.
    The stream is done at `metadata`, which follows messageStop and carries the usage."""

    def __init__(self, target: Target, body: dict):
        self.client_wants_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        self.usage: Usage | None = None
        self.done = False
        self.text_chars = 0
        self.id = f"chatcmpl-{secrets.token_hex(12)}"
        self.model = requested_model(body, None, target)
        self.created = int(time.time())
        self._tool_index: dict[int, int] = {}   # contentBlockIndex -> OpenAI tool call index

    def _chunk(self, delta: dict, finish_reason: str | None = None) -> bytes:
        return orjson.dumps({"id": self.id, "object": "chat.completion.chunk",
                             "created": self.created, "model": self.model,
                             "choices": [{"index": 0, "delta": delta, "logprobs": None,
                                          "finish_reason": finish_reason}]})

    def feed(self, event: str | None, data: bytes) -> list[bytes]:
        try:
            obj = orjson.loads(data) if data else {}
        except orjson.JSONDecodeError:
            raise StreamError("upstream sent a malformed stream event") from None
        if not isinstance(obj, dict):
            raise StreamError("upstream sent a malformed stream event")
        if event and event.startswith(EXCEPTION):
            kind = event[len(EXCEPTION):]
            raise StreamError(f"{kind}: {obj.get('message') or obj.get('Message') or 'no message'}")
        handler = self.HANDLERS.get(event or "")
        return handler(self, obj) if handler else []    # contentBlockStop, later additions

    def _on_message_start(self, obj: dict) -> list[bytes]:
        return [self._chunk({"role": "assistant", "content": "", "refusal": None})]

    def _on_block_start(self, obj: dict) -> list[bytes]:
        use = (obj.get("start") or {}).get("toolUse")
        if not isinstance(use, dict):
            return []
        index = self._tool_index[obj.get("contentBlockIndex")] = len(self._tool_index)
        call = {"index": index, "id": use.get("toolUseId"), "type": "function",
                "function": {"name": use.get("name"), "arguments": ""}}
        return [self._chunk({"tool_calls": [call]})]

    def _on_block_delta(self, obj: dict) -> list[bytes]:
        delta = obj.get("delta") or {}
        if isinstance(delta.get("text"), str) and delta["text"]:
            self.text_chars += len(delta["text"])
            return [self._chunk({"content": delta["text"]})]
        use = delta.get("toolUse")
        if isinstance(use, dict) and use.get("input"):
            index = self._tool_index.get(obj.get("contentBlockIndex"))
            if index is None:
                raise StreamError("tool input arrived for a block that is not a tool call")
            self.text_chars += len(use["input"])
            return [self._chunk({"tool_calls": [{"index": index,
                                                 "function": {"arguments": use["input"]}}]})]
        return []       # reasoningContent and citations have no chat.completions form

    def _on_message_stop(self, obj: dict) -> list[bytes]:
        return [self._chunk({}, finish_reason(obj.get("stopReason")))]

    def _on_metadata(self, obj: dict) -> list[bytes]:
        self.usage = usage_from(obj.get("usage")) or self.usage
        self.done = True
        if not (self.client_wants_usage and self.usage):
            return []
        return [orjson.dumps({"id": self.id, "object": "chat.completion.chunk",
                              "created": self.created, "model": self.model, "choices": [],
                              "usage": openai_usage(self.usage)})]

    HANDLERS = {"messageStart": _on_message_start, "contentBlockStart": _on_block_start,
                "contentBlockDelta": _on_block_delta, "messageStop": _on_message_stop,
                "metadata": _on_metadata}
