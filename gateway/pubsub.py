"""Cross-process cache invalidation over Redis pub/sub.

A change made in one worker (a revoked key, a new setting) is published on a channel; every
worker's listener drops its own cached copy. Without REDIS_URL, or while Redis is down, caches
fall back on their short TTL. Messages sent while a listener was disconnected are lost, so each
(re)subscription resets the caches that listen.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Callable

from flask import Flask

from gateway.redis_link import RedisDown, RedisLink
from gateway.threads import PerProcessThread

log = logging.getLogger("gateway.pubsub")


class Bus:
    """One per app and process (app.extensions["pubsub"]). Publishing goes through the process's
    RedisLink (short timeouts, breaker); the listener keeps its own connection, in its thread."""

    def __init__(self, url: str | None, link: RedisLink | None = None):
        self.url = url or None
        self.link = link or RedisLink(self.url)
        self.handlers: dict[str, tuple[Callable[[str], None], Callable[[], None] | None]] = {}
        self.listener = PerProcessThread("pubsub-listener", self._run)
        self.down_logged = False
        self.ready = threading.Event()      # subscribed to every channel: invalidations arrive
        self.stopped = False
        self.lock = threading.Lock()

    def subscribe(self, channel: str, on_message: Callable[[str], None],
                  on_reset: Callable[[], None] | None = None) -> None:
        """Call on_message(data) for every message on channel, and on_reset() after each
        (re)subscription, when messages may have been missed."""
        self.handlers[channel] = (on_message, on_reset)
        self.ready.clear()      # until the listener confirmed this channel too

    def ensure(self) -> None:
        """Start this process's listener; cheap when it runs. Lazy, since gunicorn forks after
        the app is made and a thread started before the fork does not survive it."""
        if self.url is None or not self.handlers or self.stopped:
            return
        self.listener.ensure(before_start=self.ready.clear)

    def stop(self) -> None:
        """End the listener (tests; a worker's listener lives as long as the process)."""
        self.stopped = True

    def publish(self, channel: str, data: str) -> bool:
        """Tell every process; False when there is no Redis or it did not answer (listeners cut
        off too reset their caches when they reconnect; meanwhile caches expire by TTL)."""
        if self.url is None:
            return False
        try:
            self.link.run(lambda r: r.publish(channel, data))
            return True
        except RedisDown:
            self._down()
            return False

    def _down(self) -> None:
        if not self.down_logged:
            self.down_logged = True
            log.warning("Redis unreachable: cached keys and settings expire by TTL only until it is back",
                        exc_info=True)

    def _run(self) -> None:
        delay = 0.5
        while not self.stopped:
            try:
                self._listen()
                delay = 0.5
            except Exception:
                self._down()
            self.ready.clear()
            if self.stopped:
                return
            time.sleep(delay)
            delay = min(delay * 2, 10.0)

    def _listen(self) -> None:
        import redis
        client = redis.Redis.from_url(self.url, socket_connect_timeout=self.link.connect_timeout,
                                      socket_timeout=5.0, health_check_interval=10)
        ps = client.pubsub()
        asked: set[str] = set()
        confirmed: set[str] = set()
        try:
            while not self.stopped:
                new = set(self.handlers) - asked
                if new:     # the first channels, or one added since (on this same connection)
                    ps.subscribe(*new)
                    asked |= new
                msg = ps.get_message(timeout=0.5)
                if msg is None:
                    continue
                channel = msg["channel"].decode()
                on_message, on_reset = self.handlers.get(channel, (None, None))
                if msg["type"] == "subscribe":
                    # Whatever was published before this point is lost: start that cache afresh.
                    if on_reset is not None:
                        on_reset()
                    confirmed.add(channel)
                    if confirmed >= set(self.handlers):
                        if self.down_logged:
                            log.warning("Redis is back: cache invalidations are shared again")
                        self.down_logged = False
                        self.ready.set()
                elif msg["type"] == "message" and on_message is not None:
                    try:
                        on_message(msg["data"].decode())
                    except Exception:
                        log.exception("invalidation handler for %s failed", channel)
        finally:
            ps.close()
            client.close()


def bus(app: Flask) -> Bus:
    """This app's bus (built by services.init_app)."""
    return app.extensions["pubsub"]
