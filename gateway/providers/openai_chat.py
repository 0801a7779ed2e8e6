"""OpenAI-compatible wire format: OpenAI, DeepSeek, Groq, Mistral, Together, vLLM, Ollama,
Alibaba Bailian (DashScope compatible mode), BytePlus/Doubao (Ark), Azure OpenAI (via options).

Bodies pass through as bytes wherever no translation is needed: we parse once for usage.
Vendor quirks come from the provider's options (set by its preset in providers/registry.py):
`stream_usage="omit"` never sends `stream_options`, `max_tokens_field="max_tokens"` renames
`max_completion_tokens`, `reasoning_field` names where the model's thinking arrives.
"""
from __future__ import annotations

import orjson

from gateway.providers.base import Reply, StreamError, Target, UpstreamFailure, UpstreamRequest, Usage


def _headers(target: Target) -> dict[str, str]:
    if target.options.get("api_version"):      # Azure OpenAI takes its key in api-key
        return {"api-key": target.api_key, "content-type": "application/json"}
    return {"authorization": f"Bearer {target.api_key}", "content-type": "application/json"}


def _url(target: Target, path: str) -> str:
    base = target.base_url.rstrip("/")
    version = target.options.get("api_version")
    if version:     # Azure: {endpoint}/openai/deployments/{deployment}/chat/completions?api-version=
        return f"{base}/openai/deployments/{target.model}{path}?api-version={version}"
    return base + path


def usage_from(obj: dict | None) -> Usage | None:
    """Read an OpenAI `usage` object; None when absent."""
    if not obj:
        return None
    details = obj.get("prompt_tokens_details") or {}
    return Usage(prompt_tokens=obj.get("prompt_tokens") or 0,
                 completion_tokens=obj.get("completion_tokens") or 0,
                 cached_tokens=details.get("cached_tokens") or 0)


def chat_request(target: Target, body: dict, stream: bool) -> UpstreamRequest:
    out = dict(body, model=target.model)
    out.pop("anthropic", None)      # settings only Anthropic takes (see anthropic_messages._extras)
    options = target.options
    if options.get("stream_usage") == "omit":
        out.pop("stream_options", None)     # refused by the vendor, which reports usage anyway
    elif stream:
        # Ask for usage on the final chunk; ChatStream hides it if the client did not ask.
        out["stream_options"] = dict(body.get("stream_options") or {}, include_usage=True)
    field = options.get("max_tokens_field")
    if field and "max_completion_tokens" in out and field not in out:
        out[field] = out.pop("max_completion_tokens")
    return UpstreamRequest(_url(target, "/chat/completions"), _headers(target), orjson.dumps(out))


def renamed(target: Target, body: dict | None) -> str | None:
    """The name to report instead of the upstream's, when the client asked for the model by
    another name (an alias, or a public name mapped to an upstream one); else None, and the
    bytes pass through untouched (rewriting costs a serialisation)."""
    asked = (body or {}).get("model")
    return asked if isinstance(asked, str) and asked and asked != target.model else None


def _reply(data: bytes, required: str, rename: str | None = None) -> Reply:
    """The body passed through as it came, once it parses and holds `required`; with
    `rename`, its `model` says that name."""
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError as e:
        raise StreamError(f"upstream sent invalid JSON: {e}") from None
    if not isinstance(obj, dict) or required not in obj:
        raise StreamError(f"upstream answer has no {required}")
    if rename is not None and obj.get("model") != rename:
        obj["model"] = rename
        data = orjson.dumps(obj)
    return Reply(data, usage_from(obj.get("usage")))


def chat_response(data: bytes, target: Target, body: dict | None = None) -> Reply:
    return _reply(data, "choices", renamed(target, body))


class ChatStream:
    """Passes chunks through untouched; reads usage and text length on the way."""

    def __init__(self, target: Target, body: dict):
        self.client_wants_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        self.reasoning_field = target.options.get("reasoning_field") or "reasoning_content"
        self.usage: Usage | None = None
        self.done = False
        self.text_chars = 0
        self.rename = renamed(target, body)

    def feed(self, event: str | None, data: bytes) -> list[bytes]:
        if data == b"[DONE]":
            self.done = True
            return []
        try:
            chunk = orjson.loads(data)
        except orjson.JSONDecodeError:
            raise StreamError("upstream sent a malformed stream chunk") from None
        if not isinstance(chunk, dict):
            raise StreamError("upstream sent a malformed stream chunk")
        if "error" in chunk:
            err = chunk["error"] or {}
            raise StreamError(err.get("message") if isinstance(err, dict) else str(err))
        choices = chunk.get("choices") or ()
        for choice in choices:
            delta = choice.get("delta") or {}
            self.text_chars += len(delta.get("content") or "") + _text_len(delta.get(self.reasoning_field))
            for call in delta.get("tool_calls") or ():
                self.text_chars += len((call.get("function") or {}).get("arguments") or "")
            if choice.get("usage"):     # Moonshot reports it inside the last choice
                self.usage = usage_from(choice["usage"])
        if chunk.get("usage"):          # on the final chunk, or on every one (the last wins)
            self.usage = usage_from(chunk["usage"])
            if not choices and not self.client_wants_usage:
                return []       # the usage-only chunk we asked for, not the client
        if self.rename is not None and chunk.get("model") != self.rename:
            return [orjson.dumps(dict(chunk, model=self.rename))]
        return [data]


def _text_len(value) -> int:
    """Characters of a reasoning field; nothing for anything but text."""
    return len(value) if isinstance(value, str) else 0


def embeddings_request(target: Target, body: dict) -> UpstreamRequest:
    return UpstreamRequest(_url(target, "/embeddings"), _headers(target),
                           orjson.dumps(dict(body, model=target.model)))


def embeddings_response(data: bytes, target: Target, body: dict | None = None) -> Reply:
    """Passed through: the upstream honours encoding_format itself."""
    return _reply(data, "data", renamed(target, body))


def error_message(status: int, data: bytes) -> UpstreamFailure:
    """The vendor's own error message, from {"error": {"message", "type", "code"}}."""
    try:
        err = orjson.loads(data).get("error")
    except (orjson.JSONDecodeError, AttributeError):
        err = None
    if isinstance(err, dict):
        return UpstreamFailure(str(err.get("message") or f"upstream returned {status}"),
                               str(err.get("type") or "upstream_error"),
                               str(err["code"]) if err.get("code") is not None else None)
    if isinstance(err, str):
        return UpstreamFailure(err)
    return UpstreamFailure(f"upstream returned HTTP {status}")
