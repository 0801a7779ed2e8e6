"""OpenAI's media and utility APIs, for the kinds that speak OpenAI's format (OpenAI, Azure,
vLLM, Jina, Together, the mock): images, audio transcription, translation and speech,
moderations, and rerank at `{base}/rerank` (the Cohere/Jina body vLLM and Together accept).

Bodies pass through with the upstream model name put in; answers pass through as they came."""
from __future__ import annotations

import orjson
from urllib3 import encode_multipart_formdata

from gateway.providers.base import Reply, StreamError, Target, UpstreamRequest
from gateway.providers.openai_chat import _headers, _url


def _json_request(target: Target, path: str, body: dict) -> UpstreamRequest:
    return UpstreamRequest(_url(target, path), _headers(target), orjson.dumps(dict(body, model=target.model)))


def _form_fields(body: dict) -> list[tuple]:
    """The form as urllib3 encodes it: the file as (filename, bytes, type), repeated fields
    (timestamp_granularities[]) once per value, everything else as text."""
    fields: list[tuple] = []
    for name, value in body.items():
        if name == "file":
            fields.append((name, (value.filename, value.data, value.content_type)))
            continue
        for v in value if isinstance(value, list) else [value]:
            fields.append((name, v if isinstance(v, str) else orjson.dumps(v).decode()))
    return fields


def _form_request(target: Target, path: str, body: dict) -> UpstreamRequest:
    data, content_type = encode_multipart_formdata(_form_fields(dict(body, model=target.model)))
    return UpstreamRequest(_url(target, path), {**_headers(target), "content-type": content_type}, data)


def image_request(target: Target, body: dict) -> UpstreamRequest:
    return _json_request(target, "/images/generations", body)


def transcription_request(target: Target, body: dict) -> UpstreamRequest:
    return _form_request(target, "/audio/transcriptions", body)


def translation_request(target: Target, body: dict) -> UpstreamRequest:
    return _form_request(target, "/audio/translations", body)


def speech_request(target: Target, body: dict) -> UpstreamRequest:
    return _json_request(target, "/audio/speech", body)


def moderation_request(target: Target, body: dict) -> UpstreamRequest:
    return _json_request(target, "/moderations", body)


def rerank_request(target: Target, body: dict) -> UpstreamRequest:
    return _json_request(target, "/rerank", body)


def _holding(data: bytes, required: str) -> Reply:
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError as e:
        raise StreamError(f"upstream sent invalid JSON: {e}") from None
    if not isinstance(obj, dict) or required not in obj:
        raise StreamError(f"upstream answer has no {required}")
    return Reply(data, None)


def image_response(data: bytes, target: Target, body: dict | None = None) -> Reply:
    return _holding(data, "data")


def moderation_response(data: bytes, target: Target, body: dict | None = None) -> Reply:
    return _holding(data, "results")


def rerank_response(data: bytes, target: Target, body: dict | None = None) -> Reply:
    return _holding(data, "results")


def audio_text_response(data: bytes, target: Target, body: dict | None = None) -> Reply:
    """Any of json, verbose_json, text, srt and vtt: passed through as it came."""
    return Reply(data, None)
