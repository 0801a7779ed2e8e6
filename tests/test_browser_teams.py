"""Teams, plans and tag budgets in a real browser: an admin makes a team with a budget, adds a
member, makes a plan with an allowlist and a plan budget, puts a key on both with the key form,
and sees the spend once the key is used. Screenshots: artifacts/screenshots/teams-*.png."""
from __future__ import annotations

import re

import requests
from console_client import make_user

from gateway.extensions import db
from gateway.models import QuotaCounter
from gateway.services.admin import catalog_admin
from tests.browser import BROWSER, EVIL, login, shot
from tests.helpers import add_provider

pytestmark = BROWSER


def test_teams_and_plans_in_a_real_browser(browser_page, console_server, mock):
    page, app = browser_page, console_server.app
    add_provider(app, "up", "openai", mock + "/v1", ["echo", "echo-2"])
    with app.app_context():
        catalog_admin.save_price("echo", 0.002, 0.004)
    make_user(app, "dev@example.com", "member")
    login(page)

    # a team with a budget and alert thresholds
    page.click("header nav summary:has-text('Configure')")     # the top bar's menu of setup pages
    page.click("nav >> text=Teams")
    page.wait_for_url(re.compile(r"/teams$"))
    page.click("text=Create team")
    page.fill("input[name=name]", "search")
    page.fill("input[name=budget_usd]", "250")
    page.select_option("select[name=budget_period]", "month")
    page.fill("input[name=alert_thresholds]", "50, 80, 100")
    page.fill("input[name=webhook_url]", "https://hooks.example.com/services/T0/B0/xyz")
    page.fill("input[name=webhook_secret]", "whsec-browser-1")
    shot(page, "teams-01-team-form")
    page.click("button[type=submit].primary")
    page.wait_for_url(re.compile(r"/teams/\d+$"))
    assert "$250.00" in page.inner_text("main") and "signed" in page.inner_text("main")

    # a field error shows next to its field
    page.goto("/teams/new")
    page.fill("input[name=name]", EVIL)
    page.fill("input[name=alert_thresholds]", "50, 150")
    page.click("button[type=submit].primary")
    page.wait_for_selector("#alert_thresholds-error")
    assert "between 1 and 100" in page.inner_text("#alert_thresholds-error")
    assert page.input_value("input[name=name]") == EVIL

    # a member, added on the team's page
    page.goto("/teams")
    page.click("#team-rows >> text=search")
    page.select_option("#member-form select[name=user_id]", label="dev@example.com")
    page.click("#member-form button[type=submit]")
    page.wait_for_selector("#team-members >> text=dev@example.com")
    shot(page, "teams-02-team-detail")

    # a plan with a model allowlist and a plan-wide budget
    page.goto("/teams")
    page.click(".subnav >> text=Plans")
    page.click("text=Create plan")
    page.fill("input[name=name]", "starter")
    page.select_option("select[name=models]", ["echo"])
    page.fill("input[name=rpm]", "600")
    page.fill("input[name=pool_budget_usd]", "40")
    page.select_option("select[name=pool_period]", "month")
    shot(page, "teams-03-plan-form")
    page.click("button[type=submit].primary")
    page.wait_for_url(re.compile(r"/plans$"))
    row = page.inner_text("#plan-rows")
    assert "starter" in row and "echo" in row and "$40.00 per month" in row

    # a key on the team and the plan, through the key form's lists
    page.goto("/keys/new")
    page.fill("input[name=name]", "search-svc")
    page.select_option("select[name=team_id]", label="search")
    page.select_option("select[name=plan_id]", label="starter")
    page.click("button[type=submit].primary")
    secret = page.inner_text("#new-secret").strip()
    assert secret.startswith("sk-gw-")

    # the key is bound by the plan's allowlist, and what it spends shows on both pages
    url = console_server.url + "/v1/chat/completions"
    auth = {"Authorization": f"Bearer {secret}"}
    body = {"model": "echo", "max_tokens": 16, "messages": [{"role": "user", "content": "hello there"}]}
    for _ in range(3):
        assert requests.post(url, json=body, headers=auth, timeout=10).status_code == 200
    refused = requests.post(url, json={**body, "model": "echo-2"}, headers=auth, timeout=10)
    assert refused.status_code == 403
    with app.app_context():
        counters = {c.scope: c.used_usd for c in db.session.query(QuotaCounter)}
    team_used = next(v for k, v in counters.items() if k.startswith("team:"))
    plan_used = next(v for k, v in counters.items() if k.startswith("plan:"))
    assert team_used > 0 and plan_used == team_used

    from gateway.formatting import money
    page.goto("/plans")
    assert f"{money(plan_used)} of $40.00" in page.inner_text("#plan-rows")
    shot(page, "teams-04-plans")
    page.goto("/teams")
    assert f"{money(team_used)} of $250.00" in page.inner_text("#team-rows")
    assert page.locator("#team-rows meter").count() == 1
    shot(page, "teams-05-teams")

    # a tag budget
    page.click(".subnav >> text=Tag budgets")
    page.click("text=Create tag budget")
    page.fill("input[name=tag]", "feature")
    page.fill("input[name=value]", "search")
    page.fill("input[name=budget_usd]", "12.50")
    page.click("button[type=submit].primary")
    page.wait_for_url(re.compile(r"/tag-budgets$"))
    assert "$12.50 per month" in page.inner_text("#tag-budget-rows")
    shot(page, "teams-06-tag-budgets")

    # deleting the team asks first; its key keeps working
    page.goto("/teams")
    page.click("#team-rows >> text=search")
    page.click("button.danger:has-text('Delete')")
    page.wait_for_url(re.compile(r"/teams$"))
    assert any("Delete this team?" in m for _, m in page.dialogs)
    assert "search" not in page.inner_text("#team-rows")
    assert requests.post(url, json=body, headers=auth, timeout=10).status_code == 200
    # the refused form answers 422 on purpose, which Chromium logs as a failed load; nothing else
    assert all("status of 422" in e for e in page.js_errors), page.js_errors
