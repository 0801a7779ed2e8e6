"""The usage page's cache and overhead tiles: exact nearest-rank percentiles and counts, whether
the covering index answers (a time range only) or the table does (a dimension or a member's scope)."""
from __future__ import annotations

import math
import random
import uuid
from datetime import timedelta

import pytest

from gateway.models import utcnow
from gateway.services.accounting.key_scope import Owner
from gateway.services.accounting.usage import UsageEntry, UsageRecorder, row
from gateway.services.reporting import cache_stats, filters


def _nearest(values: list[float], q: float) -> float | None:
    values = sorted(values)
    return values[max(0, math.ceil(q * len(values)) - 1)] if values else None


def _expected(records: list[UsageEntry]) -> dict:
    ok = [r for r in records if r.status == 200]
    hits = sum(r.cached for r in ok)
    timed = [r for r in records if r.overhead_ms is not None]
    wait = [r.latency_ms - r.overhead_ms for r in timed if not r.cached and r.status == 200]
    return {"hits": hits, "answered": len(ok), "hit_rate": hits / len(ok) if ok else 0.0,
            "saved_usd": sum(r.saved_usd for r in ok),
            "overhead_p50": _nearest([r.overhead_ms for r in timed], 0.5),
            "overhead_p95": _nearest([r.overhead_ms for r in timed], 0.95),
            "upstream_p50": _nearest(wait, 0.5), "upstream_p95": _nearest(wait, 0.95)}


def _same(got: dict, want: dict) -> None:
    assert set(got) == set(want)
    for name, value in want.items():
        assert got[name] == pytest.approx(value), name


def test_tiles_are_exact_with_and_without_the_covering_index(app):
    rng = random.Random(7)
    now = utcnow()
    records = []
    for i in range(400):
        cached = rng.random() < 0.2
        status = rng.choice([200] * 8 + [429, 502])
        records.append(UsageEntry(
            request_id=f"cs-{i}-{uuid.uuid4().hex[:6]}", endpoint="chat", status=status,
            created_at=now - timedelta(hours=rng.uniform(0.1, 24 * 20)), key_id=rng.choice([1, 2, 3]),
            user_id=rng.choice([10, 11]), requested_model=rng.choice(["a", "b"]), cached=cached,
            saved_usd=0.01 if cached and status == 200 else 0.0, latency_ms=round(rng.uniform(5, 900), 3),
            overhead_ms=None if rng.random() < 0.1 else round(rng.uniform(0.1, 4), 3)))
    with app.app_context():
        UsageRecorder._insert([row(e) for e in records])
        cases = [({"range": "24h"}, None, lambda r: r.created_at >= now - timedelta(hours=24)),
                 ({"range": "30d"}, None, lambda r: True),          # wide: the index on SQLite too
                 ({"range": "30d", "model": "a"}, None, lambda r: r.requested_model == "a"),
                 ({"range": "30d"}, Owner(10, None), lambda r: r.user_id == 10)]
        for args, owner, keep in cases:
            f, _ = filters.parse_filter(args, owner)
            assert filters.time_only(f) == (owner is None and "model" not in args)
            want = _expected([r for r in records if keep(r) and r.created_at >= f.start])
            assert want["overhead_p95"] is not None and want["upstream_p50"] is not None
            _same(cache_stats.summary(f), want)


def test_tiles_without_timed_requests(app):
    with app.app_context():
        f, _ = filters.parse_filter({"range": "24h"})
        assert cache_stats.summary(f) == {"hits": 0, "answered": 0, "hit_rate": 0.0, "saved_usd": 0.0,
                                          "overhead_p50": None, "overhead_p95": None,
                                          "upstream_p50": None, "upstream_p95": None}
