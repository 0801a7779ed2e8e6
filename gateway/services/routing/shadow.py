"""Shadow traffic: a sampled copy of a request sent to a candidate deployment in the
background. The client never waits for it or sees it; its result is recorded (variant
"shadow", tags shadow=1) under no key, so it is never billed to anyone's quota."""
from __future__ import annotations

import logging
import threading
import time
import uuid

from flask import Flask

from gateway.errors import UpstreamError
from gateway.providers.base import Usage
from gateway.services.accounting import pricing, usage
from gateway.services.api_request import ApiRequest
from gateway.services.routing.health import health
from gateway.services.routing.upstream import attempt

log = logging.getLogger("gateway.shadow")


def mirror(app: Flask, req: ApiRequest, key, route) -> bool:
    """Send a copy of `req` to `route` in the background; False when too many are in flight."""
    sem = app.extensions["shadow_slots"]     # SHADOW_MAX_CONCURRENCY per process
    if not sem.acquire(blocking=False):
        return False
    tags = {"shadow": "1", "shadow_of": req.request_id}
    if key is not None:
        tags["key_prefix"] = key.prefix
    body = {k: v for k, v in req.body.items() if k not in ("stream", "stream_options")}
    copy = ApiRequest("shd_" + uuid.uuid4().hex, req.endpoint, body, tags)
    threading.Thread(target=_run, args=(app, sem, copy, route), name="shadow", daemon=True).start()
    return True


def _run(app: Flask, sem: threading.BoundedSemaphore, req: ApiRequest, route) -> None:
    fields = {"provider_id": route.provider_id, "provider": route.provider,
              "upstream_model": route.target.model}
    t0 = time.perf_counter()
    try:
        with app.app_context():
            try:
                answer = attempt(app, route, req.body, req.operation, stream=False)
            except UpstreamError as e:
                health(app).failure(route, (time.perf_counter() - t0) * 1000,
                                    status=e.upstream_status, retry_after=e.retry_after)
                usage.record_failure(app, req, None, e, variant="shadow", **fields)
                return
            ms = (time.perf_counter() - t0) * 1000
            used = answer.reply.usage or Usage(prompt_tokens=0, estimated=True)
            health(app).success(route, ms, None, used.completion_tokens, used.total_tokens)
            entry = usage.entry_for(req, None, 200, variant="shadow", **fields,
                                    prompt_tokens=used.prompt_tokens, completion_tokens=used.completion_tokens,
                                    total_tokens=used.total_tokens, cached_tokens=used.cached_tokens,
                                    estimated=used.estimated, cost_usd=pricing.cost_of(answer.price, used))
            usage.record(app, req, None, entry)
    except Exception:      # noqa: BLE001 - a shadow must never hurt anything
        log.warning("shadow request failed", exc_info=True)
    finally:
        sem.release()
