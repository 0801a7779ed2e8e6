"""The monthly cost-allocation workbook (console and `gateway usage report`), checked with
openpyxl against a hand computation on seeded records, and against the usage view."""
from __future__ import annotations

import io
from datetime import datetime

import openpyxl
import pytest
from sqlalchemy import insert, select

from gateway.extensions import db
from gateway.models import ApiKey, AuditLog, Plan, Team, UsageRecord
from gateway.services.accounting import rollup
from gateway.services.reporting import charts, filters, monthly
from tests.browser import EVIL
from tests.console_client import Console, make_user

MONTH = "2026-11"
NOV = {"range": "custom", "start": "2026-11-01", "end": "2026-11-30"}


def seed(app) -> dict:
    """Two teams (one on plan gold), three keys (one on gold itself), six November records,
    two just outside the month. Returns the ids."""
    with app.app_context():
        gold = Plan(name="gold")
        db.session.add(gold)
        db.session.flush()
        search, ads = Team(name="search", plan_id=gold.id), Team(name=EVIL)
        db.session.add_all([search, ads])
        db.session.commit()
        ids = {"gold": gold.id, "search": search.id, "ads": ads.id}
    ids["admin"] = make_user(app, "admin@example.com", "admin")
    ids["viewer"] = make_user(app, "viewer@example.com", "viewer")
    ids["alice"] = make_user(app, "alice@example.com", "member", team_id=ids["search"])
    ids["bob"] = make_user(app, "bob@example.com", "member")
    with app.app_context():
        keys = {"k_search": ApiKey(name="search-bot", prefix="sk-gw-srch", key_hash="h1", team_id=ids["search"],
                                   user_id=ids["alice"]),
                "k_ads": ApiKey(name="ads-bot", prefix="sk-gw-adsx", key_hash="h2", team_id=ids["ads"]),
                "k_bob": ApiKey(name="bob-key", prefix="sk-gw-bobx", key_hash="h3", user_id=ids["bob"],
                                plan_id=ids["gold"])}
        db.session.add_all(keys.values())
        db.session.commit()
        ids.update({name: k.id for name, k in keys.items()})
        users = {k.id: k.user_id for k in keys.values()}

        def rec(i, when, key, model, tags, p, c, cost, status=200, error_type=None, user=None):
            kid = ids[key] if key else None
            return dict(request_id=f"r{i}", endpoint="chat", created_at=when, key_id=kid,
                        user_id=users.get(kid, user), requested_model=model, provider="up", tags=tags,
                        prompt_tokens=p, completion_tokens=c, total_tokens=p + c, cost_usd=cost, status=status,
                        error_type=error_type, latency_ms=100.0, attempts=[])
        rows = [
            rec(1, datetime(2026, 11, 3, 10, 15), "k_search", "m1", {"project": "apollo"}, 100, 50, 0.30),
            rec(2, datetime(2026, 11, 3, 10, 45), "k_search", "m2", {"project": "apollo"}, 200, 100, 0.60),
            rec(3, datetime(2026, 11, 10, 8, 0), "k_ads", "m1", {"project": "zeus"}, 10, 5, 0.03),
            rec(4, datetime(2026, 11, 10, 8, 1), "k_ads", "m1", {}, 0, 0, 0.0, 429, "rate_limit_exceeded"),
            rec(5, datetime(2026, 11, 20, 23, 59), "k_bob", "m2", {"project": "apollo"}, 1000, 500, 1.50),
            rec(6, datetime(2026, 11, 30, 23, 59, 59), None, "m1", {}, 20, 10, 0.05, 502, "server_error",
                user=ids["admin"]),
            rec(7, datetime(2026, 10, 31, 23, 59, 59), "k_search", "m1", {"project": "apollo"}, 500, 500, 9.0),
            rec(8, datetime(2026, 12, 1, 0, 0, 0), "k_ads", "m1", {"project": "zeus"}, 500, 500, 9.0),
        ]
        db.session.execute(insert(UsageRecord), rows)
        db.session.commit()
    return ids


# By hand from the six November records: requests, total tokens, cost.
TOTAL = (6, 1995, 2.48)
BY_TEAM = {"search": (2, 450, 0.90), EVIL: (2, 15, 0.03), "(no team)": (2, 1530, 1.55)}
BY_PROJECT = {"apollo": (3, 1950, 2.40), "zeus": (1, 15, 0.03), "(no project)": (2, 30, 0.05)}
BY_KEY = {"search-bot (sk-gw-srch…)": (2, 450, 0.90), "ads-bot (sk-gw-adsx…)": (2, 15, 0.03),
          "bob-key (sk-gw-bobx…)": (1, 1500, 1.50), "(no key: console)": (1, 30, 0.05)}
BY_PLAN = {"gold": (3, 1950, 2.40), "(no plan)": (3, 45, 0.08)}


def table(ws, header: str) -> dict[str, tuple]:
    """name -> (requests, total tokens, cost) of the table whose first header cell is `header`,
    the Total row included."""
    rows = list(ws.iter_rows(values_only=True))
    start = next(i for i, r in enumerate(rows) if r[0] == header and r[1] == "Requests")
    out = {}
    for r in rows[start + 1:]:
        if r[0] is None:
            break
        out[r[0]] = (r[1], r[4], r[5])
        if r[0] == "Total":
            break
    return out


def close(got: dict, want: dict) -> None:
    assert set(got) == set(want), (sorted(got), sorted(want))
    for name, (n, tok, cost) in want.items():
        assert got[name][:2] == (n, tok), name
        assert got[name][2] == pytest.approx(cost, abs=1e-9), name


def workbook(data: bytes):
    return openpyxl.load_workbook(io.BytesIO(data))


def test_workbook_sheets_and_totals_match_the_hand_computation_and_the_usage_view(app):
    seed(app)
    with app.app_context():
        rollup.rebuild()        # the usage view reads whole hours from the rollup, as in production
    c = Console(app, "admin@example.com")
    r = c.get(f"/usage/report.xlsx?month={MONTH}&by=team,tag:project,key,plan")
    assert r.status_code == 200, r.text[:300]
    assert r.headers["Content-Disposition"] == f'attachment; filename="cost-allocation-{MONTH}.xlsx"'
    wb = workbook(r.data)
    names = wb.sheetnames
    assert names[0] == "Summary"
    assert {"Team search", "Team (no team)", "project=apollo", "project=zeus", "project=(no project)",
            "Key search-bot (sk-gw-srch…)", "Key bob-key (sk-gw-bobx…)", "Plan gold", "Plan (no plan)"} <= set(names)
    assert len(names) == 1 + 3 + 3 + 4 + 2
    summary = wb["Summary"]
    cells = {row[0]: row[1] for row in summary.iter_rows(values_only=True) if row[0]}
    assert (cells["Requests"], cells["Total tokens"]) == TOTAL[:2]
    assert cells["Cost (USD)"] == pytest.approx(TOTAL[2])
    for header, want in (("Team", BY_TEAM), ("project", BY_PROJECT), ("Key", BY_KEY), ("Plan", BY_PLAN)):
        close(table(summary, header), {**want, "Total": TOTAL})
    assert {"By team", "By tag project", "By key", "By plan"} <= set(cells)     # one way to write a section
    # each group's sheet: its rows add up to the group's line in the summary
    close(table(wb["Team search"], "Key"), {"search-bot (sk-gw-srch…)": (2, 450, 0.90), "Total": (2, 450, 0.90)})
    close(table(wb["project=apollo"], "Model"), {"m1": (1, 150, 0.30), "m2": (2, 1800, 2.10), "Total": (3, 1950, 2.40)})
    close(table(wb["Plan gold"], "Key"), {"search-bot (sk-gw-srch…)": (2, 450, 0.90),
                                          "bob-key (sk-gw-bobx…)": (1, 1500, 1.50), "Total": (3, 1950, 2.40)})
    assert len(summary._charts) == 4 and all(len(wb[n]._charts) == 1 for n in names[1:])  # a chart per table
    # the usage view of the same month and grouping shows the same totals
    with app.app_context():
        f, errors = filters.parse_filter(NOV)
        assert not errors
        t = charts.totals(f)
        assert (t["requests"], t["tokens"]) == TOTAL[:2] and t["cost"] == pytest.approx(TOTAL[2])
        for group, want in (("team", BY_TEAM), ("plan", BY_PLAN)):
            f, _ = filters.parse_filter({**NOV, "group": group})
            view = {b["group"]: (b["requests"], b["tokens"], b["cost"]) for b in charts.breakdown(f)}
            none = {"team": "(no team)", "plan": "(no plan)"}[group]
            close({("—" if k == none else k): v for k, v in want.items()}, view)
        f, _ = filters.parse_filter({**NOV, "group": "tag", "tag_key": "project"})
        view = {b["group"]: (b["requests"], b["tokens"], b["cost"]) for b in charts.breakdown(f)}
        close({("—" if k == "(no project)" else k): v for k, v in BY_PROJECT.items()}, view)
        assert db.session.scalar(select(AuditLog.action).where(AuditLog.action == "usage.report")) == "usage.report"


def test_a_member_gets_their_scope_a_viewer_everything(app):
    ids = seed(app)
    alice = Console(app, "alice@example.com")
    wb = workbook(alice.get(f"/usage/report.xlsx?month={MONTH}&by=team,key").data)
    close(table(wb["Summary"], "Team"), {"search": (2, 450, 0.90), "Total": (2, 450, 0.90)})
    assert wb.sheetnames == ["Summary", "Team search", "Key search-bot (sk-gw-srch…)"]
    bob = Console(app, "bob@example.com")
    wb = workbook(bob.get(f"/usage/report.xlsx?month={MONTH}&by=key").data)
    close(table(wb["Summary"], "Key"), {"bob-key (sk-gw-bobx…)": (1, 1500, 1.50), "Total": (1, 1500, 1.50)})
    viewer = Console(app, "viewer@example.com")
    wb = workbook(viewer.get(f"/usage/report.xlsx?month={MONTH}&by=team").data)
    close(table(wb["Summary"], "Team"), {**BY_TEAM, "Total": TOTAL})
    # the member's usage view agrees with their workbook
    with app.app_context():
        from gateway.services.accounting.key_scope import Owner
        f, _ = filters.parse_filter(NOV, Owner(ids["alice"], ids["search"]))
        t = charts.totals(f)
        assert (t["requests"], t["tokens"]) == (2, 450) and t["cost"] == pytest.approx(0.90)


def test_anonymous_users_are_sent_to_log_in(app):
    r = app.test_client().get(f"/usage/report.xlsx?month={MONTH}")
    assert r.status_code == 302 and "/login" in r.headers["Location"]


def test_bad_month_or_grouping_shows_the_usage_page_with_the_error_next_to_the_field(app):
    make_user(app, "admin@example.com", "admin")
    c = Console(app, "admin@example.com")
    r = c.get("/usage/report.xlsx?month=2026-13")
    assert r.status_code == 422 and 'id="month-error"' in r.text and "Pick a month as YYYY-MM." in r.text
    r = c.get(f"/usage/report.xlsx?month={MONTH}&by=team,{EVIL}")
    assert r.status_code == 422 and 'id="by-error"' in r.text
    assert EVIL not in r.text and "&lt;script&gt;" in r.text


def test_parse_by():
    assert [d.spec for d in monthly.parse_by("team, tag:project ,key,team")] == ["team", "tag:project", "key"]
    assert [d.spec for d in monthly.parse_by("")] == ["team", "tag:project", "key"]
    for bad in ("tags", "tag:", "tag:a b", "team,owner"):
        with pytest.raises(Exception) as e:
            monthly.parse_by(bad)
        assert e.value.param == "by"


def test_cli_usage_report(app, tmp_path):
    seed(app)
    out = tmp_path / "nov.xlsx"
    run = app.test_cli_runner().invoke
    r = run(args=["usage", "report", "--month", MONTH, "--by", "team,tag:project", "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert r.output.splitlines()[-1] == str(out) and "6 requests, 1,995 tokens, $2.48" in r.output
    wb = openpyxl.load_workbook(out)
    close(table(wb["Summary"], "Team"), {**BY_TEAM, "Total": TOTAL})
    close(table(wb["Summary"], "project"), {**BY_PROJECT, "Total": TOTAL})
    assert not any(n.startswith("Key ") for n in wb.sheetnames)
    with app.app_context():
        row = db.session.scalar(select(AuditLog).where(AuditLog.action == "usage.report"))
        assert row.source == "cli" and row.target == MONTH and row.details["by"] == "team,tag:project"
    r = run(args=["usage", "report", "--month", "November"])
    assert r.exit_code == 1 and "Pick a month as YYYY-MM." in r.output
    r = run(args=["usage", "report", "--month", MONTH, "--by", "colour"])
    assert r.exit_code == 1 and "'colour' is not a grouping" in r.output


def test_the_usage_page_links_the_monthly_report(app):
    make_user(app, "viewer@example.com", "viewer")
    c = Console(app, "viewer@example.com")
    html = c.get("/usage").text
    assert 'id="monthly-report"' in html and 'hx-boost="false"' in html and 'type="month"' in html


def test_circuit_open_periods_from_real_traffic_show_on_the_usage_page(tmp_path, mock):
    """Through the real HTTP path: two upstream failures open the circuit, the probe after the
    cool-down closes it; the usage writer records both and the usage page shows the period."""
    import time

    import requests

    from gateway.models import DeploymentEvent
    from gateway.services.accounting.usage import recorder
    from gateway.services.admin import catalog_admin
    from tests.helpers import LiveServer, make_app, make_key
    app = make_app(f"sqlite:///{tmp_path}/t.db", instance_path=str(tmp_path / "instance"), MAX_ATTEMPTS=1,
                   CIRCUIT_FAILURES=2, CIRCUIT_COOLDOWN_SECONDS=0.5, RETRY_BASE_SECONDS=0.01)
    with app.app_context():
        catalog_admin.save_provider("flaky", "openai", base_url=mock + "/v1", api_key="sk-upstream-secret-123456")
        dep = catalog_admin.save_deployment("m", "flaky", "echo").id
    key = make_key(app)
    server = LiveServer(app)
    try:
        def chat():
            return requests.post(server.url + "/v1/chat/completions", timeout=15,
                                 headers={"Authorization": f"Bearer {key}"},
                                 json={"model": "m", "messages": [{"role": "user", "content": "hi"}]})
        requests.post(mock + "/_mock/faults", json={"faults": ["fail=500", "fail=500"]}, timeout=5)
        assert [chat().status_code for _ in range(3)] == [502, 502, 503]
        time.sleep(0.6)
        assert chat().status_code == 200
    finally:
        server.stop()
    with app.app_context():
        assert recorder(app).drain()
        rows = db.session.execute(select(DeploymentEvent.deployment_id, DeploymentEvent.state)
                                  .order_by(DeploymentEvent.id)).all()
        assert [tuple(r) for r in rows] == [(dep, "opened"), (dep, "half_open"), (dep, "closed")]
    make_user(app, "viewer@example.com", "viewer")
    html = Console(app, "viewer@example.com").get("/usage?range=24h").text
    assert 'id="chart-downtime"' in html and "m via flaky (echo)" in html and "2 consecutive failures" in html
