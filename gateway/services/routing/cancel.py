"""Stopping a request's upstream call when its client leaves.

The edge watches the client's connection and calls `trigger()`; the relay `armed()`s the cancel
only while it waits on a provider (sending and reading, a backoff sleep). Under gevent, trigger
throws ClientGone into the request's greenlet if it is in such a wait, so the provider's
connection is closed at once; otherwise the next wait refuses to start. The interruption never
lands in bookkeeping: usage records, quota settling, health."""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import greenlet
from gevent import get_hub

from gateway.errors import ClientGone


class Cancel:
    """One request's way to stop waiting on its providers."""

    def __init__(self):
        self.gone = False
        self._armed: greenlet.greenlet | None = None

    @contextmanager
    def armed(self) -> Iterator[None]:
        """While inside, trigger() interrupts this greenlet with ClientGone."""
        if self.gone:
            raise ClientGone()
        self._armed = greenlet.getcurrent()
        try:
            yield
        finally:
            self._armed = None

    def trigger(self) -> None:
        """The client left (called from another greenlet of the same thread)."""
        self.gone = True
        # A hub callback runs while every other greenlet waits, so the armed check and the
        # throw cannot straddle the request leaving its armed section.
        get_hub().loop.run_callback(self._interrupt)

    def _interrupt(self) -> None:
        target = self._armed
        if target is not None and not target.dead:
            target.throw(ClientGone())

