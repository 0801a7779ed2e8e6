"""The numbers a worker keeps for each quota lease (leases.py), and what they say."""
from __future__ import annotations

from dataclasses import dataclass

from flask import Flask

from gateway.services.accounting.counters import EPS
from gateway.services.accounting.limits import Counter, Limit, Reservation


@dataclass
class Lease:
    """Room this worker holds on one counter row."""
    limit: Limit
    lid: str                    # its ledger row's request_id
    held_tokens: int = 0        # reserved in the database for this lease
    held_usd: float = 0.0
    free_tokens: int = 0        # of what is held, not reserved by a request
    free_usd: float = 0.0
    used_tokens: int = 0        # settled here, not yet moved to used in the database
    used_usd: float = 0.0
    requests: int = 0           # admitted here since the last flush
    inflight: int = 0
    seen: Counter | None = None     # the row as of the last refill or flush
    touched: float = 0.0        # last admitted a request (monotonic)
    refreshed: float = 0.0      # last wrote its ledger row (monotonic)
    revoked: bool = False       # released by another worker: admits nothing more


@dataclass
class Step:
    """What one flush writes for one lease."""
    lease: Lease
    used_tokens: int
    used_usd: float
    requests: int
    back_tokens: int
    back_usd: float
    ended: bool = False


def enabled(app: Flask) -> bool:
    """QUOTA_LEASES: "on", "off", or "auto": on when gevent serves (gunicorn's worker patched it),
    where the write per request is what limits throughput; off in tests and `flask run`, where
    one process and exact counters are easier to read."""
    mode = str(app.config.get("QUOTA_LEASES", "auto")).lower()
    if mode == "auto":
        try:
            from gevent import monkey
            return monkey.is_module_patched("socket")
        except ImportError:
            return False
    return mode in ("on", "1", "true", "yes")


def room(le: Lease, res: Reservation) -> bool:
    x = le.limit
    if x.tokens is not None and le.free_tokens < res.tokens:
        return False
    if x.usd is not None and le.free_usd + EPS < res.usd:
        return False
    return True


def low(le: Lease) -> bool:
    """The row has less room left outside the leases than one lease holds: others may need ours."""
    x, c = le.limit, le.seen
    if x.tokens is not None and x.tokens - c.used_tokens - c.reserved_tokens < le.held_tokens:
        return True
    if x.usd is not None and x.usd - c.used_usd - c.reserved_usd < le.held_usd - EPS:
        return True
    return False


def view(le: Lease) -> Counter:
    """The row as this worker sees it: what the database said, plus what was settled here since,
    with the lease's free room counted as free (for x-ratelimit-* headers and alerts)."""
    c = le.seen
    if c is None:
        return Counter(le.limit.scope, le.used_tokens, 0, le.used_usd, 0.0, le.requests, le.inflight)
    return Counter(c.scope, c.used_tokens + le.used_tokens,
                   max(0, c.reserved_tokens - le.used_tokens - max(le.free_tokens, 0)),
                   c.used_usd + le.used_usd, max(0.0, c.reserved_usd - le.used_usd - max(le.free_usd, 0.0)),
                   c.requests + le.requests, c.inflight)
