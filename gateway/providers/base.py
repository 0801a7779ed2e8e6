"""Shared types for provider adapters: one module per wire format uses these."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol


@dataclass(slots=True)
class Target:
    """Where one attempt goes: the provider's endpoint and key, and the upstream model name."""
    kind: str
    base_url: str           # as the vendor's SDK takes it, e.g. https://api.openai.com/v1
    api_key: str
    model: str              # the upstream model name
    options: dict = field(default_factory=dict)   # vendor extras, e.g. {"api_version": "..."}


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
