"""Circuit-breaker transitions, kept for the downtime history (deployment_events).

The breaker (health.py) notes a transition in a bounded in-memory buffer, never writing to the
database on the request path; the usage writer's thread flushes the buffer with its own
batches (UsageRecorder.also_flush). While the database is down the events wait in the
buffer; past BUFFER_MAX the oldest are dropped, counted and logged.
"""
from __future__ import annotations

import logging
import threading
import time
from collections import deque
from datetime import datetime, timezone

from flask import Flask

from gateway.database import bounded_session
from gateway.extensions import db
from gateway.models import DeploymentEvent

log = logging.getLogger("gateway.health")

STATES = ("opened", "half_open", "closed")
BUFFER_MAX = 1000


class BreakerLog:
    """One per worker process (app.extensions["breaker_log"])."""

    def __init__(self, app: Flask, size: int = BUFFER_MAX):
        self.app = app
        self.events: deque[dict] = deque()
        self.size = size
        self.lock = threading.Lock()
        self.dropped = 0

    def note(self, deployment_id: int, state: str, reason: str = "", at: float | None = None) -> None:
        """Remember one transition; cheap and never blocking on the database."""
        row = {"deployment_id": deployment_id, "state": state, "reason": reason[:200],
               "at": datetime.fromtimestamp(at or time.time(), timezone.utc).replace(tzinfo=None)}
        with self.lock:
            if len(self.events) >= self.size:
                self.events.popleft()
                self.dropped += 1
                if self.dropped in (1, 10, 100) or self.dropped % 1000 == 0:
                    log.error("breaker history buffer full: %d transitions dropped", self.dropped)
            self.events.append(row)

    def flush(self) -> int:
        """Write the buffered transitions (the usage writer's thread calls this); on failure they
        go back to the front of the buffer for the next try. Returns how many were written."""
        with self.lock:
            rows, self.events = list(self.events), deque()
        if not rows:
            return 0
        try:
            with self.app.app_context():
                try:
                    with bounded_session():
                        db.session.execute(DeploymentEvent.__table__.insert(), rows)
                        db.session.commit()
                finally:
                    db.session.remove()
        except Exception:       # the database is down: keep them for later
            log.warning("breaker history write failed; %d transitions kept for the next try", len(rows),
                        exc_info=True)
            with self.lock:
                room = max(0, self.size - len(self.events))
                self.dropped += max(0, len(rows) - room)
                self.events.extendleft(reversed(rows[-room:] if room else []))
            return 0
        return len(rows)


def breaker_log(app: Flask) -> BreakerLog | None:
    return app.extensions.get("breaker_log")
