"""Settles that failed (the database locked or down), tried again in the background until they
land. A reservation left open would hold its key's quota, and its spend would never be counted.
Every store's settle is idempotent (once per request id), so trying again is always safe."""
from __future__ import annotations

import logging
import threading
import time
from collections import deque
from typing import Callable

from flask import Flask

from gateway.threads import PerProcessThread

log = logging.getLogger("gateway.quota")
MAX_PENDING = 100_000


class SettleRetry:
    """One per process (app.extensions["settle_retry"]); `settle(res, tokens, usd, now)` is the
    store's, called in an app context."""

    def __init__(self, app: Flask, settle: Callable, interval: float = 1.0, give_up_after: float = 3600.0):
        self.app, self.settle = app, settle
        self.interval, self.give_up_after = interval, give_up_after
        self.items: deque = deque()
        self.wake = threading.Event()
        self.thread = PerProcessThread("quota-settle-retry", self._run)

    def add(self, res, used_tokens: int, used_usd: float, now) -> None:
        """Try this settle again later."""
        if len(self.items) >= MAX_PENDING:
            dropped = self.items.popleft()
            log.error("too many settles waiting; %s is left open for release_stale", dropped[0].request_id)
        self.items.append((res, used_tokens, used_usd, now, time.monotonic()))
        self.wake.set()
        self.thread.ensure()

    def run_once(self) -> int:
        """Try the waiting settles, oldest first, until one fails (the database is still out:
        the others would each wait for it too); returns how many still wait."""
        for _ in range(len(self.items)):
            item = self.items.popleft()
            try:
                with self.app.app_context():
                    self.settle(*item[:4])
            except Exception:       # noqa: BLE001 - keep it, unless it is too old
                if time.monotonic() - item[4] > self.give_up_after:
                    log.error("gave up settling %s; release_stale frees its reservation", item[0].request_id)
                    continue
                self.items.appendleft(item)
                break
        return len(self.items)

    def _run(self) -> None:
        delay = self.interval
        while True:
            self.wake.wait()
            time.sleep(delay)
            if self.run_once():
                delay = min(delay * 2, 30.0)
                continue
            delay = self.interval
            self.wake.clear()
            if self.items:      # added while we were clearing
                self.wake.set()
