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
from gateway.providers.base import StreamError, Usage
from gateway.providers.registry import ADAPTERS

log = logging.getLogger("gateway.shadow")
_slots: dict[int, threading.BoundedSemaphore] = {}


def _slot(app: Flask) -> threading.BoundedSemaphore:
    sem = _slots.get(id(app))
    if sem is None:
        sem = _slots.setdefault(id(app), threading.BoundedSemaphore(
            int(app.config["SHADOW_MAX_CONCURRENCY"])))
    return sem


def mirror(app: Flask, call, route, mode: str) -> bool:
    """Send a copy of `call` to `route` in the background; False when too many are in flight."""
    sem = _slot(app)
    if not sem.acquire(blocking=False):
        return False
    body = {k: v for k, v in call.body.items() if k not in ("stream", "stream_options")}
    tags = {"shadow": "1", "shadow_of": call.request_id}
    if call.key is not None:
        tags["key_prefix"] = call.key.prefix
    t = threading.Thread(target=_run, args=(app, sem, route, mode, body, call.model, call.endpoint, tags),
                         name="shadow", daemon=True)
    t.start()
    return True


def _run(app: Flask, sem, route, mode, body, model, endpoint, tags) -> None:
    from gateway.services.routing import relay
    from gateway.services.routing.health import health

    shadow_call = relay.Call(request_id="shd_" + uuid.uuid4().hex, endpoint=endpoint, body=body,
                             key=None, tags=tags, variant="shadow")
    shadow_call.body = dict(body, model=model)
    fields = {"provider_id": route.provider_id, "provider": route.provider,
              "upstream_model": route.target.model}
    t0 = time.perf_counter()
    try:
        with app.app_context():
            adapter = ADAPTERS[route.kind]
            req = (adapter.embeddings_request(route.target, body) if mode == "embedding"
                   else adapter.chat_request(route.target, body, False))
            try:
                resp = app.extensions["transport"].send(req)
                try:
                    data = resp.read()
                finally:
                    resp.close()
                ms = (time.perf_counter() - t0) * 1000
                if resp.status >= 400:
                    raise relay.upstream_failure(route, resp.status, data[:65536], resp.headers)
                reply = (adapter.embeddings_response if mode == "embedding" else adapter.chat_response)(
                    data, route.target)
            except (UpstreamError, StreamError) as e:
                err = e if isinstance(e, UpstreamError) else UpstreamError(str(e)[:200], code="malformed")
                health(app).failure(route, (time.perf_counter() - t0) * 1000,
                                    status=err.upstream_status, retry_after=err.retry_after)
                relay.record_failure(app, shadow_call, err, **fields)
                return
            usage = reply.usage or Usage(prompt_tokens=0, estimated=True)
            health(app).success(route, ms, None, usage.completion_tokens, usage.total_tokens)
            entry = relay.entry_for(shadow_call, 200, **fields, prompt_tokens=usage.prompt_tokens,
                                    completion_tokens=usage.completion_tokens,
                                    total_tokens=usage.total_tokens, cached_tokens=usage.cached_tokens,
                                    estimated=usage.estimated,
                                    cost_usd=relay.pricing.cost_of(route.price(), usage))
            relay.record(app, shadow_call, entry)
    except Exception:      # noqa: BLE001 - a shadow must never hurt anything
        log.warning("shadow request failed", exc_info=True)
    finally:
        sem.release()
