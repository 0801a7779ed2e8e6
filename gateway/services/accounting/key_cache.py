"""The key lookup cache: each process keeps what keys.lookup found for a few seconds, and
drops entries when a key changes here or (through Redis pub/sub) in another process."""
from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from flask import current_app

from gateway import pubsub
from gateway.database import UNAVAILABLE, DatabaseBusy, bounded_session
from gateway.errors import ServiceUnavailable
from gateway.extensions import db

INVALIDATE_CHANNEL = "gw:keys:invalidate"  # a key hash, or ALL
ALL = "*"


class KeyCache:
    """hash -> (KeyInfo or None, fetched at). Short TTL; with a bus, changes made in other
    processes drop entries at once instead of after the TTL.

    While the database cannot answer (locked past `wait` seconds, or down), an entry fetched
    less than `stale` seconds ago is served instead, and lookups of such entries pause for a
    TTL, so that only one request per TTL waits on the database; other keys get 503."""

    def __init__(self, lookup: Callable[[str], Any], ttl: float, max_entries: int = 20_000,
                 bus: pubsub.Bus | None = None, stale: float = 300.0, wait: float = 1.0):
        self.lookup = lookup        # keys.lookup: hash -> its KeyInfo from the database, or None
        # (typed Any: importing KeyInfo here would make keys and key_cache import each other)
        self.ttl = ttl
        self.max_entries = max_entries
        self.entries: dict[str, tuple[Any, float]] = {}
        self.lock = threading.Lock()
        self.bus = bus
        self.epoch = 0      # bumped by every invalidation: a lookup that raced one is not cached
        self.stale, self.wait = stale, wait
        self.db_down_until = 0.0    # a lookup just failed: serve usable entries without asking

    def get(self, key_hash: str) -> Any:
        if self.bus is not None:
            self.bus.ensure()
        now = time.monotonic()
        hit = self.entries.get(key_hash)
        if hit and now - hit[1] < self.ttl:
            return hit[0]
        usable = hit if hit and now - hit[1] < self.stale else None
        if usable and now < self.db_down_until:
            return usable[0]
        epoch = self.epoch
        try:
            with bounded_session(self.wait):
                found = self.lookup(key_hash)
        except UNAVAILABLE as e:
            db.session.rollback()
            self.db_down_until = now + max(self.ttl, 1.0)
            trace = not isinstance(e, DatabaseBusy)
            if usable:
                current_app.logger.warning("key lookup failed (%s); serving the entry cached %.0fs ago",
                                           e, now - usable[1], exc_info=trace)
                return usable[0]
            current_app.logger.warning("key lookup failed (%s) and the key is not cached", e, exc_info=trace)
            raise ServiceUnavailable("The gateway's database is busy or unreachable, so the API key "
                                     "cannot be checked now; retry shortly.", code="database_unavailable",
                                     retry_after=current_app.config["UNAVAILABLE_RETRY_AFTER"]) from None
        finally:
            db.session.remove()
        with self.lock:
            if self.epoch == epoch:
                if len(self.entries) >= self.max_entries:
                    self.entries.clear()
                self.entries[key_hash] = (found, now)
        return found

    def forget(self, key_hash: str) -> None:
        """Drop one entry in this process."""
        with self.lock:
            self.epoch += 1
            self.entries.pop(key_hash, None)

    def drop_all(self) -> None:
        """Drop every entry in this process."""
        with self.lock:
            self.epoch += 1
            self.entries.clear()

    def clear(self) -> None:
        """Drop every entry here and in every other process (e.g. a team's budget changed)."""
        self.drop_all()
        if self.bus is not None:
            self.bus.publish(INVALIDATE_CHANNEL, ALL)

    def on_message(self, data: str) -> None:
        if data == ALL:
            self.drop_all()
        else:
            self.forget(data)
