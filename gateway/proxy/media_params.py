"""Checks of the media and utility request bodies (images, audio, moderations, rerank), in the
style of params.py: OpenAI's types and ranges, a 400 naming the param before anything goes
upstream."""
from __future__ import annotations

from gateway.errors import InvalidRequest
from gateway.proxy import params
from gateway.proxy.params import boolean, integer, number, one_of, string
from gateway.services.api_request import FilePart

IMAGES = {"n": integer(1, 10), "size": string, "quality": string, "style": string,
          "response_format": one_of("url", "b64_json"), "user": string}
SPEECH = {"voice": lambda v, p: v if isinstance(v, (str, dict)) else string(v, p),
          "response_format": one_of("mp3", "opus", "aac", "flac", "wav", "pcm"),
          "speed": number(0.25, 4.0), "instructions": string}
AUDIO_TEXT = {"response_format": one_of("json", "text", "srt", "verbose_json", "vtt"),
              "temperature": number(0, 1), "prompt": string}
RERANK = {"top_n": integer(1), "return_documents": boolean}
MAX_SPEECH_CHARS = 4096         # OpenAI's limit
MAX_RERANK_DOCUMENTS = 10000


def _model(body: dict) -> None:
    model = body.get("model")
    if not isinstance(model, str) or not model.strip():
        raise InvalidRequest("You must provide a model parameter.", param="model")


def _text(body: dict, name: str, limit: int | None = None) -> None:
    v = body.get(name)
    if not isinstance(v, str) or not v.strip():
        raise InvalidRequest(f"'{name}' must be a non-empty string.", param=name)
    if limit is not None and len(v) > limit:
        raise InvalidRequest(f"'{name}' is over the {limit} character limit.", param=name,
                             code="string_above_max_length")


def images(body: dict) -> None:
    _model(body)
    _text(body, "prompt")
    params.check(IMAGES, body)


def speech(body: dict) -> None:
    _model(body)
    _text(body, "input", MAX_SPEECH_CHARS)
    if body.get("voice") is None:
        raise InvalidRequest("You must provide a voice parameter.", param="voice")
    params.check(SPEECH, body)


def _audio_text(body: dict, extra: dict) -> None:
    _model(body)
    if not isinstance(body.get("file"), FilePart) or not body["file"].data:
        raise InvalidRequest("You must upload an audio file in the 'file' field (multipart/form-data).",
                             param="file")
    params.check({**AUDIO_TEXT, **extra}, body)


def transcriptions(body: dict) -> None:
    _audio_text(body, {"language": string})


def translations(body: dict) -> None:
    _audio_text(body, {})


def moderations(body: dict) -> None:
    _model(body)
    inp = body.get("input")
    if not (isinstance(inp, str) and inp or isinstance(inp, list) and inp
            and all(isinstance(x, (str, dict)) for x in inp)):
        raise InvalidRequest("'input' must be a non-empty string, or an array of strings or input objects.",
                             param="input")


def rerank(body: dict) -> None:
    _model(body)
    _text(body, "query")
    docs = body.get("documents")
    if not isinstance(docs, list) or not docs or len(docs) > MAX_RERANK_DOCUMENTS or not all(
            isinstance(d, str) or isinstance(d, dict) and isinstance(d.get("text"), str) for d in docs):
        raise InvalidRequest(f"'documents' must be an array of 1 to {MAX_RERANK_DOCUMENTS} strings or "
                             "objects with a 'text'.", param="documents")
    params.check(RERANK, body)


VALIDATORS = {"images": images, "speech": speech, "transcriptions": transcriptions,
              "translations": translations, "moderations": moderations, "rerank": rerank}
