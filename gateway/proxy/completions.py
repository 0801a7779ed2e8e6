"""POST /v1/completions (OpenAI's legacy text completions) served by chat deployments."""
from __future__ import annotations

import orjson
from flask import Response

from gateway.proxy import bp, views
from gateway.proxy.dialects import completions as dialect
from gateway.services.routing.stream import open_stream


@bp.post("/completions")
def completions():
    req, plan, admission = views._admitted("completions", lambda body, key: dialect.to_chat(body))
    model = req.model
    if req.stream:
        inner, headers = open_stream(req, plan, admission)
        return Response(dialect.stream(inner, model), mimetype="text/event-stream",
                        headers={**views.SSE_HEADERS, **admission.rate_headers, **headers})
    data, headers = views.relayed(req, plan, admission)
    return views._json(orjson.dumps(dialect.from_chat(orjson.loads(data), model)), headers=headers)
