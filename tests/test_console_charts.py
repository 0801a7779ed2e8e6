"""Usage aggregation in SQL: buckets, groups, percentiles on both dialects; page timing at 100k rows."""
from __future__ import annotations

import os
import random
import time
from datetime import timedelta

import pytest
from sqlalchemy import insert

from console_client import Console, make_user
from gateway.extensions import db
from gateway.models import UsageRecord, utcnow
from gateway.services.reporting import charts, filters


def _rows(n: int, start, **fields):
    base = dict(endpoint="chat", status=200, created_at=utcnow() - timedelta(minutes=5), tags={}, attempts=[])
    return [dict(base, request_id=f"r{start}-{i}", **fields) for i in range(n)]


def test_percentiles_per_bucket(app):
    with app.app_context():
        rows = _rows(100, 0, requested_model="m")
        for i, r in enumerate(rows):
            r["latency_ms"] = float(i + 1)          # 1..100
        errors = _rows(5, 1, requested_model="m", status=500, latency_ms=10_000.0)
        db.session.execute(insert(UsageRecord), rows + errors)
        db.session.commit()
        f, _ = filters.parse_filter({"range": "24h"})
        (bucket, p50, p95), = charts.latency_percentiles(f)
        # Postgres interpolates (50.5, 95.05); SQLite takes the nearest rank (50, 95). Errors are left out.
        assert p50 == pytest.approx(50.5, abs=0.6) and p95 == pytest.approx(95, abs=0.1)
        t = charts.totals(f)
        assert t["requests"] == 105 and t["errors"] == 5


def test_series_buckets_groups_and_other(app):
    now = utcnow()
    with app.app_context():
        rows = []
        for i in range(10):
            rows.append(dict(request_id=f"a{i}", endpoint="chat", status=200, created_at=now - timedelta(hours=i % 3, minutes=1),
                             requested_model=f"model-{i}", total_tokens=10, cost_usd=0.1, tags={"feature": "a" if i % 2 else "b"}, attempts=[]))
        db.session.execute(insert(UsageRecord), rows)
        db.session.commit()
        f, _ = filters.parse_filter({"range": "24h"})
        s = charts.series(f)
        assert s["unit"] == "hour"
        assert len(s["groups"]) == charts.TOP_GROUPS + 1 and "other" in s["groups"]
        assert sum(c[0] for cells in s["groups"].values() for c in cells.values()) == 10
        assert len({t for cells in s["groups"].values() for t in cells}) == 3
        f, _ = filters.parse_filter({"range": "7d", "group": "tag", "tag_key": "feature"})
        assert charts.bucket_unit(f) == "day"
        assert {b["group"]: b["requests"] for b in charts.breakdown(f)} == {"a": 5, "b": 5}
        f, _ = filters.parse_filter({"range": "24h", "tag": "feature=a"})
        assert charts.totals(f)["requests"] == 5
        figs = charts.figures(f, budget=1.0)
        assert set(figs) == {"requests", "tokens", "cost", "latency"}
        assert figs["cost"]["layout"]["annotations"][0]["text"] == "budget $1.00"
        assert sum(sum(t["y"]) for t in figs["requests"]["data"]) == 5


def test_custom_range_validation():
    f, errors = filters.parse_filter({"range": "custom", "start": "2030-01-10", "end": "2030-01-01"})
    assert "end" in errors and f.range == "24h"
    f, errors = filters.parse_filter({"range": "custom", "start": "2030-01-01", "end": "2030-01-01"})
    assert not errors and f.end - f.start == timedelta(days=1)


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("GATEWAY_PERF"), reason="timing run: set GATEWAY_PERF=1 (prints, asserts nothing on time)")
def test_console_pages_with_100k_usage_records(app):
    """Seeds 100 000 records over 30 days and prints how long the heavy pages take."""
    rng = random.Random(7)
    now = utcnow()
    models = [f"model-{i}" for i in range(12)]
    with app.app_context():
        batch = []
        for i in range(100_000):
            batch.append(dict(request_id=f"p{i}", endpoint="chat", status=200 if rng.random() > .03 else 502,
                              created_at=now - timedelta(seconds=rng.randint(0, 30 * 86400)),
                              requested_model=rng.choice(models), provider=rng.choice(["a", "b", "c"]),
                              key_id=rng.randint(1, 50), user_id=rng.randint(1, 5), total_tokens=rng.randint(10, 2000),
                              prompt_tokens=5, completion_tokens=5, cost_usd=rng.random() / 100,
                              latency_ms=rng.expovariate(1 / 400), tags={"feature": rng.choice("xyz")}, attempts=[]))
            if len(batch) == 10_000:
                db.session.execute(insert(UsageRecord), batch)
                batch = []
        db.session.commit()
        dialect = db.engine.dialect.name
        if not os.environ.get("GATEWAY_PERF_RAW"):     # as `gateway usage rebuild-rollup` does on an upgrade
            from gateway.services.accounting import rollup
            t0 = time.perf_counter()
            rollup.rebuild()
            print(f"{dialect:10s} {'rebuild-rollup':48s}     {(time.perf_counter() - t0) * 1000:7.1f} ms")
    make_user(app, "admin@example.com", "admin")
    c = Console(app, "admin@example.com")
    for url in ("/", "/usage?range=24h", "/usage?range=7d", "/usage?range=30d", "/usage?range=30d&group=key",
                "/usage?range=30d&group=tag&tag_key=feature", "/logs?range=30d", "/logs?range=30d&page=50",
                "/keys", "/export.csv?range=24h"):
        c.get(url)      # warm caches (templates)
        t0 = time.perf_counter()
        r = c.get(url)
        print(f"{dialect:10s} {url:48s} {r.status_code} {(time.perf_counter() - t0) * 1000:7.1f} ms")
