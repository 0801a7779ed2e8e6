"""Google Gemini API (generativelanguage v1beta): OpenAI chat and embeddings requests translated to
generateContent, streamGenerateContent (SSE) and batchEmbedContents, and the answers back. The chat
body's translation is in gemini_request.py.

The key travels in the x-goog-api-key header, never in the URL, so URLs are safe to log.
"""
from __future__ import annotations

import secrets
import time

import orjson

from gateway.errors import InvalidRequest
from gateway.providers.base import (Reply, StreamError, Target, UpstreamFailure, UpstreamRequest, Usage,
                                    encode_embedding, requested_model, tool_call)
from gateway.providers import gemini_request

FINISH_REASONS = {"STOP": "stop", "MAX_TOKENS": "length",
                  "SAFETY": "content_filter", "RECITATION": "content_filter",
                  "BLOCKLIST": "content_filter", "PROHIBITED_CONTENT": "content_filter",
                  "SPII": "content_filter", "IMAGE_SAFETY": "content_filter"}
def _headers(target: Target) -> dict[str, str]:
    return {"x-goog-api-key": target.api_key, "content-type": "application/json"}


def _url(target: Target, action: str) -> str:
    model = target.model.removeprefix("models/")
    return f"{target.base_url.rstrip('/')}/models/{model}:{action}"


def _load(data: bytes) -> dict:
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError:
        raise StreamError("upstream sent invalid JSON") from None
    if isinstance(obj, list) and len(obj) == 1:     # errors sometimes come wrapped in a list
        obj = obj[0]
    if not isinstance(obj, dict):
        raise StreamError("upstream sent an unexpected JSON shape")
    if "error" in obj:
        err = obj["error"]
        message = err.get("message") if isinstance(err, dict) else err
        raise StreamError(str(message or "upstream reported an error"))
    return obj


def chat_request(target: Target, body: dict, stream: bool) -> UpstreamRequest:
    out = gemini_request.chat_body(body)
    action = "streamGenerateContent?alt=sse" if stream else "generateContent"
    return UpstreamRequest(_url(target, action), _headers(target), orjson.dumps(out))


def usage_from(meta: dict | None) -> Usage | None:
    """Read usageMetadata; thinking and tool-use prompt tokens are billed, so count them."""
    if not meta:
        return None
    return Usage(prompt_tokens=(meta.get("promptTokenCount") or 0)
                 + (meta.get("toolUsePromptTokenCount") or 0),
                 completion_tokens=(meta.get("candidatesTokenCount") or 0)
                 + (meta.get("thoughtsTokenCount") or 0),
                 cached_tokens=meta.get("cachedContentTokenCount") or 0)


def _usage_json(usage: Usage, meta: dict) -> dict:
    return {"prompt_tokens": usage.prompt_tokens, "completion_tokens": usage.completion_tokens,
            "total_tokens": meta.get("totalTokenCount") or usage.total_tokens,
            "prompt_tokens_details": {"cached_tokens": usage.cached_tokens},
            "completion_tokens_details": {"reasoning_tokens": meta.get("thoughtsTokenCount") or 0}}


def finish_reason(reason: str | None, has_tool_calls: bool) -> str:
    """Gemini finishReason -> OpenAI finish_reason; Gemini says STOP after function calls too."""
    mapped = FINISH_REASONS.get(reason or "", "stop")
    return "tool_calls" if mapped == "stop" and has_tool_calls else mapped


def _tool_call(part: dict) -> dict:
    fn = part["functionCall"]
    call = tool_call(fn.get("id") or f"call_{secrets.token_hex(12)}", fn.get("name"), fn.get("args"))
    if part.get("thoughtSignature"):    # Google's own OpenAI-compatible field for it
        call["extra_content"] = {"google": {"thought_signature": part["thoughtSignature"]}}
    return call


def _read_candidate(candidate: dict) -> tuple[str | None, list[dict]]:
    """Visible text (None if there is none) and tool calls; thought summaries are left out."""
    parts = (candidate.get("content") or {}).get("parts") or ()
    texts = [p["text"] for p in parts if "text" in p and not p.get("thought")]
    calls = [_tool_call(p) for p in parts if "functionCall" in p]
    return ("".join(texts) if texts else None), calls


def _completion_id(obj: dict) -> str:
    return f"chatcmpl-{obj.get('responseId') or secrets.token_hex(12)}"


def _choice(candidate: dict, position: int) -> dict:
    text, calls = _read_candidate(candidate)
    message = {"role": "assistant", "content": text, "refusal": None}
    if calls:
        message["tool_calls"] = calls
    return {"index": candidate.get("index", position), "message": message, "logprobs": None,
            "finish_reason": finish_reason(candidate.get("finishReason"), bool(calls))}


def chat_response(data: bytes, target: Target, body: dict | None = None) -> Reply:
    obj = _load(data)
    candidates = obj.get("candidates") or []
    if not candidates and "promptFeedback" not in obj:
        raise StreamError("upstream answer has no candidates")
    try:
        choices = [_choice(c, position) for position, c in enumerate(candidates)]
        usage = usage_from(obj.get("usageMetadata"))
    except (AttributeError, TypeError, KeyError):
        raise StreamError("upstream answer has an unexpected shape") from None
    if not choices:     # the prompt itself was blocked
        choices = [{"index": 0, "message": {"role": "assistant", "content": None, "refusal": None},
                    "logprobs": None, "finish_reason": "content_filter"}]
    out = {"id": _completion_id(obj), "object": "chat.completion", "created": int(time.time()),
           "model": requested_model(body, obj.get("modelVersion"), target), "choices": choices}
    if usage:
        out["usage"] = _usage_json(usage, obj["usageMetadata"])
    return Reply(orjson.dumps(out), usage)


class ChatStream:
    """Each SSE event is a whole GenerateContentResponse; Gemini sends no [DONE], so the
    stream is done once every candidate has reported a finishReason."""

    def __init__(self, target: Target, body: dict):
        self.client_wants_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        self.usage: Usage | None = None
        self.done = False
        self.text_chars = 0
        self.model = requested_model(body, None, target)
        self.asked = bool(body.get("model"))
        self.id: str | None = None      # taken from the first chunk's responseId
        self.created = int(time.time())
        self._meta: dict = {}
        self._started: set[int] = set()
        self._finished: set[int] = set()
        self._calls: dict[int, int] = {}    # tool calls sent so far, per candidate
        self._usage_sent = False

    def feed(self, event: str | None, data: bytes) -> list[bytes]:
        chunk = _load(data)
        if self.id is None:
            self.id = _completion_id(chunk)
            if not self.asked:      # else the name the client asked for stays
                self.model = chunk.get("modelVersion") or self.model
        try:
            if chunk.get("usageMetadata"):
                self.usage = usage_from(chunk["usageMetadata"])
                self._meta = chunk["usageMetadata"]
            choices = self._choices(chunk)
        except (AttributeError, TypeError, KeyError):
            raise StreamError("upstream sent a malformed stream chunk") from None
        out = [self._payload(choices)] if choices else []
        self.done = bool(self._finished) and self._started <= self._finished
        if self.done and self.usage and self.client_wants_usage and not self._usage_sent:
            self._usage_sent = True
            out.append(self._payload([], _usage_json(self.usage, self._meta)))
        return out

    def _choices(self, chunk: dict) -> list[dict]:
        candidates = chunk.get("candidates") or []
        choices = []
        if not candidates and (chunk.get("promptFeedback") or {}).get("blockReason"):
            choices.append(self._delta(0, {}, "content_filter"))
        for position, candidate in enumerate(candidates):
            index = candidate.get("index", position)
            text, calls = _read_candidate(candidate)
            delta = {}
            if text:
                delta["content"] = text
                self.text_chars += len(text)
            if calls:
                first = self._calls.get(index, 0)
                delta["tool_calls"] = [{"index": first + i, **call} for i, call in enumerate(calls)]
                self._calls[index] = first + len(calls)
                self.text_chars += sum(len(c["function"]["arguments"]) for c in calls)
            reason = candidate.get("finishReason")
            choices.append(self._delta(index, delta, finish_reason(reason, index in self._calls)
                                       if reason else None))
        # nothing to say, e.g. a chunk with only a thought summary
        return [c for c in choices if c["delta"] or c["finish_reason"]]

    def _delta(self, index: int, delta: dict, finish: str | None) -> dict:
        if index not in self._started:
            self._started.add(index)
            delta = {"role": "assistant", **delta, "refusal": None}
        if index in self._finished:     # report a candidate's end once
            finish = None
        elif finish:
            self._finished.add(index)
        return {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}

    def _payload(self, choices: list[dict], usage: dict | None = None) -> bytes:
        out = {"id": self.id, "object": "chat.completion.chunk", "created": self.created,
               "model": self.model, "choices": choices}
        if usage:
            out["usage"] = usage
        return orjson.dumps(out)


def embeddings_request(target: Target, body: dict) -> UpstreamRequest:
    texts = body.get("input")
    if isinstance(texts, str):
        texts = [texts]
    if not texts or not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
        raise InvalidRequest("Gemini embeddings take a string or a list of strings, not tokens.",
                             param="input")
    model = f"models/{target.model.removeprefix('models/')}"
    extra = {"outputDimensionality": body["dimensions"]} if body.get("dimensions") else {}
    requests = [{"model": model, "content": {"parts": [{"text": t}]}, **extra} for t in texts]
    return UpstreamRequest(_url(target, "batchEmbedContents"), _headers(target),
                           orjson.dumps({"requests": requests}))


def embeddings_response(data: bytes, target: Target, body: dict | None = None) -> Reply:
    """Gemini reports no token counts here: usage is None and the gateway estimates it."""
    embeddings = _load(data).get("embeddings")
    if not isinstance(embeddings, list):
        raise StreamError("upstream answer has no embeddings")
    fmt = (body or {}).get("encoding_format")
    try:
        items = [{"object": "embedding", "index": i, "embedding": encode_embedding(e["values"], fmt)}
                 for i, e in enumerate(embeddings)]
    except (TypeError, KeyError):
        raise StreamError("upstream answer has an unexpected shape") from None
    out = {"object": "list", "data": items, "model": requested_model(body, None, target),
           "usage": {"prompt_tokens": 0, "total_tokens": 0}}
    return Reply(orjson.dumps(out), None)


def error_message(status: int, data: bytes) -> UpstreamFailure:
    """Google's own message, from {"error": {"code", "message", "status"}} (or a list of one)."""
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError:
        obj = None
    if isinstance(obj, list) and obj:
        obj = obj[0]
    err = obj.get("error") if isinstance(obj, dict) else None
    if isinstance(err, dict) and err.get("message"):
        code = str(err["status"]).lower() if err.get("status") else None
        return UpstreamFailure(str(err["message"]), code=code)
    return UpstreamFailure(f"upstream returned HTTP {status}")
