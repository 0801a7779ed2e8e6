"""OpenAI chat answers back in Anthropic Messages form: a whole chat.completion, or the SSE frames
of routing.stream.open_stream as Anthropic's named stream events."""
from __future__ import annotations

import os
from typing import Iterator

import orjson

from gateway.errors import anthropic_error
from gateway.providers.anthropic_messages import FINISH_REASONS
from gateway.services.api_request import NativeBytes

# chat finish_reason -> stop_reason: FINISH_REASONS read backwards, one Anthropic name for each.
STOP_REASONS = {chat: ours for ours, chat in FINISH_REASONS.items()
                if ours in ("end_turn", "max_tokens", "tool_use", "refusal")}
STOP_REASONS["function_call"] = "tool_use"


def _message_id(chat_id) -> str:
    """msg_…: the upstream's own id when it was one (Anthropic through the outbound adapter)."""
    rest = str(chat_id or "").removeprefix("chatcmpl-")
    if rest.startswith("msg_"):
        return rest
    return "msg_" + (rest or os.urandom(12).hex())


def usage_of(usage: dict | None, input_tokens: int = 0) -> dict:
    """OpenAI usage as Anthropic's: its input_tokens leave out the cached part."""
    usage = usage or {}
    cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0
    prompt = usage.get("prompt_tokens")
    return {"input_tokens": max((prompt if prompt is not None else input_tokens) - cached, 0),
            "output_tokens": usage.get("completion_tokens") or 0,
            "cache_creation_input_tokens": 0, "cache_read_input_tokens": cached}


def _input(arguments) -> dict:
    """Tool arguments as the object Anthropic's tool_use.input is; {} when they are no object."""
    try:
        value = orjson.loads(arguments or "{}")
    except (orjson.JSONDecodeError, TypeError):
        return {}
    return value if isinstance(value, dict) else {}


def _tool_use_id(call_id) -> str:
    return str(call_id) if call_id else "toolu_" + os.urandom(12).hex()


def from_chat(chat: dict, model: str) -> dict:
    """A chat.completion as a Messages answer naming `model`, the model the client asked for."""
    choice = (chat.get("choices") or [{}])[0]
    message = choice.get("message") or {}
    content = []
    text = message.get("content")
    if isinstance(text, list):      # some upstreams answer in parts
        text = "".join(p.get("text") or "" for p in text if isinstance(p, dict))
    if text:
        content.append({"type": "text", "text": text})
    for call in message.get("tool_calls") or ():
        fn = call.get("function") or {}
        content.append({"type": "tool_use", "id": _tool_use_id(call.get("id")), "name": fn.get("name"),
                        "input": _input(fn.get("arguments"))})
    stop = STOP_REASONS.get(choice.get("finish_reason") or "", "end_turn")
    if message.get("tool_calls"):
        stop = "tool_use"
    return {"id": _message_id(chat.get("id")), "type": "message", "role": "assistant", "model": model,
            "content": content, "stop_reason": stop, "stop_sequence": None,
            "usage": usage_of(chat.get("usage"))}


def _event(name: str, data: dict) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


PING = _event("ping", {"type": "ping"})


class _Blocks:
    """The content blocks streamed so far: Anthropic sends one block at a time, start to stop."""

    def __init__(self):
        self.count = 0
        self.open: int | None = None            # the block now open, if any
        self.kind: str | None = None
        self.tools: dict[int, int] = {}         # chat tool call index -> block index

    def start(self, block: dict) -> list[bytes]:
        out = self.stop()
        self.open, self.kind = self.count, block["type"]
        self.count += 1
        return out + [_event("content_block_start", {"type": "content_block_start", "index": self.open,
                                                     "content_block": block})]

    def stop(self) -> list[bytes]:
        if self.open is None:
            return []
        index, self.open, self.kind = self.open, None, None
        return [_event("content_block_stop", {"type": "content_block_stop", "index": index})]

    def delta(self, index: int, delta: dict) -> bytes:
        return _event("content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta})

    def text(self, text: str) -> list[bytes]:
        out = [] if self.kind == "text" else self.start({"type": "text", "text": ""})
        return out + [self.delta(self.open, {"type": "text_delta", "text": text})]

    def tool(self, call: dict) -> list[bytes]:
        fn = call.get("function") or {}
        index = call.get("index", 0)
        out = []
        if index not in self.tools:
            out = self.start({"type": "tool_use", "id": _tool_use_id(call.get("id")),
                              "name": fn.get("name") or "", "input": {}})
            self.tools[index] = self.open
        if fn.get("arguments"):
            out.append(self.delta(self.tools[index], {"type": "input_json_delta",
                                                      "partial_json": fn["arguments"]}))
        return out


def to_events(frames: Iterator[bytes], model: str, input_tokens: int) -> Iterator[bytes]:
    """open_stream's chat SSE frames as Anthropic stream events: message_start, the content
    blocks, message_delta (stop_reason, usage), message_stop; keepalives become pings and a
    failure an `error` event. `input_tokens` (the estimate) fills message_start until the
    upstream's count arrives in message_delta. Frames passed through from an Anthropic
    deployment (NativeBytes) go out as they are. Closes `frames` however it ends, so a client
    that leaves still reaches the inner stream and its usage record."""
    blocks = _Blocks()
    started = False
    stop, usage = None, None
    try:
        for frame in frames:
            if isinstance(frame, NativeBytes):      # passed through: already Anthropic's event
                yield frame
                continue
            if not frame.startswith(b"data: "):
                yield PING          # a keepalive comment
                continue
            payload = frame[6:].strip()
            if payload == b"[DONE]":
                if not started:
                    yield _start("msg_" + os.urandom(12).hex(), model, input_tokens)
                yield from blocks.stop()
                if blocks.tools and stop in (None, "end_turn"):
                    stop = "tool_use"       # some upstreams call tools but say "stop"
                yield _event("message_delta", {"type": "message_delta",
                                               "delta": {"stop_reason": stop or "end_turn", "stop_sequence": None},
                                               "usage": usage_of(usage, input_tokens)})
                yield _event("message_stop", {"type": "message_stop"})
                return
            chunk = orjson.loads(payload)
            if "error" in chunk:
                err = chunk["error"] or {}
                yield _event("error", anthropic_error(None, err.get("type"), err.get("message") or "error"))
                return
            if not started:
                started = True
                yield _start(_message_id(chunk.get("id")), model, input_tokens)
                yield PING
            if chunk.get("usage"):
                usage = chunk["usage"]
            for choice in chunk.get("choices") or ():
                delta = choice.get("delta") or {}
                if delta.get("content"):
                    yield from blocks.text(delta["content"])
                for call in delta.get("tool_calls") or ():
                    yield from blocks.tool(call)
                if choice.get("finish_reason"):
                    stop = STOP_REASONS.get(choice["finish_reason"], "end_turn")
                    yield from blocks.stop()
    finally:
        close = getattr(frames, "close", None)
        if close is not None:
            close()


def _start(message_id: str, model: str, input_tokens: int) -> bytes:
    message = {"id": message_id, "type": "message", "role": "assistant", "model": model, "content": [],
               "stop_reason": None, "stop_sequence": None,
               "usage": {"input_tokens": input_tokens, "output_tokens": 0,
                         "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}}
    return _event("message_start", {"type": "message_start", "message": message})
