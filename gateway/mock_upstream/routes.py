"""Which vendor and handler answer a method and path."""
from __future__ import annotations

from dataclasses import dataclass

from gateway.mock_upstream import anthropic, bedrock, gemini, openai, openai_media
from gateway.mock_upstream.base import Handler, Vendor

OPENAI, ANTHROPIC, GEMINI, BEDROCK = openai.VENDOR, anthropic.VENDOR, gemini.VENDOR, bedrock.VENDOR

ROUTES: dict[tuple[str, str], tuple[Vendor, Handler]] = {
    ("POST", "/v1/chat/completions"): (OPENAI, openai.chat),
    ("POST", "/v1/embeddings"): (OPENAI, openai.embeddings),
    ("GET", "/v1/models"): (OPENAI, openai.models),
    ("POST", "/v1/messages"): (ANTHROPIC, anthropic.messages),
}
MEDIA: dict[str, Handler] = {"images/generations": openai_media.images,
                             "audio/transcriptions": openai_media.transcriptions,
                             "audio/translations": openai_media.translations,
                             "audio/speech": openai_media.speech,
                             "moderations": openai_media.moderations, "rerank": openai_media.rerank}
ROUTES.update({("POST", "/v1/" + path): (OPENAI, handler) for path, handler in MEDIA.items()})
_AZURE_ROUTES: dict[str, Handler] = {"chat/completions": openai.chat,
                                     "embeddings": openai.embeddings, **MEDIA}
_GEMINI_ROUTES: dict[str, Handler] = {"generateContent": gemini.generate,
                                      "streamGenerateContent": gemini.generate,
                                      "embedContent": gemini.embed,
                                      "batchEmbedContents": gemini.embed}

_BEDROCK_ROUTES: dict[str, Handler] = {"converse": bedrock.converse,
                                       "converse-stream": bedrock.converse_stream}


@dataclass(slots=True)
class Route:
    """A matched request: who answers it, and what the path itself carries."""
    vendor: Vendor
    handler: Handler
    model: str | None = None    # from the path (Azure deployment, Gemini or Bedrock model)
    action: str = ""


def route(method: str, path: str) -> Route | None:
    """Find the handler for a request; None when nothing matches."""
    if found := ROUTES.get((method, path)):
        return Route(*found)
    if method != "POST":
        return None
    if path.startswith("/openai/deployments/"):
        deployment, _, rest = path[len("/openai/deployments/"):].partition("/")
        handler = _AZURE_ROUTES.get(rest)
        return Route(OPENAI, handler, deployment) if handler and deployment else None
    if path.startswith("/model/"):     # Bedrock; ids carry ':' and arrive percent-decoded
        model, _, action = path[len("/model/"):].rpartition("/")
        handler = _BEDROCK_ROUTES.get(action)
        return Route(BEDROCK, handler, model, action) if handler and model else None
    for prefix in ("/v1beta/models/", "/v1/models/"):
        if path.startswith(prefix):
            model, _, action = path[len(prefix):].rpartition(":")
            handler = _GEMINI_ROUTES.get(action)
            return Route(GEMINI, handler, model, action) if handler and model else None
    return None


def vendor_for(path: str) -> Vendor:
    """Whose error format an unmatched path gets."""
    if path.startswith("/v1/messages"):
        return ANTHROPIC
    if path.startswith("/model/"):
        return BEDROCK
    if path.startswith("/v1beta/") or ":" in path:
        return GEMINI
    return OPENAI
