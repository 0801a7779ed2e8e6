"""The policy simulator in a real browser: seeded traffic, a scenario run from the page, and the
numbers shown checked against the hand computation."""
from __future__ import annotations

from datetime import timedelta

from gateway.models import utcnow
from gateway.services.accounting import keys, teams
from gateway.services.admin import catalog_admin
from tests.browser import BROWSER, EVIL, expect, login, shot
from tests.test_simulator import A_COST, B_COST, seed_catalog, seed_traffic

pytestmark = BROWSER


def test_simulator_numbers_match_the_hand_computation(browser_page, console_server):
    page, app = browser_page, console_server.app
    seed_catalog(app)
    with app.app_context():
        catalog_admin.save_policy("cheap", strategy="weighted", candidates=["model-b"])
        team = teams.save_team(f"search {EVIL}", budget_usd=1.0)
        key_id = keys.create_key("k", team_id=team.id)[0].id
        teams.save_tag_budget("feature", "search", 0.5)
    seed_traffic(app, 10, key_id=key_id, tags={"feature": "search"})    # 10 x 1000/500 tokens on model-a
    seed_traffic(app, 5, key_id=key_id, tags={"feature": "search"}, at=utcnow() - timedelta(days=2), prefix="old-")
    login(page)

    page.goto("/simulator")
    expect(page.locator("#forecast-rows")).to_contain_text("search <script>")     # escaped, shown as text
    shot(page, "simulator-01-page")

    # every model-a request moved to model-b: $0.20 -> $0.02 (the 24 hours hold the 10 recent ones)
    page.select_option("select[name=range]", "24h")
    page.fill("input[name=route_model]", "model-a")
    page.select_option("select[name=policy]", "cheap")
    page.fill("input[name=tag_keys]", "feature")
    page.click("#sim-run")
    expect(page.locator("#sim-total-simulated")).to_have_text(f"${10 * B_COST:.2f}")
    expect(page.locator("#sim-total-actual")).to_have_text(f"${10 * A_COST:.2f}")
    expect(page.locator("#sim-by-deployment")).to_contain_text("p-model-b/echo")
    page.wait_for_selector("#chart-sim-models .main-svg")
    shot(page, "simulator-02-moved-to-model-b")

    # an ad hoc 70/30 split between model-a and model-b: 7 x $0.02 + 3 x $0.002 = $0.146
    page.check("input[name=policy_source][value=ad_hoc]")
    page.fill("input[name=candidates]", "model-a, model-b")
    page.fill("input[name=weights]", "model-a=7, model-b=3")
    page.click("#sim-run")
    expect(page.locator("#sim-total-simulated")).to_have_text(f"${7 * A_COST + 3 * B_COST:.2f}")
    rows = page.locator("#sim-by-deployment tbody tr")
    a, b = rows.filter(has_text="p-model-a/echo").locator("td"), rows.filter(has_text="p-model-b/echo").locator("td")
    expect(a.nth(2)).to_have_text("7")              # simulated requests
    expect(b.nth(2)).to_have_text("3")
    expect(a.nth(4)).to_have_text("10,500")         # simulated tokens: 7 x 1,500
    expect(b.nth(6)).to_have_text(f"${3 * B_COST:.3f}")     # $0.006
    shot(page, "simulator-03-weighted-split")

    # a bad price line: the error shows next to the field, the rest of the form stays (a 422, which
    # the browser logs as a failed request: the one console error allowed)
    page.fill("textarea[name=prices]", "model-a=cheap")
    page.click("#sim-run")
    expect(page.locator("#prices-error")).to_be_visible()
    expect(page.locator("input[name=weights]")).to_have_value("model-a=7, model-b=3")
    shot(page, "simulator-04-field-error")
    assert [e for e in page.js_errors if "422" not in e] == [], "\n".join(page.js_errors)
