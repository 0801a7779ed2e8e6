"""The gauges /metrics shows, read from this process: the usage writer's queue and spool, and
each deployment's circuit as this process's routing sees it."""
from __future__ import annotations

from flask import Flask

from gateway.metrics import Gauges
from gateway.services.accounting.usage import recorder
from gateway.services.routing import policies
from gateway.services.routing.health import health


def read(app: Flask) -> Gauges:
    """This process's Gauges; no database or Redis round trip."""
    rec = recorder(app)
    files, size = rec.spool_size()
    h = health(app)
    snap = app.extensions["catalog"].current       # as last loaded: a scrape never reloads it
    circuits = [(r.deployment_id, r.label, h.state(r.deployment_id)) for r in snap.by_id.values()]
    return Gauges(rec.queue.qsize(), files, size, circuits)


def known_model(app: Flask, name: str) -> bool:
    """Whether `name` is one the catalog serves, so it may label a series (clients can send any
    string; a series per typo would grow without bound)."""
    return policies.requestable(name, app.extensions["catalog"].current)
