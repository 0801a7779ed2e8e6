"""Anthropic Messages wire format: OpenAI chat.completions in, /v1/messages upstream, OpenAI out.

Anthropic differs from OpenAI where it matters here: the system prompt is a top-level field,
roles must alternate user/assistant, tool results travel inside user messages, max_tokens is
required, and streams are typed events (message_start ... message_stop) rather than chunks.
"""
from __future__ import annotations

import time

import orjson

from gateway.errors import InvalidRequest
from gateway.providers.base import (Reply, StreamError, Target, UpstreamFailure, UpstreamRequest, Usage,
                                    requested_model, tool_arguments, tool_call)

API_VERSION = "2023-06-01"
DEFAULT_MAX_TOKENS = 4096       # Anthropic requires max_tokens; OpenAI clients often omit it
JSON_ONLY = "Answer with a single valid JSON object and nothing else: no prose, no code fences."

FINISH_REASONS = {"end_turn": "stop", "stop_sequence": "stop", "pause_turn": "stop",
                  "max_tokens": "length", "model_context_window_exceeded": "length",
                  "tool_use": "tool_calls", "refusal": "content_filter"}
TOOL_CHOICES = {"auto": "auto", "none": "none", "required": "any"}


def headers_for(target: Target) -> dict[str, str]:
    """Anthropic's auth, version and content-type headers for `target`."""
    return {"x-api-key": target.api_key,
            "anthropic-version": target.options.get("anthropic_version") or API_VERSION,
            "content-type": "application/json"}


def usage_from(obj: dict | None) -> Usage | None:
    """Read an Anthropic `usage` object; None when absent.

    Anthropic's input_tokens excludes cached input, OpenAI's prompt_tokens includes it."""
    if not obj:
        return None
    cache_read = obj.get("cache_read_input_tokens") or 0
    prompt = (obj.get("input_tokens") or 0) + cache_read + (obj.get("cache_creation_input_tokens") or 0)
    return Usage(prompt_tokens=prompt, completion_tokens=obj.get("output_tokens") or 0,
                 cached_tokens=cache_read)


def _openai_usage(usage: Usage) -> dict:
    return {"prompt_tokens": usage.prompt_tokens, "completion_tokens": usage.completion_tokens,
            "total_tokens": usage.total_tokens,
            "prompt_tokens_details": {"cached_tokens": usage.cached_tokens}}


def _finish_reason(stop_reason: str | None) -> str:
    return FINISH_REASONS.get(stop_reason or "", "stop")


def _text_of(content) -> str:
    """Plain text of an OpenAI message content: a string or a list of text parts."""
    if isinstance(content, str):
        return content
    return "".join(p.get("text") or "" for p in content or () if p.get("type") == "text")


def _image_block(part: dict) -> dict:
    image = part.get("image_url")
    url = image.get("url") if isinstance(image, dict) else image
    if not isinstance(url, str):
        raise InvalidRequest("image_url part has no url", param="messages")
    if url.startswith("data:"):
        header, _, data = url.partition(",")
        media_type, _, encoding = header[5:].partition(";")
        if encoding != "base64" or not data:
            raise InvalidRequest("image data URLs must be base64-encoded", param="messages")
        return {"type": "image", "source": {"type": "base64", "media_type": media_type, "data": data}}
    if url.startswith(("http://", "https://")):
        return {"type": "image", "source": {"type": "url", "url": url}}
    raise InvalidRequest("image_url must be an http(s) or data: URL", param="messages")


def _content_blocks(content) -> list[dict]:
    """OpenAI content (string or parts) -> Anthropic text/image blocks; empty text is dropped
    because Anthropic rejects empty text blocks."""
    if content is None:
        return []
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    blocks = []
    for part in content:
        kind = part.get("type")
        if kind == "text":
            if part.get("text"):
                blocks.append({"type": "text", "text": part["text"]})
        elif kind == "image_url":
            blocks.append(_image_block(part))
        else:
            raise InvalidRequest(f"content part type {kind!r} is not supported for this model",
                                 param="messages")
    return blocks


def _tool_use_block(call: dict) -> dict:
    fn = call.get("function") or {}
    return {"type": "tool_use", "id": call.get("id"), "name": fn.get("name"), "input": tool_arguments(call)}


def _tool_result_block(msg: dict) -> dict:
    block = {"type": "tool_result", "tool_use_id": msg.get("tool_call_id")}
    content = msg.get("content")
    if isinstance(content, str):
        if content:
            block["content"] = content
    elif content:
        block["content"] = _content_blocks(content)
    return block


def _turn(msg: dict) -> tuple[str, list[dict]]:
    """One OpenAI message -> (Anthropic role, content blocks)."""
    role = msg.get("role")
    if role == "user":
        return "user", _content_blocks(msg.get("content"))
    if role == "assistant":
        blocks = _content_blocks(msg.get("content"))
        return "assistant", blocks + [_tool_use_block(c) for c in msg.get("tool_calls") or ()]
    if role == "tool":
        return "user", [_tool_result_block(msg)]
    raise InvalidRequest(f"message role {role!r} is not supported", param="messages")


def _messages(messages: list[dict]) -> tuple[list[str], list[dict]]:
    """Split out system text and merge consecutive same-role turns (Anthropic wants alternation)."""
    system, turns = [], []
    for msg in messages:
        if msg.get("role") in ("system", "developer"):
            if text := _text_of(msg.get("content")):
                system.append(text)
            continue
        role, blocks = _turn(msg)
        if not blocks:
            continue
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": role, "content": blocks})
    for turn in turns:
        if turn["role"] == "user":
            # Anthropic wants a user turn's tool results before any text in it.
            turn["content"].sort(key=lambda b: b["type"] != "tool_result")
    return system, turns


def _tools(tools: list[dict]) -> list[dict]:
    out = []
    for tool in tools:
        fn = tool.get("function") if tool.get("type") == "function" else None
        if not fn or not fn.get("name"):
            raise InvalidRequest("only function tools are supported for this model", param="tools")
        spec = {"name": fn["name"],
                "input_schema": fn.get("parameters") or {"type": "object", "properties": {}}}
        if fn.get("description"):
            spec["description"] = fn["description"]
        out.append(spec)
    return out


def _tool_choice(choice, parallel: bool | None) -> dict | None:
    if isinstance(choice, dict):
        name = (choice.get("function") or {}).get("name")
        if not name:
            raise InvalidRequest("tool_choice names no function", param="tool_choice")
        out = {"type": "tool", "name": name}
    elif choice in TOOL_CHOICES:
        out = {"type": TOOL_CHOICES[choice]}
    elif choice is None:
        out = {"type": "auto"} if parallel is False else None
    else:
        raise InvalidRequest(f"tool_choice {choice!r} is not supported", param="tool_choice")
    if out and parallel is False and out["type"] != "none":
        out["disable_parallel_tool_use"] = True
    return out


def _json_instruction(response_format: dict | None) -> str | None:
    """Anthropic has no JSON mode; asking in the system prompt is the best we can do."""
    kind = (response_format or {}).get("type")
    if kind == "json_object":
        return JSON_ONLY
    if kind == "json_schema":
        schema = (response_format.get("json_schema") or {}).get("schema")
        if schema:
            return f"{JSON_ONLY} It must match this JSON schema: {orjson.dumps(schema).decode()}"
        return JSON_ONLY
    return None


def _extras(extras, max_tokens: int) -> dict:
    """What chat cannot say but a Messages client asked for (gateway/proxy/dialects/messages.py):
    top_k, and thinking while its budget still fits under max_tokens (which a quota may lower)."""
    if not isinstance(extras, dict):
        return {}
    out = {"top_k": extras["top_k"]} if isinstance(extras.get("top_k"), int) else {}
    thinking = extras.get("thinking")
    if isinstance(thinking, dict) and (thinking.get("budget_tokens") or 0) < max_tokens:
        out["thinking"] = thinking
    return out


def chat_request(target: Target, body: dict, stream: bool) -> UpstreamRequest:
    """An OpenAI chat.completions body as an Anthropic /messages request."""
    if (body.get("n") or 1) > 1:
        raise InvalidRequest("Anthropic models return one choice per request; n must be 1", param="n")
    system, turns = _messages(body.get("messages") or [])
    if instruction := _json_instruction(body.get("response_format")):
        system.append(instruction)
    out: dict = {"model": target.model, "messages": turns,
                 "max_tokens": body.get("max_completion_tokens") or body.get("max_tokens")
                 or DEFAULT_MAX_TOKENS}
    if system:
        out["system"] = "\n\n".join(system)
    if body.get("temperature") is not None:
        out["temperature"] = min(body["temperature"], 1.0)   # OpenAI allows up to 2, Anthropic 1
    if body.get("top_p") is not None:
        out["top_p"] = body["top_p"]
    stop = body.get("stop")
    if stop:
        out["stop_sequences"] = [stop] if isinstance(stop, str) else list(stop)
    if body.get("user"):
        out["metadata"] = {"user_id": str(body["user"])}
    if body.get("tools"):
        out["tools"] = _tools(body["tools"])
        choice = _tool_choice(body.get("tool_choice"), body.get("parallel_tool_calls"))
        if choice:
            out["tool_choice"] = choice
    out.update(_extras(body.get("anthropic"), out["max_tokens"]))
    if stream:
        out["stream"] = True
    url = target.base_url.rstrip("/") + "/messages"
    return UpstreamRequest(url, headers_for(target), orjson.dumps(out))


def _tool_call(block: dict) -> dict:
    return tool_call(block.get("id"), block.get("name"), block.get("input"))


def chat_response(data: bytes, target: Target, body: dict | None = None) -> Reply:
    """An Anthropic message as an OpenAI chat.completion."""
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError as e:
        raise StreamError(f"upstream sent invalid JSON: {e}") from None
    if not isinstance(obj, dict) or not isinstance(obj.get("content"), list):
        raise StreamError("upstream answer has no content")
    blocks = [b for b in obj["content"] if isinstance(b, dict)]
    text = "".join(b.get("text") or "" for b in blocks if b.get("type") == "text")
    calls = [_tool_call(b) for b in blocks if b.get("type") == "tool_use"]
    message: dict = {"role": "assistant", "content": text if text or not calls else None, "refusal": None}
    if calls:
        message["tool_calls"] = calls
    usage = usage_from(obj.get("usage"))
    out = {"id": f"chatcmpl-{obj.get('id') or ''}", "object": "chat.completion",
           "created": int(time.time()), "model": requested_model(body, obj.get("model"), target),
           "choices": [{"index": 0, "message": message, "logprobs": None,
                        "finish_reason": _finish_reason(obj.get("stop_reason"))}]}
    if usage:
        out["usage"] = _openai_usage(usage)
    return Reply(orjson.dumps(out), usage)


class ChatStream:
    """Turns Anthropic stream events into OpenAI chunks, all under one id, created and model."""

    def __init__(self, target: Target, body: dict):
        self.client_wants_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        self.usage: Usage | None = None
        self.done = False
        self.text_chars = 0
        self.id = "chatcmpl-"
        self.model = requested_model(body, None, target)
        self.asked = bool(body.get("model"))
        self.created = int(time.time())
        self._raw_usage: dict = {}          # Anthropic usage so far; message_delta counts are cumulative
        self._tool_index: dict[int, int] = {}   # content block index -> OpenAI tool call index

    def _chunk(self, delta: dict, finish_reason: str | None = None) -> bytes:
        return orjson.dumps({"id": self.id, "object": "chat.completion.chunk",
                             "created": self.created, "model": self.model,
                             "choices": [{"index": 0, "delta": delta, "logprobs": None,
                                          "finish_reason": finish_reason}]})

    def _take_usage(self, obj: dict | None) -> None:
        if obj:
            self._raw_usage.update({k: v for k, v in obj.items() if v is not None})
            self.usage = usage_from(self._raw_usage)

    def feed(self, event: str | None, data: bytes) -> list[bytes]:
        try:
            obj = orjson.loads(data)
        except orjson.JSONDecodeError:
            raise StreamError("upstream sent a malformed stream event") from None
        if not isinstance(obj, dict):
            raise StreamError("upstream sent a malformed stream event")
        kind = obj.get("type") or event
        handler = self.HANDLERS.get(kind) if isinstance(kind, str) else None
        # ping, content_block_stop and event types Anthropic adds later carry nothing to send.
        return handler(self, obj) if handler else []

    def _on_error(self, obj: dict) -> list[bytes]:
        err = obj.get("error")
        message = err.get("message") if isinstance(err, dict) else err
        raise StreamError(str(message or "upstream reported an error mid-stream"))

    def _on_message_start(self, obj: dict) -> list[bytes]:
        msg = obj.get("message")
        if not isinstance(msg, dict):
            raise StreamError("message_start carries no message")
        self.id = f"chatcmpl-{msg.get('id') or ''}"
        if not self.asked:
            self.model = msg.get("model") or self.model
        self._take_usage(msg.get("usage"))
        return [self._chunk({"role": "assistant", "content": "", "refusal": None})]

    def _on_content_block_start(self, obj: dict) -> list[bytes]:
        block = obj.get("content_block") or {}
        if block.get("type") == "tool_use":
            index = self._tool_index[obj.get("index")] = len(self._tool_index)
            call = {"index": index, "id": block.get("id"), "type": "function",
                    "function": {"name": block.get("name"), "arguments": ""}}
            return [self._chunk({"tool_calls": [call]})]
        if block.get("type") == "text" and block.get("text"):
            self.text_chars += len(block["text"])
            return [self._chunk({"content": block["text"]})]
        return []

    def _on_content_block_delta(self, obj: dict) -> list[bytes]:
        delta = obj.get("delta") or {}
        kind = delta.get("type")
        if kind == "text_delta" and delta.get("text"):
            self.text_chars += len(delta["text"])
            return [self._chunk({"content": delta["text"]})]
        if kind == "input_json_delta" and delta.get("partial_json"):
            index = self._tool_index.get(obj.get("index"))
            if index is None:
                raise StreamError("tool input arrived for a block that is not a tool call")
            self.text_chars += len(delta["partial_json"])
            call = {"index": index, "function": {"arguments": delta["partial_json"]}}
            return [self._chunk({"tool_calls": [call]})]
        return []       # thinking, signature and citation deltas have no chat.completions form

    def _on_message_delta(self, obj: dict) -> list[bytes]:
        self._take_usage(obj.get("usage"))
        stop_reason = (obj.get("delta") or {}).get("stop_reason")
        return [self._chunk({}, _finish_reason(stop_reason))] if stop_reason else []

    def _on_message_stop(self, obj: dict) -> list[bytes]:
        self.done = True
        if not (self.client_wants_usage and self.usage):
            return []
        return [orjson.dumps({"id": self.id, "object": "chat.completion.chunk",
                              "created": self.created, "model": self.model, "choices": [],
                              "usage": _openai_usage(self.usage)})]

    HANDLERS = {"error": _on_error, "message_start": _on_message_start,
                "content_block_start": _on_content_block_start,
                "content_block_delta": _on_content_block_delta,
                "message_delta": _on_message_delta, "message_stop": _on_message_stop}


def _no_embeddings() -> InvalidRequest:
    return InvalidRequest("Anthropic does not offer embeddings; pick an embeddings model",
                          param="model")


def embeddings_request(target: Target, body: dict) -> UpstreamRequest:
    """Always refuses: Anthropic has no embeddings endpoint."""
    raise _no_embeddings()


def embeddings_response(data: bytes, target: Target, body: dict | None = None) -> Reply:
    """Always refuses: Anthropic has no embeddings endpoint."""
    raise _no_embeddings()


def error_message(status: int, data: bytes) -> UpstreamFailure:
    """The vendor's own error message, from {"type": "error", "error": {"type", "message"}}."""
    try:
        err = orjson.loads(data).get("error")
    except (orjson.JSONDecodeError, AttributeError):
        err = None
    if isinstance(err, dict) and err.get("message"):
        return UpstreamFailure(str(err["message"]), str(err.get("type") or "upstream_error"))
    return UpstreamFailure(f"upstream returned HTTP {status}")
