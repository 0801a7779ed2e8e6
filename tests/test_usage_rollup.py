"""The usage rollup: kept by the usage writer, equal to the raw records, read by the charts."""
from __future__ import annotations

import math
import random
from dataclasses import asdict, replace
from datetime import timedelta

import pytest
from sqlalchemy import delete, func, insert, select

from gateway.extensions import db
from gateway.models import UsageHourly, UsageRecord, utcnow
from gateway.services.accounting import rollup
from gateway.services.reporting import charts, filters
from gateway.services.accounting.usage import UsageEntry, new_request_id, recorder
from tests.helpers import add_provider, make_key, usage_records

SUMMED = ("requests", "errors", "prompt_tokens", "completion_tokens", "total_tokens", "cost_usd", "latency_ms_sum")


def rollup_totals(app, grain=rollup.HOURLY) -> dict:
    with app.app_context():
        h = UsageHourly
        row = db.session.execute(select(*(func.coalesce(func.sum(getattr(h, c)), 0) for c in SUMMED))
                                 .where(h.grain == grain)).one()
        return dict(zip(SUMMED, (float(v) for v in row)))


def raw_totals(app) -> dict:
    with app.app_context():
        r = UsageRecord
        row = db.session.execute(select(
            func.count(), func.coalesce(func.sum((r.status >= 400).cast(db.Integer)), 0),
            func.coalesce(func.sum(r.prompt_tokens), 0), func.coalesce(func.sum(r.completion_tokens), 0),
            func.coalesce(func.sum(r.total_tokens), 0), func.coalesce(func.sum(r.cost_usd), 0.0),
            func.coalesce(func.sum(r.latency_ms), 0.0))).one()
        return dict(zip(SUMMED, (float(v) for v in row)))


def assert_same(a: dict, b: dict):
    assert a.keys() == b.keys()
    for k in a:
        assert a[k] == pytest.approx(b[k], rel=1e-9, abs=1e-9), k


def test_rollup_equals_raw_after_proxy_requests(app, client, mock):
    add_provider(app, "mock", "openai", mock + "/v1", ["echo", "echo+fail=500"])
    key = make_key(app)
    headers = {"Authorization": f"Bearer {key}"}
    for model in ("echo", "echo", "echo+fail=500", "echo", "nope"):
        client.post("/v1/chat/completions", headers=headers,
                    json={"model": model, "messages": [{"role": "user", "content": "hello there"}]})
    rows = usage_records(app)
    assert len(rows) == 5 and sum(r.status >= 400 for r in rows) == 2
    raw = raw_totals(app)
    for grain in (rollup.HOURLY, rollup.DAILY, rollup.DAILY_KEYS):
        assert_same(rollup_totals(app, grain), raw)
    with app.app_context():
        assert rollup.since() == rollup.EPOCH       # a fresh database is rolled up from the start
        f, _ = filters.parse_filter({"range": "7d"})
        assert any(s[0] == "rollup" for s in charts.segments(f)) or f.end.minute == 0
        t = charts.totals(f)
        assert t["requests"] == 5 and t["errors"] == 2


def test_replayed_spool_is_not_counted_twice(sqlite_app):
    rec = recorder(sqlite_app)
    e = UsageEntry(request_id=new_request_id(), endpoint="chat", status=200, prompt_tokens=7, total_tokens=7)
    rec.record(e)
    usage_records(sqlite_app)
    rec._spool([asdict(e)])     # as if a crash had left it spooled after it was written
    rec.record(replace(e, request_id=new_request_id(), prompt_tokens=8, total_tokens=8))
    assert len(usage_records(sqlite_app)) == 2
    totals = rollup_totals(sqlite_app)
    assert totals["requests"] == 2 and totals["prompt_tokens"] == 15
    assert_same(totals, raw_totals(sqlite_app))


def test_percentile_estimates_within_one_bucket():
    rng = random.Random(3)
    for dist in (lambda: rng.expovariate(1 / 400), lambda: rng.lognormvariate(7, 1.2), lambda: rng.uniform(0, 20)):
        values = sorted(dist() for _ in range(5000))
        counts = [0] * len(rollup.HIST)
        for v in values:
            counts[rollup.bucket(v)] += 1
        for q in (0.5, 0.95, 0.99):
            exact = values[math.ceil(q * len(values)) - 1]          # nearest rank
            est = rollup.percentile(counts, q)
            if exact < rollup.EDGES[0]:
                assert abs(est - exact) < rollup.EDGES[0]
            else:
                assert exact / 2 ** (1 / 3) < est < exact * 2 ** (1 / 3), (q, exact, est)


def _seed(app, n=3000):
    """Raw records over ~40 days, several keys, models, statuses and tags; then a rebuild."""
    rng = random.Random(11)
    now = utcnow()
    rows = [dict(request_id=f"s{i}", endpoint="chat", status=rng.choice([200, 200, 200, 429, 502]),
                 created_at=now - timedelta(seconds=rng.randint(0, 40 * 86400)),
                 requested_model=rng.choice(["m1", "m2", "m3", None]), provider=rng.choice(["a", "b"]),
                 key_id=rng.choice([1, 2, 3, None]), user_id=rng.choice([1, 2, None]),
                 prompt_tokens=rng.randint(0, 50), completion_tokens=rng.randint(0, 50), total_tokens=rng.randint(0, 100),
                 cost_usd=rng.random() / 100, latency_ms=rng.lognormvariate(6, 1), tags={"f": rng.choice("xy")},
                 attempts=[], variant=rng.choice([None, "b"]))
            for i in range(n)]
    with app.app_context():
        db.session.execute(insert(UsageRecord), rows)
        db.session.commit()
        assert rollup.since() is None                 # raw records only until rebuilt
        assert rollup.rebuild() == n
        assert rollup.since() == rollup.EPOCH


FILTERS = [{"range": "30d"}, {"range": "7d", "group": "provider"}, {"range": "24h"}, {"range": "30d", "group": "key"},
           {"range": "30d", "group": "user", "status": "error"}, {"range": "7d", "model": "m2", "key_id": "2"},
           {"range": "30d", "status": "4xx", "group": "model"}, {"range": "custom", "start": "2000-01-01", "end": "2999-01-01"}]


@pytest.mark.parametrize("args", FILTERS, ids=lambda a: "&".join(f"{k}={v}" for k, v in a.items()))
def test_charts_same_from_rollup_and_raw(app, args):
    _seed(app)
    with app.app_context():
        f, _ = filters.parse_filter(args)
        exact = replace(f, exact=True)
        assert any(s[0] == "rollup" for s in charts.segments(f))
        a, b = charts.totals(f), charts.totals(exact)
        assert a.keys() == b.keys() and all(a[k] == pytest.approx(b[k]) for k in a)
        assert a["requests"] > 0
        norm = lambda rows: sorted((r["group"], r["requests"], r["errors"], r["tokens"], round(r["cost"], 9)) for r in rows)  # noqa: E731
        assert norm(charts.breakdown(f)) == norm(charts.breakdown(exact))
        sa, sb = charts.series(f), charts.series(exact)
        assert sa["unit"] == sb["unit"]
        assert {g: {t: c[:2] for t, c in cells.items()} for g, cells in sa["groups"].items()} == \
               {g: {t: c[:2] for t, c in cells.items()} for g, cells in sb["groups"].items()}
        estimates = charts.latency_percentiles(f)
        exact_ranks = nearest_ranks(exact)
        assert [p[0] for p in estimates] == sorted(exact_ranks)
        for t, p50, p95 in estimates:
            for est, true in ((p50, exact_ranks[t][0]), (p95, exact_ranks[t][1])):
                assert true / 2 ** (1 / 3) <= est <= true * 2 ** (1 / 3) or abs(est - true) < rollup.EDGES[0]


def nearest_ranks(f) -> dict:
    """bucket -> (p50, p95) by nearest rank over the raw records, computed here in Python."""
    rows = db.session.execute(select(UsageRecord.created_at, UsageRecord.latency_ms)
                              .where(*filters.conditions(f), UsageRecord.status < 400)).all()
    by: dict = {}
    for t, ms in rows:
        t = t.replace(minute=0, second=0, microsecond=0)
        by.setdefault(t.replace(hour=0) if charts.bucket_unit(f) == "day" else t, []).append(ms)
    return {t: tuple(sorted(v)[math.ceil(q * len(v)) - 1] for q in (0.5, 0.95)) for t, v in by.items()}


def test_tag_views_read_raw_records(app):
    _seed(app, n=300)
    with app.app_context():
        f, _ = filters.parse_filter({"range": "30d", "group": "tag", "tag_key": "f"})
        assert charts.segments(f) == [("raw", f.start, f.end)]
        f, _ = filters.parse_filter({"range": "30d", "tag": "f=x"})
        assert charts.segments(f) == [("raw", f.start, f.end)]
        assert 0 < charts.totals(f)["requests"] < 300


def test_rebuild_rollup_command_is_repeatable(app):
    _seed(app, n=500)
    before = rollup_totals(app)
    with app.app_context():
        db.session.execute(delete(UsageHourly).where(UsageHourly.grain == rollup.DAILY))
        db.session.commit()
    result = app.test_cli_runner().invoke(args=["usage", "rebuild-rollup", "--days-per-batch", "7"])
    assert result.exit_code == 0, result.output
    assert "rollup rebuilt from 500 usage records" in result.output
    assert_same(rollup_totals(app), before)
    assert_same(rollup_totals(app, rollup.DAILY), raw_totals(app))


def test_records_survive_a_missing_rollup_table(sqlite_app):
    with sqlite_app.app_context():
        UsageHourly.__table__.drop(db.engine)
    rec = recorder(sqlite_app)
    rec.record(UsageEntry(request_id=new_request_id(), endpoint="chat", status=200, prompt_tokens=4))
    assert [r.prompt_tokens for r in usage_records(sqlite_app)] == [4]
    with sqlite_app.app_context():
        assert rollup.since() is None       # charts fall back to the raw records
