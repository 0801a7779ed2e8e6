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
            status = 200 if rng.random() > .05 else rng.choice([429, 502, 400])
            batch.append(dict(request_id=f"p{i}", endpoint="chat", status=status,
                              error_type=None if status == 200 else rng.choice(["rate_limit", "server_error", "bad"]),
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
                "/keys", "/export.csv?range=24h", "/usage?range=30d&group=plan", "/",
                f"/usage/report.xlsx?month={now:%Y-%m}&by=team,tag:feature,key"):
        c.get(url)      # warm caches (templates)
        t0 = time.perf_counter()
        r = c.get(url)
        print(f"{dialect:10s} {url:48s} {r.status_code} {(time.perf_counter() - t0) * 1000:7.1f} ms")


def _seed_outcomes(app):
    """Eight records two hours ago: 5 served, 2 throttled (429), 1 upstream failure."""
    from gateway.models import ApiKey, Plan, Team
    t = (utcnow() - timedelta(hours=2)).replace(minute=10, second=0, microsecond=0)
    with app.app_context():
        gold, silver = Plan(name="gold"), Plan(name="<b>silver</b>")
        db.session.add_all([gold, silver])
        db.session.flush()
        team = Team(name="search", plan_id=silver.id)
        db.session.add(team)
        db.session.flush()
        own = ApiKey(name="own-plan", prefix="sk-gw-own1", key_hash="o1", team_id=team.id, plan_id=gold.id)
        inherited = ApiKey(name="team-plan", prefix="sk-gw-tm01", key_hash="t1", team_id=team.id)
        db.session.add_all([own, inherited])
        db.session.flush()
        rows = []
        for i, (status, err, key) in enumerate([(200, None, own), (200, None, own), (200, None, inherited),
                                               (200, None, inherited), (200, None, None),
                                               (429, "rate_limit_exceeded", own), (429, "insufficient_quota", inherited),
                                               (502, None, inherited)]):
            rows.append(dict(request_id=f"o{i}", endpoint="chat", status=status, error_type=err,
                             created_at=t + timedelta(minutes=i), requested_model="m", provider="p",
                             key_id=key.id if key else None, total_tokens=250 if status == 200 else 0,
                             cost_usd=0.01 if status == 200 else 0.0, latency_ms=10.0, tags={}, attempts=[]))
        db.session.execute(insert(UsageRecord), rows)
        db.session.commit()
        return {"gold": gold.id, "silver": silver.id}


def test_success_rate_throttled_and_cost_per_1k_from_raw_records_and_the_rollup(app):
    _seed_outcomes(app)
    with app.app_context():
        exact, _ = filters.parse_filter({"range": "7d"})
        exact.exact = True
        from gateway.services.accounting import rollup
        rollup.rebuild()
        fast, _ = filters.parse_filter({"range": "7d"})
        assert any(s[0] == "rollup" for s in charts.segments(fast))
        for f in (exact, fast):
            t = charts.totals(f)
            assert t["requests"] == 8 and t["errors"] == 3 and t["throttled"] == 2
            assert t["success_rate"] == pytest.approx(5 / 8)
            assert t["cost_per_1k"] == pytest.approx(0.05 / 1250 * 1000)      # $0.04 per 1K tokens
        empty, _ = filters.parse_filter({"range": "24h", "model": "nothing"})
        t = charts.totals(empty)
        assert t["success_rate"] is None and t["cost_per_1k"] is None and t["throttled"] == 0


def test_group_by_plan_takes_the_keys_plan_else_its_teams(app):
    _seed_outcomes(app)
    with app.app_context():
        for exact in (True, False):
            f, _ = filters.parse_filter({"range": "7d", "group": "plan"})
            f.exact = exact
            got = {b["group"]: (b["requests"], b["throttled"], b["tokens"]) for b in charts.breakdown(f)}
            assert got == {"gold": (3, 1, 500), "<b>silver</b>": (4, 1, 500), "—": (1, 0, 250)}
            assert sum(c[0] for cells in charts.series(f)["groups"].values() for c in cells.values()) == 8


def test_errors_by_type(app):
    from gateway.services.reporting import outcomes
    _seed_outcomes(app)
    with app.app_context():
        f, _ = filters.parse_filter({"range": "24h"})
        rows = outcomes.error_types(f)
        assert rows == [{"type": "insufficient_quota", "requests": 1, "throttled": 1},
                        {"type": "rate_limit_exceeded", "requests": 1, "throttled": 1},
                        {"type": "unknown", "requests": 1, "throttled": 0}]
        fig = outcomes.error_type_figure(rows)
        assert fig["data"][0]["x"] == [1, 1, 1] and fig["data"][0]["y"][-1] == "insufficient_quota"


def test_usage_page_shows_the_new_figures_to_each_role_in_scope(app):
    from gateway.models import ApiKey
    _seed_outcomes(app)
    make_user(app, "admin@example.com", "admin")
    make_user(app, "viewer@example.com", "viewer")
    member = make_user(app, "member@example.com", "member")
    with app.app_context():
        key = db.session.scalar(db.select(ApiKey).where(ApiKey.name == "own-plan"))
        key.user_id, key.team_id = member, None
        db.session.commit()
    for email in ("admin@example.com", "viewer@example.com"):
        html = Console(app, email).get("/usage?range=24h&group=plan").text
        assert 'id="success-rate">62.5%<' in html and 'id="throttled">2<' in html
        assert 'id="cost-per-1k">$0.04<' in html and 'id="chart-errors"' in html
        assert "&lt;b&gt;silver&lt;/b&gt;" in html and "<b>silver</b>" not in html
    html = Console(app, "member@example.com").get("/usage?range=24h").text
    assert 'id="success-rate">66.7%<' in html and 'id="throttled">1<' in html      # their key's 3 requests
    assert "insufficient_quota" not in html and "rate_limit_exceeded" in html


def test_downtime_history_periods_and_page(app):
    from gateway.models import DeploymentEvent
    from gateway.services.reporting import downtime
    from tests.browser import EVIL
    from tests.helpers import add_provider
    add_provider(app, "up", "openai", "https://api.example.com/v1", [EVIL])
    now = utcnow().replace(microsecond=0)
    with app.app_context():
        from gateway.models import Deployment
        dep = db.session.scalar(db.select(Deployment.id))
        ev = [(dep, "opened", now - timedelta(days=3), "before the range"),      # open when the range starts
              (dep, "closed", now - timedelta(hours=20), "probe succeeded"),
              (dep, "opened", now - timedelta(hours=10), "5 consecutive failures"),
              (dep, "half_open", now - timedelta(hours=9), "cool-down over"),
              (dep, "opened", now - timedelta(hours=9) + timedelta(seconds=1), "probe failed"),
              (dep, "closed", now - timedelta(hours=8), "probe succeeded"),
              (dep, "opened", now - timedelta(minutes=30), "error rate 60%"),          # still open
              (999, "opened", now - timedelta(hours=5), "gone"), (999, "closed", now - timedelta(hours=4), "")]
        db.session.execute(insert(DeploymentEvent), [dict(deployment_id=d, state=s, at=a, reason=r) for d, s, a, r in ev])
        db.session.commit()
        start = now - timedelta(hours=24)
        items = downtime.history(start, now, now=now)
        assert [d.deployment_id for d in items] == [dep, 999]
        d = items[0]
        assert [(p.start, p.end, p.ongoing) for p in d.periods] == [
            (start, now - timedelta(hours=20), False), (now - timedelta(hours=10), now - timedelta(hours=8), False),
            (now - timedelta(minutes=30), now, True)]
        assert d.seconds == (4 * 3600 + 2 * 3600 + 1800) and d.opened == 3
        assert items[1].label == "deployment #999 (deleted)" and items[1].seconds == 3600
        assert downtime.duration(d.seconds) == "6 h 30 min"
    make_user(app, "member@example.com", "member")
    html = Console(app, "member@example.com").get("/usage?range=24h").text
    assert 'id="chart-downtime"' in html and "6 h 30 min" in html and "still open" in html
    assert EVIL not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html


def test_overview_refreshes_itself(app):
    make_user(app, "viewer@example.com", "viewer")
    c = Console(app, "viewer@example.com")
    html = c.get("/").text
    assert 'id="overview-panel"' in html and 'hx-trigger="every 30s, visible-again"' in html
    assert "reports.js" in html and 'id="overview-success"' in html
    r = c.get("/", headers={"HX-Request": "true"})
    assert r.status_code == 200 and "<html" not in r.text and r.text.strip().startswith('<section class="stats" id="overview-panel"')
    assert "<html" in c.get("/", headers={"HX-Request": "true", "HX-Boosted": "true"}).text
    app.config["CONSOLE_REFRESH_SECONDS"] = 0
    assert "hx-trigger" not in c.get("/", headers={"HX-Request": "true"}).text


def test_the_view_export_carries_the_new_figures(app):
    import io

    import openpyxl

    from gateway.services.reporting import exports
    _seed_outcomes(app)
    with app.app_context():
        f, _ = filters.parse_filter({"range": "24h"})
        wb = openpyxl.load_workbook(io.BytesIO(exports.xlsx_bytes(f)))
    summary = {row[0]: row[1] for row in wb["Summary"].iter_rows(values_only=True) if row and row[0]}
    assert summary["Throttled (429)"] == 2 and summary["Success rate"] == pytest.approx(5 / 8)
    assert summary["USD per 1K tokens"] == pytest.approx(0.04)
