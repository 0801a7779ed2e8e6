"""This process's way to Redis: one client with short timeouts, behind a breaker.

Quota counters, deployment health and cache invalidation all ask Redis through here. A refused
or silent Redis costs the first caller one short timeout; the breaker then opens and callers
skip Redis at once (RedisDown) for REDIS_BREAKER_SECONDS, after which one caller probes it.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Callable, TypeVar

log = logging.getLogger("gateway.redis")
T = TypeVar("T")


class RedisDown(Exception):
    """Redis did not answer, or the breaker is open; retry_in: seconds until it is tried again."""

    def __init__(self, retry_in: float):
        super().__init__(f"Redis unavailable; next try in {retry_in:.1f}s")
        self.retry_in = retry_in


class RedisLink:
    """One per app and process (app.extensions["redis"])."""

    def __init__(self, url: str | None, connect_timeout: float = 0.25, timeout: float = 0.5,
                 cooldown: float = 5.0):
        self.url = url or None
        self.connect_timeout, self.timeout, self.cooldown = connect_timeout, timeout, cooldown
        self._client = None
        self.open_until = 0.0       # monotonic; 0: closed
        self.probing = False        # a half-open probe is out
        self.attempts = 0           # calls that went to Redis (tests, metrics)
        self.failures = 0           # calls that failed
        self.lock = threading.Lock()

    def client(self):
        """The redis.Redis client (made on first use; no retries: the breaker decides)."""
        if self._client is None:
            import redis
            from redis.backoff import NoBackoff
            from redis.retry import Retry
            self._client = redis.Redis.from_url(
                self.url, socket_connect_timeout=self.connect_timeout, socket_timeout=self.timeout,
                retry=Retry(NoBackoff(), 0), retry_on_timeout=False)
        return self._client

    @property
    def state(self) -> str:
        """closed (Redis is used), open (skipped) or half_open (the next call probes it)."""
        if not self.open_until:
            return "closed"
        return "open" if time.monotonic() < self.open_until or self.probing else "half_open"

    def retry_in(self) -> float:
        """Seconds until Redis is asked again; 0 when it is asked now."""
        return max(0.0, self.open_until - time.monotonic()) if self.open_until else 0.0

    def run(self, fn: Callable[[object], T]) -> T:
        """fn(client), or RedisDown without calling Redis while the breaker is open."""
        if self.url is None:
            raise RedisDown(float("inf"))
        probe = False
        if self.open_until:
            with self.lock:
                if time.monotonic() < self.open_until or self.probing:
                    raise RedisDown(max(self.retry_in(), 1.0))
                self.probing = probe = True
        self.attempts += 1
        try:
            out = fn(self.client())
        except Exception as e:      # any Redis failure (and its client's) opens the breaker
            self._failed(e)
            raise RedisDown(self.cooldown) from e
        finally:
            if probe:
                self.probing = False
        if self.open_until:
            self._closed()
        return out

    def _failed(self, e: Exception) -> None:
        with self.lock:
            self.failures += 1
            first = not self.open_until
            self.open_until = time.monotonic() + self.cooldown
        if first:
            log.warning("Redis did not answer (%s: %s); skipping it for %.0fs at a time until it does",
                        type(e).__name__, e, self.cooldown)

    def _closed(self) -> None:
        with self.lock:
            was_open, self.open_until = bool(self.open_until), 0.0
        if was_open:
            log.warning("Redis answers again")


def link(app) -> RedisLink:
    """This app's link (built by services.init_app; one per process)."""
    return app.extensions["redis"]
