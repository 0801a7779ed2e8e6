"""OpenAI (and Azure OpenAI): chat completions, embeddings, the model list."""
from __future__ import annotations

import base64
import struct
import time
from typing import Iterator

import orjson

from gateway.mock_upstream.answers import (DEFAULT_DIMENSIONS, Answer, count_words, embedding,
                                           last_user_text, make_answer, new_id, text_of)
from gateway.mock_upstream.base import Call, Result, Vendor, json_result

MODELS = ("echo", "gpt-4o-mini", "text-embedding-3-small")
# A model whose name contains "reason" thinks aloud first, as DeepSeek, Qwen and Doubao answer:
# in `reasoning_content`, beside `content` (not counted in the mock's usage).
THINKING = "Let me think this through."

_TYPES = {400: "invalid_request_error", 401: "invalid_request_error",
          403: "invalid_request_error", 404: "invalid_request_error",
          429: "rate_limit_exceeded"}
_CODES = {401: "invalid_api_key", 404: "model_not_found", 429: "rate_limit_exceeded"}


def error(status: int, message: str) -> dict:
    """OpenAI's error body for `status`."""
    type_ = _TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    return {"error": {"message": message, "type": type_, "param": None,
                      "code": _CODES.get(status)}}


def authorized(environ: dict, query: dict) -> bool:
    """A bearer token, or Azure's api-key header."""
    auth = environ.get("HTTP_AUTHORIZATION", "")
    return bool(auth[7:].strip()) if auth[:7].lower() == "bearer " else bool(
        environ.get("HTTP_API_KEY"))


def text_frame(text: str) -> bytes:
    """One chat.completion.chunk carrying `text`."""
    chunk = {"id": "chatcmpl-big", "object": "chat.completion.chunk", "created": 0, "model": "mock",
             "choices": [{"index": 0, "delta": {"content": text}, "logprobs": None, "finish_reason": None}]}
    return b"data: " + orjson.dumps(chunk) + b"\n\n"


VENDOR = Vendor(error, authorized, 401, "Incorrect API key provided: missing bearer token.",
                b"data: {not json\n\n", text_frame)


def _tool(body: dict) -> str | None:
    """The tool to call, or None when the model should answer in text."""
    tools = body.get("tools")
    messages = body.get("messages") or []
    choice = body.get("tool_choice")
    if not tools or choice == "none" or not messages or messages[-1].get("role") != "user":
        return None
    if isinstance(choice, dict):
        return (choice.get("function") or choice).get("name")
    return (tools[0].get("function") or tools[0]).get("name")


def _answer(body: dict) -> Answer:
    messages = body.get("messages") or []
    texts = [text_of(m.get("content")) for m in messages]
    limit = body.get("max_completion_tokens") or body.get("max_tokens")
    json_mode = (body.get("response_format") or {}).get("type") in ("json_object", "json_schema")
    return make_answer(texts, last_user_text(messages, texts), limit, _tool(body), json_mode)


def _usage(answer: Answer, n: int) -> dict:
    completion = answer.completion_tokens * n
    return {"prompt_tokens": answer.prompt_tokens, "completion_tokens": completion,
            "total_tokens": answer.prompt_tokens + completion,
            "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0,
                                          "accepted_prediction_tokens": 0,
                                          "rejected_prediction_tokens": 0}}


def _finish(answer: Answer) -> str:
    return "tool_calls" if answer.tool else "length" if answer.truncated else "stop"


def chat(call: Call) -> Result:
    """POST /v1/chat/completions (and Azure's deployment route), whole or streamed."""
    answer = _answer(call.body)
    n = call.body.get("n") or 1
    if call.body.get("stream"):
        usage = (call.body.get("stream_options") or {}).get("include_usage")
        return Result(frames=_frames(call.model, answer, n, bool(usage)),
                      content_type="text/event-stream; charset=utf-8")
    if answer.tool:
        message = {"role": "assistant", "content": None, "refusal": None, "annotations": [],
                   "tool_calls": [{"id": new_id("call_"), "type": "function",
                                   "function": {"name": answer.tool,
                                                "arguments": answer.arguments}}]}
    else:
        message = {"role": "assistant", "content": answer.text, "refusal": None,
                   "annotations": []}
        if "reason" in call.model:
            message["reasoning_content"] = THINKING
    choices = [{"index": i, "message": message, "logprobs": None,
                "finish_reason": _finish(answer)} for i in range(n)]
    return json_result({"id": new_id("chatcmpl-"), "object": "chat.completion",
                        "created": int(time.time()), "model": call.model,
                        "choices": choices, "usage": _usage(answer, n),
                        "service_tier": "default", "system_fingerprint": "fp_mock"})


def _frames(model: str, answer: Answer, n: int,
            include_usage: bool) -> Iterator[tuple[bytes, bool]]:
    head = {"id": new_id("chatcmpl-"), "object": "chat.completion.chunk",
            "created": int(time.time()), "model": model, "service_tier": "default",
            "system_fingerprint": "fp_mock"}
    if include_usage:
        head["usage"] = None

    def chunk(index, delta, finish=None):
        choice = {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}
        return b"data: " + orjson.dumps({**head, "choices": [choice]}) + b"\n\n"

    for i in range(n):
        if answer.tool:
            call = {"index": 0, "id": new_id("call_"), "type": "function",
                    "function": {"name": answer.tool, "arguments": ""}}
            yield chunk(i, {"role": "assistant", "content": None, "tool_calls": [call],
                            "refusal": None}), False
        else:
            yield chunk(i, {"role": "assistant", "content": "", "refusal": None}), False
    if answer.tool:
        for piece in answer.argument_pieces():
            for i in range(n):
                yield chunk(i, {"tool_calls": [{"index": 0,
                                                "function": {"arguments": piece}}]}), True
    if "reason" in model and not answer.tool:
        for word in THINKING.split(" "):
            for i in range(n):
                yield chunk(i, {"content": None, "reasoning_content": word + " "}), True
    for word in answer.words:
        for i in range(n):
            yield chunk(i, {"content": word}), True
    for i in range(n):
        yield chunk(i, {}, _finish(answer)), False
    if include_usage:
        final = {**head, "choices": [], "usage": _usage(answer, n)}
        yield b"data: " + orjson.dumps(final) + b"\n\n", False
    yield b"data: [DONE]\n\n", False


def embeddings(call: Call) -> Result:
    """POST /v1/embeddings: float or base64 vectors."""
    inputs = call.body.get("input")
    if isinstance(inputs, str) or (isinstance(inputs, list) and inputs
                                   and isinstance(inputs[0], int)):
        inputs = [inputs]   # one string, or one pre-tokenised input
    if not isinstance(inputs, list) or not inputs:
        return json_result(error(400, "'input' is required"), 400)
    texts = [x if isinstance(x, str) else " ".join(map(str, x)) for x in inputs]
    dimensions = call.body.get("dimensions") or DEFAULT_DIMENSIONS
    as_base64 = call.body.get("encoding_format") == "base64"
    data = []
    for i, text in enumerate(texts):
        vector = embedding(text, dimensions)
        if as_base64:
            vector = base64.b64encode(struct.pack(f"<{dimensions}f", *vector)).decode()
        data.append({"object": "embedding", "index": i, "embedding": vector})
    tokens = sum(count_words(t) for t in texts)
    return json_result({"object": "list", "data": data, "model": call.model,
                        "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})


def models(call: Call) -> Result:
    """GET /v1/models."""
    return json_result({"object": "list", "data": [
        {"id": m, "object": "model", "created": 1700000000, "owned_by": "mock"}
        for m in MODELS]})
