"""/v1 images, audio (transcriptions, translations, speech), moderations and rerank: the same
request path as chat (views._admitted), each served by deployments of its mode."""
from __future__ import annotations

import io
from dataclasses import replace

from flask import Request, Response, current_app, request
from werkzeug.formparser import FormDataParser

from gateway.errors import UnsupportedMediaType
from gateway.proxy import bp, disconnect, requests
from gateway.proxy.views import _admitted
from gateway.services.api_request import ApiRequest, FilePart
from gateway.services.routing import media


def read_form(request: Request, request_id: str, endpoint: str, started: float, limit: int) -> ApiRequest:
    """A multipart/form-data body (an audio upload) within AUDIO_MAX_REQUEST_BYTES: its fields,
    and the file as a FilePart under `file`. Nothing validated yet."""
    if request.mimetype != "multipart/form-data":
        raise UnsupportedMediaType("This endpoint takes multipart/form-data with the audio in 'file', "
                                   f"not {(request.mimetype or 'no Content-Type')[:100]}.")
    raw = requests.body_bytes(request, requests.upload_limit(limit))
    _, form, files = FormDataParser().parse(io.BytesIO(raw), request.mimetype, len(raw),
                                            request.mimetype_params)
    body: dict = {}
    for name in form:
        values = form.getlist(name)
        body[name] = values[0] if len(values) == 1 else values
    if isinstance(body.get("temperature"), str):
        try:
            body["temperature"] = float(body["temperature"])
        except ValueError:
            pass            # the validator names it
    upload = files.get("file")
    if upload is not None:
        body["file"] = FilePart(upload.filename or "audio", upload.mimetype or media.OCTET, upload.read())
    return ApiRequest(request_id, endpoint, body, requests._tags(request, body), started=started)


def read_moderation(request: Request, request_id: str, endpoint: str, started: float, limit: int) -> ApiRequest:
    """A JSON body; without a model, MODERATION_DEFAULT_MODEL (OpenAI's model field is optional)."""
    req = requests.read(request, request_id, endpoint, started, limit)
    if req.body.get("model") is None:
        req = replace(req, body={**req.body, "model": current_app.config["MODERATION_DEFAULT_MODEL"]})
    return req


def _complete(req, plan, admission) -> Response:
    """A whole answer as the upstream sent it; a client that leaves meanwhile stops the call."""
    with disconnect.watch(request.environ) as cancel:
        data, content_type, headers = media.complete(req, plan, admission, cancel)
    return Response(data, content_type=content_type, headers={**admission.rate_headers, **headers})


@bp.post("/images/generations")
def images_generations():
    return _complete(*_admitted("images"))


@bp.post("/audio/transcriptions")
def audio_transcriptions():
    return _complete(*_admitted("transcriptions", read=read_form))


@bp.post("/audio/translations")
def audio_translations():
    return _complete(*_admitted("translations", read=read_form))


@bp.post("/audio/speech")
def audio_speech():
    """The audio streamed to the client as the upstream sends it."""
    req, plan, admission = _admitted("speech")
    body, content_type, headers = media.open_bytes(req, plan, admission)
    return Response(body, content_type=content_type,
                    headers={"X-Accel-Buffering": "no", **admission.rate_headers, **headers})


@bp.post("/moderations")
def moderations():
    return _complete(*_admitted("moderations", read=read_moderation))


@bp.post("/rerank")
def rerank():
    return _complete(*_admitted("rerank"))
