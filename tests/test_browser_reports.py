"""Usage and reports in a real browser: the new figures and charts on seeded records, the
overview refreshing itself, and the monthly workbook downloaded and checked with openpyxl."""
from __future__ import annotations

from datetime import timedelta

import openpyxl
import pytest
from sqlalchemy import insert

from gateway.extensions import db
from gateway.models import ApiKey, DeploymentEvent, Team, UsageRecord, utcnow
from tests.browser import BROWSER, EVIL, expect, login, shot
from tests.helpers import add_provider

pytestmark = BROWSER


def _seed(app) -> dict:
    """This month: 6 records over two teams and a project tag (one 429, one 502), and an
    opened-then-closed circuit on the one deployment."""
    now = utcnow().replace(microsecond=0)
    at = max(now.replace(day=1, hour=0, minute=0, second=0), now - timedelta(hours=3))
    add_provider(app, "upstream", "openai", "https://api.example.com/v1", ["gpt-x"])
    with app.app_context():
        teams = [Team(name="search"), Team(name=EVIL)]
        db.session.add_all(teams)
        db.session.flush()
        keys = [ApiKey(name="search-bot", prefix="sk-gw-srch", key_hash="h1", team_id=teams[0].id),
                ApiKey(name="ads-bot", prefix="sk-gw-adsx", key_hash="h2", team_id=teams[1].id)]
        db.session.add_all(keys)
        db.session.flush()
        spec = [(0, 200, None, "apollo", 1000, 0.40), (0, 200, None, "apollo", 500, 0.20),
                (1, 200, None, "zeus", 250, 0.10), (1, 429, "rate_limit_exceeded", None, 0, 0.0),
                (0, 502, "server_error", "apollo", 0, 0.0), (1, 200, None, None, 250, 0.05)]
        db.session.execute(insert(UsageRecord), [
            dict(request_id=f"b{i}", endpoint="chat", status=status, error_type=err, created_at=at + timedelta(minutes=i),
                 key_id=keys[k].id, requested_model="gpt-x", provider="upstream", total_tokens=tok, cost_usd=cost,
                 latency_ms=120.0 + i, tags={"project": tag} if tag else {}, attempts=[])
            for i, (k, status, err, tag, tok, cost) in enumerate(spec)])
        db.session.execute(insert(DeploymentEvent), [
            dict(deployment_id=1, state="opened", at=at, reason="5 consecutive failures"),
            dict(deployment_id=1, state="closed", at=at + timedelta(minutes=12), reason="probe succeeded")])
        db.session.commit()
    return {"month": f"{now:%Y-%m}", "requests": 6, "tokens": 2000, "cost": 0.75,
            "teams": {"search": (3, 1500, 0.60), EVIL: (3, 500, 0.15)}}


def test_usage_reports_in_a_real_browser(browser_page, console_server, tmp_path):
    page, app = browser_page, console_server.app
    app.config["CONSOLE_REFRESH_SECONDS"] = 1      # the overview polls every second in this test
    want = _seed(app)
    login(page)

    page.goto("/usage?range=7d")
    page.wait_for_selector("#chart-errors .main-svg")
    page.wait_for_selector("#chart-downtime .main-svg")
    assert page.inner_text("#success-rate") == "66.7%"
    assert page.inner_text("#throttled") == "1"
    assert page.inner_text("#cost-per-1k") == "$0.38"        # $0.75 over 2,000 tokens
    assert "12 min 00 s" in page.inner_text("#downtime")
    shot(page, "reports-01-usage")
    page.select_option("select[name=group]", "plan")
    page.wait_for_selector("#usage-panel th:has-text('Plan')")
    page.select_option("select[name=group]", "team")
    page.wait_for_selector("#usage-panel th:has-text('Team')")
    assert EVIL in page.inner_text("#breakdown")         # shown as text, not run
    shot(page, "reports-02-usage-by-team")

    # the monthly workbook from the month picker
    page.fill("#report-month", want["month"])
    page.fill("#report-by", "team,tag:project,key")
    with page.expect_download() as dl:
        page.click("#report-download")
    path = tmp_path / "report.xlsx"
    dl.value.save_as(path)
    wb = openpyxl.load_workbook(path)
    rows = list(wb["Summary"].iter_rows(values_only=True))
    cells = {r[0]: r[1] for r in rows if r[0]}
    assert (cells["Requests"], cells["Total tokens"]) == (want["requests"], want["tokens"])
    assert cells["Cost (USD)"] == pytest.approx(want["cost"])
    start = rows.index(next(r for r in rows if r[0] == "Team" and r[1] == "Requests"))
    teams = {r[0]: (r[1], r[4], r[5]) for r in rows[start + 1:start + 3]}
    assert {k: v[:2] for k, v in teams.items()} == {k: v[:2] for k, v in want["teams"].items()}
    assert {"Team search", "project=apollo", "project=zeus", "Key search-bot (sk-gw-srch…)"} <= set(wb.sheetnames)

    # the overview refreshes itself: a new record shows up without a reload
    page.goto("/")
    expect(page.locator("#overview-requests")).to_have_text("6")
    page.evaluate("window.__marker = 'same page'")      # gone if the page reloaded
    with app.app_context():
        db.session.execute(insert(UsageRecord), [dict(request_id="b-new", endpoint="chat", status=200,
                                                      created_at=utcnow(), requested_model="gpt-x", total_tokens=10,
                                                      cost_usd=0.01, tags={}, attempts=[])])
        db.session.commit()
    expect(page.locator("#overview-requests")).to_have_text("7", timeout=15_000)
    assert page.evaluate("window.__marker") == "same page"
    shot(page, "reports-03-overview-refreshed")
    assert page.js_errors == []
