"""Shared types for provider adapters: one module per wire format uses these."""
from __future__ import annotations

import base64
import struct
from dataclasses import dataclass, field
from typing import Protocol

import orjson

from gateway.errors import InvalidRequest


@dataclass(slots=True)
class Target:
    """Where one attempt goes: the provider's endpoint and key, and the upstream model name."""
    kind: str
    base_url: str           # as the vendor's SDK takes it, e.g. https://api.openai.com/v1
    api_key: str
    model: str              # the upstream model name
    options: dict = field(default_factory=dict)   # vendor extras, e.g. {"api_version": "..."}
    region: str = ""        # the deployment's (else the provider's) region; Bedrock signs with it


@dataclass(slots=True)
class UpstreamRequest:
    url: str
    headers: dict[str, str]
    body: bytes
    method: str = "POST"


@dataclass(slots=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    estimated: bool = False

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(slots=True)
class Reply:
    """A complete upstream answer translated to OpenAI's shape."""
    body: bytes             # OpenAI-shaped JSON, ready to send (or the client's dialect, passed through)
    usage: Usage | None     # None when the upstream reported none
    chat: bytes | None = None   # passed through: the answer in OpenAI's shape too, for the prompt log


@dataclass(slots=True)
class UpstreamFailure:
    """An upstream error as the client will see it (already sanitized)."""
    message: str
    type: str = "upstream_error"
    code: str | None = None


class StreamError(Exception):
    """The upstream stream broke its own format or reported an error mid-way."""


class ChatStream(Protocol):
    """Turns one upstream SSE stream into OpenAI chat.completion.chunk payloads."""
    usage: Usage | None     # set once the upstream reports usage
    done: bool              # True once the upstream signalled a normal end
    text_chars: int         # characters of generated text seen, for estimating tokens

    def feed(self, event: str | None, data: bytes) -> list[bytes]:
        """Take one SSE event (its `event:` name, if any, and `data:` payload); return
        zero or more OpenAI chunk JSON payloads to send as `data: <payload>`.
        Raises StreamError on malformed data or an in-stream upstream error."""
        ...


def requested_model(body: dict | None, upstream: str | None, target: Target) -> str:
    """The model an answer names: the one the client asked for (an alias or public name, as
    OpenAI's SDKs expect to see it back), else what the upstream said, else its model name."""
    asked = (body or {}).get("model")
    return asked if isinstance(asked, str) and asked else upstream or target.model


def encode_embedding(values: list[float], encoding_format: str | None):
    """A vector as OpenAI sends it: a list of floats, or with `base64` its little-endian
    float32 bytes, base64-encoded (openai-node asks for that by default)."""
    if encoding_format != "base64":
        return values
    try:
        return base64.b64encode(struct.pack(f"<{len(values)}f", *values)).decode()
    except struct.error as e:
        raise TypeError(f"not a vector of numbers: {e}") from None


def tool_arguments(call: dict) -> dict:
    """An OpenAI tool call's arguments as the object Anthropic and Bedrock take (not a string);
    raises InvalidRequest when they are not a JSON object."""
    try:
        args = orjson.loads((call.get("function") or {}).get("arguments") or "{}")
    except orjson.JSONDecodeError:
        args = None
    if not isinstance(args, dict):
        raise InvalidRequest("tool call arguments must be a JSON object", param="messages")
    return args


def tool_call(call_id, name, args: dict | None) -> dict:
    """An OpenAI tool call from a vendor's (id, name, input object): arguments as a JSON string."""
    return {"id": call_id, "type": "function",
            "function": {"name": name, "arguments": orjson.dumps(args or {}).decode()}}
