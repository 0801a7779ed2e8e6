"""Anthropic Messages: POST /v1/messages, whole or as named SSE events."""
from __future__ import annotations

from typing import Iterator

import orjson

from gateway.mock_upstream import openai
from gateway.mock_upstream.answers import Answer, last_user_text, make_answer, new_id, reply_words, text_of
from gateway.mock_upstream.base import Call, Result, Vendor, json_result

_TYPES = {400: "invalid_request_error", 401: "authentication_error",
          403: "permission_error", 404: "not_found_error", 413: "request_too_large",
          429: "rate_limit_error", 500: "api_error", 529: "overloaded_error"}


def error(status: int, message: str) -> dict:
    """Anthropic's error body for `status`."""
    type_ = _TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")
    return {"type": "error", "error": {"type": type_, "message": message}}


def authorized(environ: dict, query: dict) -> bool:
    """An x-api-key header or a bearer token."""
    # The 2.x SDKs send the API key as a bearer token; older clients use x-api-key.
    return bool(environ.get("HTTP_X_API_KEY")) or openai.authorized(environ, query)


def text_frame(text: str) -> bytes:
    """One content_block_delta event carrying `text`."""
    return _event("content_block_delta", {"type": "content_block_delta", "index": 0,
                                          "delta": {"type": "text_delta", "text": text}})


VENDOR = Vendor(error, authorized, 401, "x-api-key header is required",
                b"event: content_block_delta\ndata: {not json\n\n", text_frame)


def _tool(body: dict, last_has_text: bool) -> str | None:
    tools = body.get("tools")
    choice = body.get("tool_choice") or {}
    messages = body.get("messages") or []
    if (not tools or choice.get("type") == "none" or not messages
            or messages[-1].get("role") != "user" or not last_has_text):
        return None
    return choice.get("name") if choice.get("type") == "tool" else tools[0].get("name")


def _answer(body: dict) -> Answer:
    messages = body.get("messages") or []
    texts = [text_of(m.get("content")) for m in messages]
    last_user = last_user_text(messages, texts)
    if body.get("system"):
        texts.append(text_of(body["system"]))
    tool = _tool(body, bool(messages and texts[len(messages) - 1]))
    return make_answer(texts, last_user, body.get("max_tokens"), tool)


def _stop(answer: Answer) -> str:
    if answer.stop_sequence:
        return "stop_sequence"
    return "tool_use" if answer.tool else "max_tokens" if answer.truncated else "end_turn"


def _cache_marks(body: dict) -> int:
    """How many cache_control marks the request carries, anywhere."""
    return orjson.dumps(body).count(b'"cache_control"')


def _usage(answer: Answer, output_tokens: int) -> dict:
    # A prompt with cache_control marks "writes" half of its tokens to the cache.
    cached = answer.prompt_tokens // 2 if answer.cache_marks else 0
    return {"input_tokens": answer.prompt_tokens - cached, "cache_creation_input_tokens": cached,
            "cache_read_input_tokens": 0, "output_tokens": output_tokens}


def _stop_at(answer: Answer, stops) -> None:
    """Cut the reply before the first of the request's stop_sequences it contains."""
    for stop in stops if isinstance(stops, list) else ():
        text = answer.text
        if isinstance(stop, str) and stop and stop in text:
            answer.words = reply_words(text[:text.index(stop)], None)[0]
            answer.stop_sequence = stop
            return


def _thinking(body: dict) -> str | None:
    """The mock's reasoning when the request enables thinking."""
    thinking = body.get("thinking")
    if isinstance(thinking, dict) and thinking.get("type") == "enabled":
        return "Considering the request."
    return None


def messages(call: Call) -> Result:
    """POST /v1/messages. Besides the echo: a thinking block (with a signature) when thinking is
    enabled, stop_sequence when the echo holds one, cache_creation tokens when cache_control is set."""
    answer = _answer(call.body)
    answer.cache_marks = _cache_marks(call.body)
    if not answer.tool:
        _stop_at(answer, call.body.get("stop_sequences"))
    thinking = _thinking(call.body)
    if call.body.get("stream"):
        return Result(frames=_frames(call.model, answer, thinking),
                      content_type="text/event-stream; charset=utf-8")
    if answer.tool:
        content = [{"type": "tool_use", "id": new_id("toolu_"), "name": answer.tool,
                    "input": orjson.loads(answer.arguments)}]
    else:
        content = [{"type": "text", "text": answer.text}]
    if thinking:
        content.insert(0, {"type": "thinking", "thinking": thinking, "signature": SIGNATURE})
    return json_result({"id": new_id("msg_"), "type": "message", "role": "assistant",
                        "model": call.model, "content": content,
                        "stop_reason": _stop(answer), "stop_sequence": answer.stop_sequence,
                        "usage": _usage(answer, answer.completion_tokens)})


SIGNATURE = "mock-signature"


def _event(name: str, data: dict) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


def _thinking_frames(thinking: str) -> Iterator[tuple[bytes, bool]]:
    yield _event("content_block_start", {"type": "content_block_start", "index": 0,
                                         "content_block": {"type": "thinking", "thinking": "", "signature": ""}}), False
    yield _event("content_block_delta", {"type": "content_block_delta", "index": 0,
                                         "delta": {"type": "thinking_delta", "thinking": thinking}}), True
    yield _event("content_block_delta", {"type": "content_block_delta", "index": 0,
                                         "delta": {"type": "signature_delta", "signature": SIGNATURE}}), False
    yield _event("content_block_stop", {"type": "content_block_stop", "index": 0}), False


def _frames(model: str, answer: Answer, thinking: str | None = None) -> Iterator[tuple[bytes, bool]]:
    message = {"id": new_id("msg_"), "type": "message", "role": "assistant", "model": model,
               "content": [], "stop_reason": None, "stop_sequence": None,
               "usage": _usage(answer, 1)}
    yield _event("message_start", {"type": "message_start", "message": message}), False
    index = 0
    if thinking:
        yield from _thinking_frames(thinking)
        index = 1
    if answer.tool:
        block = {"type": "tool_use", "id": new_id("toolu_"), "name": answer.tool, "input": {}}
        deltas = [{"type": "input_json_delta", "partial_json": p}
                  for p in answer.argument_pieces()]
    else:
        block = {"type": "text", "text": ""}
        deltas = [{"type": "text_delta", "text": w} for w in answer.words]
    yield _event("content_block_start",
                 {"type": "content_block_start", "index": index, "content_block": block}), False
    yield _event("ping", {"type": "ping"}), False
    for delta in deltas:
        yield _event("content_block_delta",
                     {"type": "content_block_delta", "index": index, "delta": delta}), True
    yield _event("content_block_stop", {"type": "content_block_stop", "index": index}), False
    yield _event("message_delta", {
        "type": "message_delta",
        "delta": {"stop_reason": _stop(answer), "stop_sequence": answer.stop_sequence},
        "usage": {"output_tokens": answer.completion_tokens}}), False
    yield _event("message_stop", {"type": "message_stop"}), False
