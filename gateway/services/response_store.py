"""Where the response cache and Idempotency-Key keep responses: Redis when REDIS_URL is set
(through redis_link's breaker), else the `cached_responses` table.

A store that cannot answer (Redis down, the database locked) behaves as an empty one that
keeps nothing: callers lose the cache or idempotency for a moment, never the request. Every
entry carries its expiry, checked against `clock` (a unix-time function tests can move), so
expiry is the same on both stores; Redis also expires keys itself, the database's rows are
purged in batches by the retention job (purge_expired).
"""
from __future__ import annotations

import logging
import struct
import time
from datetime import datetime, timezone
from typing import Callable

from flask import Flask
from sqlalchemy import delete, insert, select
from sqlalchemy.exc import IntegrityError

from gateway.database import locks
from gateway.extensions import db
from gateway.models import CachedResponse
from gateway.redis_link import RedisDown, RedisLink

log = logging.getLogger("gateway.response_store")

_EXPIRY = struct.Struct(">d")       # Redis values: the expiry (unix time), then the value
PURGE_BATCH = 1000


def _when(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, timezone.utc).replace(tzinfo=None)


class ResponseStore:
    """One per app and process (app.extensions["response_store"])."""

    def __init__(self, app: Flask, redis: RedisLink | None, prefix: str = "gw:rs:"):
        self.app, self.redis, self.prefix = app, redis, prefix
        self.clock: Callable[[], float] = time.time
        self._engine = None

    @property
    def kind(self) -> str:
        return "redis" if self.redis is not None and self.redis.url else "database"

    def get(self, key_hash: str) -> bytes | None:
        """The value stored under `key_hash`, unless it expired or the store cannot answer."""
        now = self.clock()
        if self.kind == "redis":
            raw = self._redis(lambda r: r.get(self.prefix + key_hash))
            if not raw or len(raw) < _EXPIRY.size:
                return None
            return raw[_EXPIRY.size:] if _EXPIRY.unpack_from(raw)[0] > now else None
        row = self._db(lambda c: c.execute(
            select(CachedResponse.body).where(CachedResponse.key_hash == key_hash,
                                              CachedResponse.expires_at > _when(now))).first())
        return bytes(row[0]) if row else None

    def put(self, key_hash: str, scope: str, value: bytes, ttl: float) -> None:
        """Store `value` for `ttl` seconds, replacing what was there."""
        self._write(key_hash, scope, value, ttl, replace=True)

    def add(self, key_hash: str, scope: str, value: bytes, ttl: float) -> bool | None:
        """Store `value` only when nothing live is stored under `key_hash`: True when it was
        stored, False when something was there, None when the store cannot answer."""
        return self._write(key_hash, scope, value, ttl, replace=False)

    def delete(self, key_hash: str) -> None:
        if self.kind == "redis":
            self._redis(lambda r: r.delete(self.prefix + key_hash))
        else:
            self._db(lambda c: c.execute(delete(CachedResponse).where(CachedResponse.key_hash == key_hash)))

    def _write(self, key_hash: str, scope: str, value: bytes, ttl: float, replace: bool) -> bool | None:
        now = self.clock()
        expires = now + ttl
        if self.kind == "redis":
            raw = _EXPIRY.pack(expires) + value
            ms = max(1, int(ttl * 1000))
            name = self.prefix + key_hash
            if replace:
                return self._redis(lambda r: bool(r.set(name, raw, px=ms)))

            def claim(r):
                if r.set(name, raw, px=ms, nx=True):
                    return True
                old = r.get(name)       # there, but maybe expired by our clock (tests move it)
                if old and len(old) >= _EXPIRY.size and _EXPIRY.unpack_from(old)[0] <= now:
                    r.delete(name)
                    return bool(r.set(name, raw, px=ms, nx=True))
                return False
            return self._redis(claim)
        row = {"key_hash": key_hash, "scope": scope[:80], "body": value, "created_at": _when(now),
               "expires_at": _when(expires)}

        def write(c):
            gone = CachedResponse.key_hash == key_hash
            c.execute(delete(CachedResponse).where(gone) if replace else
                      delete(CachedResponse).where(gone, CachedResponse.expires_at <= _when(now)))
            try:
                with c.begin_nested():
                    c.execute(insert(CachedResponse), row)
            except IntegrityError:
                return False
            return True
        return self._db(write)

    def purge_expired(self, batch: int = PURGE_BATCH) -> int:
        """Delete expired database rows, a batch per transaction; how many went."""
        done = 0
        while True:
            def one(c):
                hashes = list(c.scalars(select(CachedResponse.key_hash)
                                        .where(CachedResponse.expires_at <= _when(self.clock())).limit(batch)))
                if hashes:
                    c.execute(delete(CachedResponse).where(CachedResponse.key_hash.in_(hashes)))
                return len(hashes)
            n = self._db(one) or 0
            done += n
            if n < batch:
                return done

    def _redis(self, fn):
        try:
            return self.redis.run(fn)
        except RedisDown:       # the breaker logged it; no cache meanwhile
            return None

    def _db(self, fn):
        try:
            if self._engine is None:
                with self.app.app_context():
                    self._engine = db.engine
            with self._engine.begin() as conn, locks(self.app).wait(conn, self.app.config["DB_LOCK_TIMEOUT"]):
                return fn(conn)     # a locked SQLite holds the gevent worker: wait a bounded time
        except Exception:       # noqa: BLE001 - a store that cannot answer keeps nothing
            log.warning("response store: the database did not answer", exc_info=True)
            return None


def store(app: Flask) -> ResponseStore:
    """This app's store (built by services.init_app)."""
    return app.extensions["response_store"]
