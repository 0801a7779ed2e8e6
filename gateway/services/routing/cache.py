"""The exact-match response cache, between the admitted request and the upstream: relay.complete
and stream.open_stream ask it first, so every endpoint that goes through them (translated
dialects too) is cached alike.

An entry is keyed by a hash of the scope (the key, or its team with CACHE_SCOPE=team), the
mode, the model after aliases and the canonical JSON of the body that goes upstream (sorted
keys; `model` replaced by the resolved one, `user` left out: it names the caller, not the
question). Streams and whole answers are kept apart (`stream` is in the body): a stream is
replayed chunk for chunk as it was first sent, and kept only when it ended normally.

A hit calls no upstream and is recorded with the original's tokens (for reporting), cost 0,
`cached` and `saved_usd` (what the original cost); quota.settle charges it nothing.
"""
from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from typing import Iterator

import orjson
from flask import Flask

from gateway.metrics import metrics
from gateway.services.response_store import store

UNKEYED = ("model", "user")     # replaced by the resolved model / not part of the question


@dataclass
class Lookup:
    """What the cache said about one request. `key_hash` None: the cache is off for it."""
    key_hash: str | None = None
    scope: str = ""
    ttl: int = 0
    hit: dict | None = None
    chunks: list | None = field(default_factory=list)     # a stream being kept; None: too big
    limit: int = 0                                          # CACHE_MAX_BYTES
    size: int = 0

    @property
    def on(self) -> bool:
        return self.key_hash is not None

    def add(self, chunk: bytes) -> None:
        """Keep one chunk of a stream going out; past the size limit, keep none."""
        if self.chunks is not None:
            self.size += len(chunk)
            self.chunks = self.chunks if self.size <= self.limit else None
            if self.chunks is not None:
                self.chunks.append(chunk)

    @property
    def headers(self) -> dict:
        if not self.on:
            return {}
        return {"x-gateway-cache": "hit" if self.hit is not None else "miss"}


def ttl_for(app: Flask, req, key, plan) -> int | None:
    """Seconds to keep the answer, or None when the cache is off: the request's header, else
    the key's setting, else its policy's; `x-gateway-cache: on` without any uses the default."""
    if key is None or key.id is None or req.cache == "off":     # the console's playground: never
        return None
    ttl = req.cache_ttl
    if ttl is None:
        ttl = key.cache_ttl if getattr(key, "cache_ttl", None) is not None else plan.cache_ttl
    if not ttl and req.cache in ("on", "refresh"):
        ttl = int(app.config["CACHE_DEFAULT_TTL"])
    return min(int(ttl), int(app.config["CACHE_MAX_TTL"])) if ttl else None


def scope_of(app: Flask, key) -> str:
    """Who shares entries: the key, or with CACHE_SCOPE=team its team (a key without one: itself)."""
    if app.config["CACHE_SCOPE"] == "team" and key.team_id is not None:
        return f"team:{key.team_id}"
    return f"key:{key.id}"


def key_hash(scope: str, mode: str, model: str | None, body: dict) -> str:
    """The entry's name: a hash of everything that may change the answer, and the scope."""
    question = {k: v for k, v in body.items() if k not in UNKEYED}
    material = orjson.dumps({"scope": scope, "mode": mode, "model": model, "body": question},
                            option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS)
    return hashlib.sha256(b"cache\0" + material).hexdigest()


def lookup(app: Flask, ex) -> Lookup:
    """Look the exchange's request up (unless it is off, or `refresh`, which only overwrites)."""
    req, key = ex.req, ex.admission.key
    ttl = ttl_for(app, req, key, ex.plan)
    if ttl is None:
        return Lookup()
    scope = scope_of(app, key)
    look = Lookup(key_hash(scope, req.mode, ex.plan.resolved or req.model, ex.body), scope, ttl,
                  limit=int(app.config["CACHE_MAX_BYTES"]))
    if req.cache != "refresh":
        raw = store(app).get(look.key_hash)
        if raw is not None:
            try:
                look.hit = orjson.loads(raw)
            except orjson.JSONDecodeError:
                look.hit = None
    if look.hit is None:
        metrics(app).cache_miss()
    return look


def _hit_fields(hit: dict) -> dict:
    p, c, t, cached = hit.get("usage") or (0, 0, 0, 0)
    return {"provider_id": hit.get("provider_id"), "provider": hit.get("provider"),
            "upstream_model": hit.get("upstream_model"), "prompt_tokens": p, "completion_tokens": c,
            "total_tokens": t, "cached_tokens": cached, "cost_usd": 0.0, "cached": True,
            "saved_usd": float(hit.get("cost") or 0.0)}


def answer(app: Flask, ex, look: Lookup) -> bytes:
    """A whole cached answer, recorded as a hit."""
    ex.record(app, 200, **_hit_fields(look.hit))
    return look.hit["body"].encode()


def replay(app: Flask, ex, look: Lookup) -> Iterator[bytes]:
    """A cached stream, chunk for chunk, recorded once however it ends (499: the client left)."""
    recorded = False
    try:
        for chunk in look.hit["chunks"]:
            yield b"data: " + chunk.encode() + b"\n\n"
        ex.record(app, 200, ttft_ms=(time.perf_counter() - ex.req.started) * 1000, **_hit_fields(look.hit))
        recorded = True
        yield b"data: [DONE]\n\n"
    finally:
        if not recorded:
            ex.record(app, 499, error_type="client_disconnected",
                      error_message="The client closed the connection.", **_hit_fields(look.hit))


def keep(app: Flask, look: Lookup, fields: dict, body: bytes | None = None) -> None:
    """Store a served answer (its body, or the stream's chunks kept in `look`) with what it
    cost; never an error, and nothing past CACHE_MAX_BYTES."""
    if not look.on or body is None and look.chunks is None:
        return
    entry = {"usage": [fields.get("prompt_tokens", 0), fields.get("completion_tokens", 0),
                       fields.get("total_tokens", 0), fields.get("cached_tokens", 0)],
             "cost": fields.get("cost_usd") or 0.0, "provider_id": fields.get("provider_id"),
             "provider": fields.get("provider"), "upstream_model": fields.get("upstream_model")}
    if body is not None:
        entry["body"] = body.decode("utf-8", "replace")
    else:
        entry["chunks"] = [c.decode("utf-8", "replace") for c in look.chunks]
    raw = orjson.dumps(entry)
    if len(raw) <= int(app.config["CACHE_MAX_BYTES"]):
        store(app).put(look.key_hash, look.scope, raw, look.ttl)
