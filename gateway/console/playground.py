"""Playground: try a model or policy from the browser, streamed through the normal relay."""
from __future__ import annotations

import orjson
from flask import Response, current_app, jsonify, render_template, request
from flask_login import current_user

from gateway.auth.rbac import WRITE, require_role
from gateway.console import bp
from gateway.errors import GatewayError, InvalidRequest
from gateway.services.accounting.quota import Admission
from gateway.services.api_request import ApiRequest
from gateway.services.reporting import marketplace
from gateway.services.routing.plan import plan as plan_for
from gateway.services.routing.stream import open_stream
from gateway.services.accounting.keys import KeyInfo
from gateway.services.accounting.usage import new_request_id, record_failure

MAX_PROMPT_CHARS = 100_000


@bp.get("/playground")
@require_role(*WRITE)
def playground():
    models, policies = marketplace.chat_choices()      # only what can chat: no embedding or media models
    return render_template("console/playground.html", model_names=models, policies=policies,
                           selected=request.args.get("model", ""))


def _body() -> dict:
    data = request.get_json(silent=True) or {}
    model = str(data.get("model") or "").strip()
    if not model:
        raise InvalidRequest("Pick a model.", param="model")
    messages = data.get("messages")
    if not isinstance(messages, list) or not messages:
        prompt = str(data.get("prompt") or "").strip()
        if not prompt:
            raise InvalidRequest("Write a message first.", param="prompt")
        messages = [{"role": "user", "content": prompt}]
        if str(data.get("system") or "").strip():
            messages.insert(0, {"role": "system", "content": str(data["system"]).strip()})
    if sum(len(str(m.get("content", ""))) for m in messages if isinstance(m, dict)) > MAX_PROMPT_CHARS:
        raise InvalidRequest("The conversation is too long for the playground.", param="prompt")
    body = {"model": model, "messages": messages, "stream": True, "stream_options": {"include_usage": True}}
    for name, cast, lo, hi in (("temperature", float, 0, 2), ("max_tokens", int, 1, 32_000)):
        if data.get(name) not in (None, ""):
            try:
                value = cast(data[name])
            except (TypeError, ValueError):
                raise InvalidRequest(f"{name} must be a number.", param=name) from None
            if not lo <= value <= hi:
                raise InvalidRequest(f"{name} must be between {lo} and {hi}.", param=name)
            body[name] = value
    return body


@bp.post("/playground/stream")
@require_role(*WRITE)
def playground_stream():
    """SSE like /v1 streams; recorded as usage of the console user with no API key."""
    try:
        body = _body()
    except InvalidRequest as e:
        return jsonify(e.body()), 400
    key = KeyInfo(id=None, name="console playground", prefix="console", user_id=current_user.id,
                  models=None, expires_at=None, revoked=False, team_id=current_user.team_id)
    req = ApiRequest(new_request_id(), "chat", body, {"source": "playground"})
    admission = Admission(key)      # the console user's own request: no API key, no quota
    try:
        plan = plan_for(req, key)
    except GatewayError as e:
        record_failure(current_app._get_current_object(), req, admission, e)
        return _error(e)
    try:
        stream, _ = open_stream(req, plan, admission)
    except GatewayError as e:       # recorded by the relay
        return _error(e)
    current_app.logger.debug("playground stream %s by user %s", req.request_id, current_user.id)
    return Response(stream, mimetype="text/event-stream",
                    headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no", "x-request-id": req.request_id})


def _error(e: GatewayError) -> Response:
    return Response(orjson.dumps(e.body()), status=e.status, mimetype="application/json")
