"""One parsed API request, as every stage of the request path reads it."""
from __future__ import annotations

import time
from dataclasses import dataclass, field

# endpoint -> the deployment mode serving it. Responses, Messages and legacy completions are
# translated to chat and back (gateway/proxy/dialects/), so chat deployments serve them.
MODES = {"chat": "chat", "embeddings": "embedding", "messages": "chat", "responses": "chat",
         "completions": "chat", "images": "image", "transcriptions": "audio",
         "translations": "audio", "speech": "audio", "moderations": "moderation", "rerank": "rerank"}
# endpoint -> what one upstream attempt does, where a mode serves several (audio); else the mode
OPERATIONS = {"transcriptions": "transcription", "translations": "translation", "speech": "speech"}
MEDIA_MODES = ("image", "audio", "moderation", "rerank")     # billed per unit, not per token


@dataclass(frozen=True, slots=True)
class FilePart:
    """An uploaded file of a multipart request (audio), forwarded upstream as it came."""
    filename: str
    content_type: str
    data: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class Native:
    """The client's own body in its dialect, for a deployment that speaks that dialect: it is
    passed through as-is there (gateway/providers/anthropic_native.py), translated elsewhere."""
    dialect: str                # the endpoint's wire format, e.g. "messages"
    body: dict                  # the client's body, the gateway's own fields removed
    headers: dict = field(default_factory=dict)     # client headers allowed through (anthropic-beta)
    only: str = ""              # where the chat translation lost content: only native deployments serve


class NativeBytes(bytes):
    """An answer, or one SSE frame of it, already in the client's dialect: not translated again."""


@dataclass(frozen=True, slots=True)
class ApiRequest:
    """What the client asked for: parsed once by the proxy (or built by the playground), never
    changed afterwards. `body` is what goes upstream: the gateway's own fields are removed."""
    request_id: str
    endpoint: str                   # a key of MODES: chat, embeddings, ...
    body: dict = field(default_factory=dict)
    tags: dict = field(default_factory=dict)
    fallbacks: tuple[str, ...] = ()     # models to try after `model` (the client's list)
    started: float = field(default_factory=time.perf_counter)
    cache: str | None = None            # x-gateway-cache: on, off or refresh; None: not asked
    cache_ttl: int | None = None        # x-gateway-cache-ttl, seconds
    native: Native | None = None        # the body as the client sent it, when its dialect is not chat

    @property
    def mode(self) -> str:
        return MODES[self.endpoint]

    @property
    def operation(self) -> str:
        """What an upstream attempt does for this request (upstream.OPERATIONS)."""
        return OPERATIONS.get(self.endpoint) or self.mode

    @property
    def model(self) -> str | None:
        m = self.body.get("model")
        return m if isinstance(m, str) else None

    @property
    def stream(self) -> bool:
        return self.mode == "chat" and self.body.get("stream") is True
