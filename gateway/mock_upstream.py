"""A fake model provider speaking the OpenAI, Anthropic and Gemini wire formats.

Used three ways: as a real HTTP server on 127.0.0.1 by the tests and the benchmark
(`python -m gateway.mock_upstream --port 0` prints `mock-upstream listening on
http://127.0.0.1:PORT`), and in-process by the gateway's `mock` provider, which calls
the WSGI callable `app(environ, start_response)` directly. Importing starts nothing.

Routes:
    POST /v1/chat/completions, /v1/embeddings; GET /v1/models          (OpenAI)
    POST /openai/deployments/{deployment}/chat/completions|embeddings   (Azure OpenAI)
    POST /v1/messages, key in x-api-key or a bearer token               (Anthropic)
    POST /v1beta/models/{model}:generateContent|streamGenerateContent?alt=sse
         |embedContent|batchEmbedContents                               (Gemini)
    /_mock/faults (POST queues, GET lists, DELETE clears), GET /_mock/requests,
    GET /_mock/stats, POST /_mock/reset                                 (control)

Answers are deterministic: "Echo: " + the text of the last user message, cut to
max_tokens words (then finish reason length / max_tokens / MAX_TOKENS). Prompt tokens
are the words of every message + 3 per message; completion tokens are reply words.
Streams send one chunk per word. With tools (and tool choice not "none") and a user
turn last, the answer is a call to the first (or the chosen) tool with arguments
{"query": <last user text>}; JSON mode answers {"echo": <last user text>}.

Fault and pacing directives, in three places (later ones win):
  1. the model name: `base[+directive]...`, e.g. `echo+latency=50+chunk_delay=10`,
     `echo+fail=429+retry_after=2`; `fail-NNN` (also as the whole model name, e.g.
     `fail-500`) is short for `fail=NNN`. An unknown directive after `+` is a 400.
  2. headers: `x-mock-latency-ms: 50`, `x-mock-chunk-delay-ms: 10`,
     `x-mock-fault: fail=429+retry_after=2` (directives joined by `+` or `,`).
  3. the control API: `POST /_mock/faults {"faults": ["fail=500", "reset"], "path": "embed"}`
     queues faults; each matching request (path contains `path`, if given) takes
     the oldest one.

Directives:
    latency=MS        delay the first byte
    chunk_delay=MS    sleep between content chunks of a stream
    fail=STATUS       answer STATUS with the vendor's error body ("mock failure STATUS")
    retry_after=S     add `retry-after: S` (use with fail=429)
    hang              sleep an hour before answering, so client timeouts fire
    reset             close the connection abruptly (RST) without a response
    cut=N             stop after N content chunks by closing the connection abruptly,
                      no terminal event; a non-streaming body is cut in half
    malformed         send `data: {not json` after the first content chunk; a
                      non-streaming body is `{not json`

In-process there is no socket: `reset` and `cut` raise ConnectionResetError from the
response iterator instead. For `reset`, start_response is never called.
"""
from __future__ import annotations

import base64
import errno
import hashlib
import http
import math
import os
import re
import struct
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator
from urllib.parse import parse_qsl

import orjson

_DEFAULT_DIMENSIONS = 8
_REQUEST_LOG_SIZE = 200
_HANG_SECONDS = 3600
_MODELS = ("echo", "gpt-4o-mini", "text-embedding-3-small")
_SECRET_HEADERS = ("authorization", "api-key", "x-api-key", "x-goog-api-key")


# Faults and pacing

@dataclass(slots=True)
class Faults:
    """What to do to one response besides answering it."""
    latency_ms: float = 0
    chunk_delay_ms: float = 0
    fail: int | None = None
    retry_after: str | None = None
    hang: bool = False
    reset: bool = False
    cut: int | None = None
    malformed: bool = False


_FAIL_SHORT = re.compile(r"fail-(\d{3})")
_FLAGS = {"hang", "reset", "malformed"}
_VALUES = {"latency": ("latency_ms", float), "chunk_delay": ("chunk_delay_ms", float),
           "fail": ("fail", int), "retry_after": ("retry_after", str), "cut": ("cut", int)}


def apply_directives(faults: Faults, spec: str) -> None:
    """Set the directives in `spec` ("fail=429+retry_after=2", "+" or "," separated)
    on `faults`; raise ValueError for an unknown or malformed one."""
    for item in re.split(r"[+,\s]+", spec.strip()):
        if not item:
            continue
        name, eq, value = item.partition("=")
        if short := _FAIL_SHORT.fullmatch(item):
            faults.fail = int(short[1])
        elif name in _FLAGS and not eq:
            setattr(faults, name, True)
        elif name in _VALUES and value:
            attr, kind = _VALUES[name]
            try:
                setattr(faults, attr, kind(value))
            except ValueError:
                raise ValueError(f"bad mock directive {item!r}") from None
        else:
            raise ValueError(f"unknown mock directive {item!r}")
    if faults.fail is not None and not 100 <= faults.fail <= 599:
        raise ValueError(f"bad mock status {faults.fail}")


_NO_FAULTS = Faults()


def model_faults(faults: Faults, model: str) -> None:
    """Apply the directives carried by a model name like `echo+latency=50` or `fail-500`."""
    base, _, rest = model.partition("+")
    if short := _FAIL_SHORT.fullmatch(base):
        faults.fail = int(short[1])
    if rest:
        apply_directives(faults, rest)


# The answer, shared by all three formats

_WORD = re.compile(r"\s*\S+(?:\s+$)?")   # leading spaces stay with their word


def text_of(content) -> str:
    """Text of a message: a string, or the joined `text` fields of a list of parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(p["text"] for p in content
                        if isinstance(p, dict) and isinstance(p.get("text"), str))
    return ""


def count_words(text: str) -> int:
    return len(text.split())


def prompt_tokens(texts: list[str]) -> int:
    """Words over all message texts plus 3 per message."""
    return sum(len(t.split()) for t in texts) + 3 * len(texts)


def reply_words(text: str, limit: int | None) -> tuple[list[str], bool]:
    """Split `text` into pieces (one per word) that join back to it; keep at most `limit`.
    Returns the pieces and whether they were cut."""
    words = _WORD.findall(text)
    if limit is not None and len(words) > limit:
        return words[:max(limit, 0)], True
    return words, False


@dataclass(slots=True)
class Answer:
    words: list[str]            # reply pieces, one stream chunk each
    truncated: bool
    prompt_tokens: int
    tool: str | None = None     # the tool to call instead of replying
    arguments: str = ""         # its JSON arguments

    @property
    def text(self) -> str:
        return "".join(self.words)

    @property
    def completion_tokens(self) -> int:
        return count_words(self.arguments) if self.tool else len(self.words)

    def argument_pieces(self) -> tuple[str, str]:
        half = len(self.arguments) // 2
        return self.arguments[:half], self.arguments[half:]


def make_answer(texts: list[str], last_user: str, limit: int | None = None,
                tool: str | None = None, json_mode: bool = False) -> Answer:
    """The deterministic answer to a conversation whose message texts are `texts`."""
    prompt = prompt_tokens(texts)
    if tool:
        arguments = orjson.dumps({"query": last_user}).decode()
        return Answer([], False, prompt, tool, arguments)
    reply = orjson.dumps({"echo": last_user}).decode() if json_mode else "Echo: " + last_user
    words, truncated = reply_words(reply, limit)
    return Answer(words, truncated, prompt)


def embedding(text: str, dimensions: int) -> list[float]:
    """A unit vector derived from a hash of `text`."""
    raw = hashlib.shake_256(text.encode()).digest(2 * dimensions)
    values = [v / 32767.5 - 1.0 for v in struct.unpack(f"<{dimensions}H", raw)]
    norm = math.sqrt(sum(v * v for v in values)) or 1.0
    return [v / norm for v in values]


def _new_id(prefix: str) -> str:
    return prefix + os.urandom(12).hex()


# Request and response plumbing

@dataclass(slots=True)
class Call:
    """One parsed request, as the format handlers see it."""
    environ: dict
    body: dict
    model: str
    action: str = ""            # Gemini method, e.g. "generateContent"
    query: dict = field(default_factory=dict)


@dataclass(slots=True)
class Result:
    """A handler's answer: a whole body, or stream frames flagged as content or framing."""
    status: int = 200
    body: bytes = b""
    frames: Iterable[tuple[bytes, bool]] | None = None
    chunks: Iterator[bytes] | None = None   # what goes out instead of body, once paced
    content_type: str = "application/json"
    headers: list[tuple[str, str]] = field(default_factory=list)


def _json_result(obj, status: int = 200) -> Result:
    return Result(status, orjson.dumps(obj))


_STATUS_LINES = {s.value: f"{s.value} {s.phrase}" for s in http.HTTPStatus}


def _status_line(status: int) -> str:
    return _STATUS_LINES.get(status) or f"{status} Error"


def _abort(environ: dict):
    """Drop the connection abruptly; in-process, just raise."""
    close = environ.get("mock.abort")
    if close is not None:
        close()
    raise ConnectionResetError(errno.ECONNRESET, "mock connection reset")


def _reset(environ: dict) -> Iterator[bytes]:
    _abort(environ)
    yield b""  # pragma: no cover - makes this a generator


def _cut_body(body: bytes, environ: dict) -> Iterator[bytes]:
    yield body[:len(body) // 2]
    _abort(environ)


def _paced(frames: Iterable[tuple[bytes, bool]], faults: Faults, bad_frame: bytes,
           environ: dict) -> Iterator[bytes]:
    """Yield stream frames, applying chunk_delay, malformed and cut.

    Framing frames ride along with the next content frame, to save writes."""
    pending: list[bytes] = []
    sent = 0
    delay = faults.chunk_delay_ms / 1000
    for frame, is_content in frames:
        if not is_content:
            pending.append(frame)
            continue
        if faults.cut is not None and sent >= faults.cut:
            _abort(environ)
        if sent and delay:
            time.sleep(delay)
        pending.append(frame)
        sent += 1
        if sent == 1 and faults.malformed:
            pending.append(bad_frame)
        yield b"".join(pending)
        pending.clear()
    if faults.cut is not None:
        _abort(environ)  # fewer content chunks than N: still no terminal event
    if pending:
        yield b"".join(pending)


def _read_json(environ: dict):
    """The request body parsed as JSON ({} when empty); raises ValueError if invalid."""
    length = environ.get("CONTENT_LENGTH")
    stream = environ.get("wsgi.input")
    if stream is None:
        return {}
    raw = stream.read(int(length)) if length else stream.read()
    if not raw:
        return {}
    body = orjson.loads(raw)
    if not isinstance(body, dict):
        raise ValueError("body must be a JSON object")
    return body


def _headers(environ: dict) -> dict[str, str]:
    """Request headers with lower-case names and secrets masked to their last 4 chars."""
    out = {}
    for key, value in environ.items():
        if key.startswith("HTTP_"):
            out[key[5:].replace("_", "-").lower()] = value
        elif key in ("CONTENT_TYPE", "CONTENT_LENGTH"):
            out[key.replace("_", "-").lower()] = value
    for name in _SECRET_HEADERS:
        if name in out:
            out[name] = _mask(out[name])
    return out


def _mask(value: str) -> str:
    scheme, sep, secret = value.partition(" ")
    if not sep:
        scheme, secret = "", value
    return f"{scheme}{sep}...{secret[-4:]}"


# OpenAI (and Azure OpenAI)

_OPENAI_TYPES = {400: "invalid_request_error", 401: "invalid_request_error",
                 403: "invalid_request_error", 404: "invalid_request_error",
                 429: "rate_limit_exceeded"}
_OPENAI_CODES = {401: "invalid_api_key", 404: "model_not_found", 429: "rate_limit_exceeded"}


def _openai_error(status: int, message: str) -> dict:
    type_ = _OPENAI_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    return {"error": {"message": message, "type": type_, "param": None,
                      "code": _OPENAI_CODES.get(status)}}


def _openai_authorized(environ: dict, query: dict) -> bool:
    auth = environ.get("HTTP_AUTHORIZATION", "")
    return bool(auth[7:].strip()) if auth[:7].lower() == "bearer " else bool(
        environ.get("HTTP_API_KEY"))


def _openai_tool(body: dict) -> str | None:
    """The tool to call, or None when the model should answer in text."""
    tools = body.get("tools")
    messages = body.get("messages") or []
    choice = body.get("tool_choice")
    if not tools or choice == "none" or not messages or messages[-1].get("role") != "user":
        return None
    if isinstance(choice, dict):
        return (choice.get("function") or choice).get("name")
    return (tools[0].get("function") or tools[0]).get("name")


def _openai_answer(body: dict) -> Answer:
    messages = body.get("messages") or []
    texts = [text_of(m.get("content")) for m in messages]
    last_user = next((t for m, t in zip(reversed(messages), reversed(texts))
                      if m.get("role") == "user" and t), "")
    limit = body.get("max_completion_tokens") or body.get("max_tokens")
    json_mode = (body.get("response_format") or {}).get("type") in ("json_object", "json_schema")
    return make_answer(texts, last_user, limit, _openai_tool(body), json_mode)


def _openai_usage(answer: Answer, n: int) -> dict:
    completion = answer.completion_tokens * n
    return {"prompt_tokens": answer.prompt_tokens, "completion_tokens": completion,
            "total_tokens": answer.prompt_tokens + completion,
            "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0,
                                          "accepted_prediction_tokens": 0,
                                          "rejected_prediction_tokens": 0}}


def _openai_finish(answer: Answer) -> str:
    return "tool_calls" if answer.tool else "length" if answer.truncated else "stop"


def _openai_chat(call: Call) -> Result:
    answer = _openai_answer(call.body)
    n = call.body.get("n") or 1
    if call.body.get("stream"):
        usage = (call.body.get("stream_options") or {}).get("include_usage")
        return Result(frames=_openai_frames(call.model, answer, n, bool(usage)),
                      content_type="text/event-stream; charset=utf-8")
    if answer.tool:
        message = {"role": "assistant", "content": None, "refusal": None, "annotations": [],
                   "tool_calls": [{"id": _new_id("call_"), "type": "function",
                                   "function": {"name": answer.tool,
                                                "arguments": answer.arguments}}]}
    else:
        message = {"role": "assistant", "content": answer.text, "refusal": None,
                   "annotations": []}
    choices = [{"index": i, "message": message, "logprobs": None,
                "finish_reason": _openai_finish(answer)} for i in range(n)]
    return _json_result({"id": _new_id("chatcmpl-"), "object": "chat.completion",
                         "created": int(time.time()), "model": call.model,
                         "choices": choices, "usage": _openai_usage(answer, n),
                         "service_tier": "default", "system_fingerprint": "fp_mock"})


def _openai_frames(model: str, answer: Answer, n: int,
                   include_usage: bool) -> Iterator[tuple[bytes, bool]]:
    head = {"id": _new_id("chatcmpl-"), "object": "chat.completion.chunk",
            "created": int(time.time()), "model": model, "service_tier": "default",
            "system_fingerprint": "fp_mock"}
    if include_usage:
        head["usage"] = None

    def chunk(index, delta, finish=None):
        choice = {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}
        return b"data: " + orjson.dumps({**head, "choices": [choice]}) + b"\n\n"

    for i in range(n):
        if answer.tool:
            call = {"index": 0, "id": _new_id("call_"), "type": "function",
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
    for word in answer.words:
        for i in range(n):
            yield chunk(i, {"content": word}), True
    for i in range(n):
        yield chunk(i, {}, _openai_finish(answer)), False
    if include_usage:
        final = {**head, "choices": [], "usage": _openai_usage(answer, n)}
        yield b"data: " + orjson.dumps(final) + b"\n\n", False
    yield b"data: [DONE]\n\n", False


def _openai_embeddings(call: Call) -> Result:
    inputs = call.body.get("input")
    if isinstance(inputs, str) or (isinstance(inputs, list) and inputs
                                   and isinstance(inputs[0], int)):
        inputs = [inputs]   # one string, or one pre-tokenised input
    if not isinstance(inputs, list) or not inputs:
        return _json_result(_openai_error(400, "'input' is required"), 400)
    texts = [x if isinstance(x, str) else " ".join(map(str, x)) for x in inputs]
    dimensions = call.body.get("dimensions") or _DEFAULT_DIMENSIONS
    as_base64 = call.body.get("encoding_format") == "base64"
    data = []
    for i, text in enumerate(texts):
        vector = embedding(text, dimensions)
        if as_base64:
            vector = base64.b64encode(struct.pack(f"<{dimensions}f", *vector)).decode()
        data.append({"object": "embedding", "index": i, "embedding": vector})
    tokens = sum(count_words(t) for t in texts)
    return _json_result({"object": "list", "data": data, "model": call.model,
                         "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})


def _openai_models(call: Call) -> Result:
    return _json_result({"object": "list", "data": [
        {"id": m, "object": "model", "created": 1700000000, "owned_by": "mock"}
        for m in _MODELS]})


# Anthropic Messages

_ANTHROPIC_TYPES = {400: "invalid_request_error", 401: "authentication_error",
                    403: "permission_error", 404: "not_found_error", 413: "request_too_large",
                    429: "rate_limit_error", 500: "api_error", 529: "overloaded_error"}


def _anthropic_error(status: int, message: str) -> dict:
    type_ = _ANTHROPIC_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")
    return {"type": "error", "error": {"type": type_, "message": message}}


def _anthropic_authorized(environ: dict, query: dict) -> bool:
    # The 2.x SDKs send the API key as a bearer token; older clients use x-api-key.
    return bool(environ.get("HTTP_X_API_KEY")) or _openai_authorized(environ, query)


def _anthropic_tool(body: dict, last_has_text: bool) -> str | None:
    tools = body.get("tools")
    choice = body.get("tool_choice") or {}
    messages = body.get("messages") or []
    if (not tools or choice.get("type") == "none" or not messages
            or messages[-1].get("role") != "user" or not last_has_text):
        return None
    return choice.get("name") if choice.get("type") == "tool" else tools[0].get("name")


def _anthropic_answer(body: dict) -> Answer:
    messages = body.get("messages") or []
    texts = [text_of(m.get("content")) for m in messages]
    last_user = next((t for m, t in zip(reversed(messages), reversed(texts))
                      if m.get("role") == "user" and t), "")
    if body.get("system"):
        texts.append(text_of(body["system"]))
    tool = _anthropic_tool(body, bool(messages and texts[len(messages) - 1]))
    return make_answer(texts, last_user, body.get("max_tokens"), tool)


def _anthropic_stop(answer: Answer) -> str:
    return "tool_use" if answer.tool else "max_tokens" if answer.truncated else "end_turn"


def _anthropic_usage(answer: Answer, output_tokens: int) -> dict:
    return {"input_tokens": answer.prompt_tokens, "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0, "output_tokens": output_tokens}


def _anthropic_messages(call: Call) -> Result:
    answer = _anthropic_answer(call.body)
    if call.body.get("stream"):
        return Result(frames=_anthropic_frames(call.model, answer),
                      content_type="text/event-stream; charset=utf-8")
    if answer.tool:
        content = [{"type": "tool_use", "id": _new_id("toolu_"), "name": answer.tool,
                    "input": orjson.loads(answer.arguments)}]
    else:
        content = [{"type": "text", "text": answer.text}]
    return _json_result({"id": _new_id("msg_"), "type": "message", "role": "assistant",
                         "model": call.model, "content": content,
                         "stop_reason": _anthropic_stop(answer), "stop_sequence": None,
                         "usage": _anthropic_usage(answer, answer.completion_tokens)})


def _event(name: str, data: dict) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


def _anthropic_frames(model: str, answer: Answer) -> Iterator[tuple[bytes, bool]]:
    message = {"id": _new_id("msg_"), "type": "message", "role": "assistant", "model": model,
               "content": [], "stop_reason": None, "stop_sequence": None,
               "usage": _anthropic_usage(answer, 1)}
    yield _event("message_start", {"type": "message_start", "message": message}), False
    if answer.tool:
        block = {"type": "tool_use", "id": _new_id("toolu_"), "name": answer.tool, "input": {}}
        deltas = [{"type": "input_json_delta", "partial_json": p}
                  for p in answer.argument_pieces()]
    else:
        block = {"type": "text", "text": ""}
        deltas = [{"type": "text_delta", "text": w} for w in answer.words]
    yield _event("content_block_start",
                 {"type": "content_block_start", "index": 0, "content_block": block}), False
    yield _event("ping", {"type": "ping"}), False
    for delta in deltas:
        yield _event("content_block_delta",
                     {"type": "content_block_delta", "index": 0, "delta": delta}), True
    yield _event("content_block_stop", {"type": "content_block_stop", "index": 0}), False
    yield _event("message_delta", {
        "type": "message_delta",
        "delta": {"stop_reason": _anthropic_stop(answer), "stop_sequence": None},
        "usage": {"output_tokens": answer.completion_tokens}}), False
    yield _event("message_stop", {"type": "message_stop"}), False


# Gemini

_GOOGLE_STATUSES = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED",
                    404: "NOT_FOUND", 409: "ABORTED", 429: "RESOURCE_EXHAUSTED",
                    499: "CANCELLED", 500: "INTERNAL", 501: "NOT_IMPLEMENTED",
                    503: "UNAVAILABLE", 504: "DEADLINE_EXCEEDED"}


def _gemini_error(status: int, message: str) -> dict:
    return {"error": {"code": status, "message": message,
                      "status": _GOOGLE_STATUSES.get(status, "UNKNOWN")}}


def _gemini_authorized(environ: dict, query: dict) -> bool:
    return bool(environ.get("HTTP_X_GOOG_API_KEY") or query.get("key"))


def _gemini_tool(body: dict, last_has_text: bool) -> str | None:
    config = (body.get("toolConfig") or {}).get("functionCallingConfig") or {}
    contents = body.get("contents") or []
    names = [d.get("name") for t in body.get("tools") or []
             for d in t.get("functionDeclarations") or []]
    if (not names or config.get("mode") == "NONE" or not contents
            or contents[-1].get("role", "user") != "user" or not last_has_text):
        return None
    return (config.get("allowedFunctionNames") or names)[0]


def _gemini_answer(body: dict) -> Answer:
    contents = body.get("contents") or []
    texts = [text_of(c.get("parts")) for c in contents]
    last_user = next((t for c, t in zip(reversed(contents), reversed(texts))
                      if c.get("role", "user") == "user" and t), "")
    if body.get("systemInstruction"):
        texts.append(text_of(body["systemInstruction"].get("parts")))
    config = body.get("generationConfig") or {}
    json_mode = config.get("responseMimeType") == "application/json"
    tool = _gemini_tool(body, bool(contents and texts[len(contents) - 1]))
    return make_answer(texts, last_user, config.get("maxOutputTokens"), tool, json_mode)


def _gemini_response(model: str, response_id: str, parts_per_candidate: list,
                     finish: str | None, usage: dict) -> dict:
    candidates = []
    for i, parts in enumerate(parts_per_candidate):
        candidate = {"content": {"parts": parts, "role": "model"}, "index": i}
        if finish:
            candidate["finishReason"] = finish
        candidates.append(candidate)
    return {"candidates": candidates, "usageMetadata": usage, "modelVersion": model,
            "responseId": response_id}


def _gemini_usage(answer: Answer, n: int, done: bool) -> dict:
    if not done:   # Gemini reports the prompt count on every chunk
        return {"promptTokenCount": answer.prompt_tokens,
                "totalTokenCount": answer.prompt_tokens}
    completion = answer.completion_tokens * n
    return {"promptTokenCount": answer.prompt_tokens, "candidatesTokenCount": completion,
            "totalTokenCount": answer.prompt_tokens + completion}


def _gemini_finish(answer: Answer) -> str:
    return "MAX_TOKENS" if answer.truncated else "STOP"


def _gemini_generate(call: Call) -> Result:
    answer = _gemini_answer(call.body)
    n = (call.body.get("generationConfig") or {}).get("candidateCount") or 1
    response_id = _new_id("")
    if call.action == "streamGenerateContent":
        if call.query.get("alt") != "sse":
            return _json_result(_gemini_error(
                400, "the mock serves streamGenerateContent only with alt=sse"), 400)
        return Result(frames=_gemini_frames(call.model, response_id, answer, n),
                      content_type="text/event-stream")
    if answer.tool:
        parts = [{"functionCall": {"name": answer.tool, "args": orjson.loads(answer.arguments)}}]
    else:
        parts = [{"text": answer.text}]
    return _json_result(_gemini_response(call.model, response_id, [parts] * n,
                                         _gemini_finish(answer), _gemini_usage(answer, n, True)))


def _gemini_frames(model: str, response_id: str, answer: Answer,
                   n: int) -> Iterator[tuple[bytes, bool]]:
    def frame(parts, finish, done):
        response = _gemini_response(model, response_id, [parts] * n, finish,
                                    _gemini_usage(answer, n, done))
        return b"data: " + orjson.dumps(response) + b"\r\n\r\n"

    if answer.tool:
        call = {"functionCall": {"name": answer.tool, "args": orjson.loads(answer.arguments)}}
        yield frame([call], "STOP", True), True
        return
    last = len(answer.words) - 1
    for i, word in enumerate(answer.words):
        done = i == last
        yield frame([{"text": word}], _gemini_finish(answer) if done else None, done), True
    if last < 0:
        yield frame([{"text": ""}], _gemini_finish(answer), True), False


def _gemini_embed(call: Call) -> Result:
    if call.action == "embedContent":
        requests_ = [call.body]
    else:
        requests_ = call.body.get("requests") or []
    embeddings = []
    for req in requests_:
        dimensions = req.get("outputDimensionality") or _DEFAULT_DIMENSIONS
        text = text_of((req.get("content") or {}).get("parts"))
        embeddings.append({"values": embedding(text, dimensions)})
    if call.action == "embedContent":
        return _json_result({"embedding": embeddings[0]})
    return _json_result({"embeddings": embeddings})


# Routing

@dataclass(frozen=True, slots=True)
class Vendor:
    error: Callable[[int, str], dict]
    authorized: Callable[[dict, dict], bool]
    auth_status: int
    auth_message: str
    bad_frame: bytes            # what `malformed` sends mid-stream


OPENAI = Vendor(_openai_error, _openai_authorized, 401,
                "Incorrect API key provided: missing bearer token.",
                b"data: {not json\n\n")
ANTHROPIC = Vendor(_anthropic_error, _anthropic_authorized, 401, "x-api-key header is required",
                   b"event: content_block_delta\ndata: {not json\n\n")
GEMINI = Vendor(_gemini_error, _gemini_authorized, 403,
                "Method doesn't allow unregistered callers (callers without established "
                "identity). Please use API Key or other form of API consumer identity "
                "to call this API.",
                b"data: {not json\r\n\r\n")

Handler = Callable[[Call], Result]
_ROUTES: dict[tuple[str, str], tuple[Vendor, Handler]] = {
    ("POST", "/v1/chat/completions"): (OPENAI, _openai_chat),
    ("POST", "/v1/embeddings"): (OPENAI, _openai_embeddings),
    ("GET", "/v1/models"): (OPENAI, _openai_models),
    ("POST", "/v1/messages"): (ANTHROPIC, _anthropic_messages),
}
_AZURE_ROUTES: dict[str, Handler] = {"chat/completions": _openai_chat,
                                     "embeddings": _openai_embeddings}
_GEMINI_ROUTES: dict[str, Handler] = {"generateContent": _gemini_generate,
                                      "streamGenerateContent": _gemini_generate,
                                      "embedContent": _gemini_embed,
                                      "batchEmbedContents": _gemini_embed}


@dataclass(slots=True)
class Route:
    vendor: Vendor
    handler: Handler
    model: str | None = None    # from the path (Azure deployment, Gemini model)
    action: str = ""


def route(method: str, path: str) -> Route | None:
    """Find the handler for a request; None when nothing matches."""
    if found := _ROUTES.get((method, path)):
        return Route(*found)
    if method != "POST":
        return None
    if path.startswith("/openai/deployments/"):
        deployment, _, rest = path[len("/openai/deployments/"):].partition("/")
        handler = _AZURE_ROUTES.get(rest)
        return Route(OPENAI, handler, deployment) if handler and deployment else None
    for prefix in ("/v1beta/models/", "/v1/models/"):
        if path.startswith(prefix):
            model, _, action = path[len(prefix):].rpartition(":")
            handler = _GEMINI_ROUTES.get(action)
            return Route(GEMINI, handler, model, action) if handler and model else None
    return None


def _vendor_for(path: str) -> Vendor:
    if path.startswith("/v1/messages"):
        return ANTHROPIC
    if path.startswith("/v1beta/") or ":" in path:
        return GEMINI
    return OPENAI


class MockUpstream:
    """The WSGI app: answers model calls and keeps the control state."""

    def __init__(self):
        self._lock = threading.Lock()
        self._requests: deque[dict] = deque(maxlen=_REQUEST_LOG_SIZE)
        self._queued: deque[tuple[str | None, str]] = deque()   # (path filter, directives)
        self._paths: Counter[str] = Counter()
        self._models: Counter[str] = Counter()

    def __call__(self, environ: dict, start_response):
        path = environ.get("PATH_INFO") or "/"
        if path.startswith("/_mock/"):
            result = self._control(environ, path)
        else:
            result = self._serve(environ, path)
            if not isinstance(result, Result):
                return result   # an iterator that aborts the connection
        return self._respond(result, start_response)

    def _serve(self, environ: dict, path: str):
        method = environ.get("REQUEST_METHOD", "GET")
        query = dict(parse_qsl(environ.get("QUERY_STRING", "")))
        found = route(method, path)
        try:
            body = _read_json(environ)
        except ValueError:
            body = None
        model = (found and found.model) or (body or {}).get("model") or ""
        self._record(environ, method, path, query, body, model)
        if found is None:
            vendor = _vendor_for(path)
            status = 405 if _ROUTES.keys() & {("GET", path), ("POST", path)} else 404
            return _json_result(vendor.error(status, f"no route for {method} {path}"), status)
        vendor = found.vendor
        if body is None:
            return _json_result(vendor.error(400, "request body is not a JSON object"), 400)
        if not vendor.authorized(environ, query):
            return _json_result(vendor.error(vendor.auth_status, vendor.auth_message),
                                vendor.auth_status)
        if method == "POST" and not model:
            return _json_result(vendor.error(400, "model is required"), 400)
        try:
            faults = self._faults_for(environ, path, model)
        except ValueError as exc:
            return _json_result(vendor.error(400, str(exc)), 400)
        call = Call(environ, body, model, found.action, query)
        try:
            result = self._faulty(found, faults, call) if faults else found.handler(call)
        except (AttributeError, KeyError, TypeError, IndexError) as exc:
            # A request shape the mock can't read: say so rather than a bare 500.
            return _json_result(vendor.error(400, f"mock could not read the request: {exc!r}"),
                                400)
        if isinstance(result, Result) and result.frames is not None:
            result.chunks = _paced(result.frames, faults or _NO_FAULTS, vendor.bad_frame, environ)
        return result

    def _faulty(self, found: Route, faults: Faults, call: Call):
        """Run a handler under faults: delays, errors, resets, cut or malformed bodies."""
        if faults.latency_ms:
            time.sleep(faults.latency_ms / 1000)
        if faults.hang:
            time.sleep(_HANG_SECONDS)
        if faults.reset:
            return _reset(call.environ)
        if faults.fail is not None:
            result = _json_result(found.vendor.error(faults.fail, f"mock failure {faults.fail}"),
                                  faults.fail)
            if faults.retry_after:
                result.headers.append(("retry-after", faults.retry_after))
            return result
        result = found.handler(call)
        if result.frames is not None:
            return result   # streams get their faults while paced
        if faults.malformed:
            result.body = b"{not json"
        elif faults.cut is not None:
            # Announce the full length, so the client sees a short body.
            result.headers.append(("Content-Length", str(len(result.body))))
            result.chunks = _cut_body(result.body, call.environ)
        return result

    def _faults_for(self, environ: dict, path: str, model: str) -> Faults | None:
        """Directives from the model name, x-mock-* headers and the queue; None if none."""
        latency = environ.get("HTTP_X_MOCK_LATENCY_MS")
        delay = environ.get("HTTP_X_MOCK_CHUNK_DELAY_MS")
        header = environ.get("HTTP_X_MOCK_FAULT")
        queued = self._take_queued(path) if self._queued else None
        if not (latency or delay or header or queued or "+" in model or "fail-" in model):
            return None
        faults = Faults()
        model_faults(faults, model)
        try:
            if latency:
                faults.latency_ms = float(latency)
            if delay:
                faults.chunk_delay_ms = float(delay)
        except ValueError:
            raise ValueError("x-mock-latency-ms and x-mock-chunk-delay-ms take milliseconds")
        for spec in (header, queued):
            if spec:
                apply_directives(faults, spec)
        return faults

    def _take_queued(self, path: str) -> str | None:
        with self._lock:
            for i, (where, spec) in enumerate(self._queued):
                if where is None or where in path:
                    del self._queued[i]
                    return spec
        return None

    def _record(self, environ, method, path, query, body, model) -> None:
        if "key" in query:
            query = {**query, "key": _mask(query["key"])}
        entry = {"method": method, "path": path, "query": query,
                 "headers": _headers(environ), "body": body}
        with self._lock:
            self._requests.append(entry)
            self._paths[path] += 1
            if model:
                self._models[model] += 1

    def _control(self, environ: dict, path: str) -> Result:
        method = environ.get("REQUEST_METHOD", "GET")
        action = _CONTROL.get((method, path))
        if action is None:
            return _json_result({"error": f"no control route {method} {path}"}, 404)
        try:
            body = _read_json(environ)
        except ValueError:
            return _json_result({"error": "body is not a JSON object"}, 400)
        return action(self, body)

    def queue_faults(self, body: dict) -> Result:
        """Queue faults, each taken by one later request whose path contains `path`."""
        faults = body.get("faults")
        if isinstance(faults, str):
            faults = [faults]
        if not isinstance(faults, list) or not all(isinstance(f, str) for f in faults):
            return _json_result({"error": "faults must be a list of directive strings"}, 400)
        try:
            for spec in faults:
                apply_directives(Faults(), spec)
        except ValueError as exc:
            return _json_result({"error": str(exc)}, 400)
        where = body.get("path") or None
        with self._lock:
            self._queued.extend((where, spec) for spec in faults)
            return _json_result({"queued": len(self._queued)})

    def list_faults(self, body: dict) -> Result:
        with self._lock:
            return _json_result({"faults": [{"path": w, "fault": s} for w, s in self._queued]})

    def clear_faults(self, body: dict) -> Result:
        with self._lock:
            cleared = len(self._queued)
            self._queued.clear()
        return _json_result({"cleared": cleared})

    def requests(self, body: dict) -> Result:
        with self._lock:
            return _json_result({"requests": list(self._requests)})

    def stats(self, body: dict) -> Result:
        with self._lock:
            return _json_result({"total": sum(self._paths.values()),
                                 "paths": dict(self._paths), "models": dict(self._models)})

    def reset(self, body: dict | None = None) -> Result:
        with self._lock:
            self._requests.clear()
            self._queued.clear()
            self._paths.clear()
            self._models.clear()
        return _json_result({"reset": True})

    @staticmethod
    def _respond(result: Result, start_response):
        headers = [("Content-Type", result.content_type), *result.headers]
        if result.chunks is None:
            headers.append(("Content-Length", str(len(result.body))))
            start_response(_status_line(result.status), headers)
            return [result.body]
        if result.frames is not None:
            headers.append(("Cache-Control", "no-cache"))
        start_response(_status_line(result.status), headers)
        return result.chunks


_CONTROL = {
    ("POST", "/_mock/faults"): MockUpstream.queue_faults,
    ("GET", "/_mock/faults"): MockUpstream.list_faults,
    ("DELETE", "/_mock/faults"): MockUpstream.clear_faults,
    ("GET", "/_mock/requests"): MockUpstream.requests,
    ("GET", "/_mock/stats"): MockUpstream.stats,
    ("POST", "/_mock/reset"): MockUpstream.reset,
}

app = MockUpstream()    # for in-process use by the gateway's `mock` provider


# Serving

def _handler_class():
    """pywsgi's handler, plus `mock.abort` in the environ to drop the connection with a RST."""
    import socket
    from gevent.pywsgi import WSGIHandler

    class Handler(WSGIHandler):
        def __init__(self, sock, address, server, rfile=None):
            # Headers and body go out in separate writes: without NODELAY, Nagle holds the
            # body until the client's delayed ACK (~40 ms a response).
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            super().__init__(sock, address, server, rfile)

        def get_environ(self):
            environ = super().get_environ()
            environ["mock.abort"] = self._abort
            return environ

        def _abort(self):
            # Linger 0 makes close() send RST. The socket only really closes once
            # rfile (a makefile() of it) is closed too.
            self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.rfile.close()
            self.socket.close()

    return Handler


def serve(host: str = "127.0.0.1", port: int = 0, ready: Callable[[int], None] | None = None,
          application: MockUpstream | None = None) -> None:
    """Serve the mock forever; `ready(port)` is called once the socket is bound.

    Needs gevent monkey patching already done (main() does it), so sleeps are cooperative."""
    from gevent.pywsgi import WSGIServer

    server = WSGIServer((host, port), application or MockUpstream(), log=None,
                        handler_class=_handler_class())
    server.start()
    if ready is not None:
        ready(server.server_port)
    server.serve_forever()


def main(argv: list[str] | None = None) -> None:
    """`python -m gateway.mock_upstream [--host H] [--port P]`; prints the bound URL."""
    # Patch before anything imports socket/ssl. Caveat: when called from a process that
    # already imported requests, ssl etc. unpatched, those modules keep blocking calls;
    # run this in its own process.
    from gevent import monkey
    if not monkey.is_module_patched("socket"):
        monkey.patch_all()
    import argparse

    parser = argparse.ArgumentParser(prog="mock-upstream", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    args = parser.parse_args(argv)

    def ready(port: int) -> None:
        print(f"mock-upstream listening on http://{args.host}:{port}", flush=True)

    serve(args.host, args.port, ready)


if __name__ == "__main__":
    main()
