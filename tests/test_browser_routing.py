"""The routing pages in a real browser (headless Debian Chromium via Playwright), as an admin:
a deployment on a provider pointed at the mock upstream, an alias switched to another model
and rolled back with one click, a policy with an A/B split, then /v1 requests through both.
Screenshots go to artifacts/screenshots/routing-*.png."""
from __future__ import annotations

import re

import requests

from tests.browser import BROWSER, EVIL, login, shot
from tests.helpers import add_provider, make_key

pytestmark = BROWSER


def add_deployment(page, model: str, upstream: str, **fields) -> None:
    page.goto("/routing/deployments/new")
    page.select_option("select[name=provider]", "upstream")
    page.fill("input[name=model]", model)
    page.fill("input[name=upstream_model]", upstream)
    for name, value in fields.items():
        page.fill(f"input[name={name}]", value)
    page.check("input[name=capabilities][value=json]")
    page.click("#deployment-form button[type=submit]")
    page.wait_for_url(re.compile(r"/routing/deployments$"))


def chat(url: str, key: str, model: str) -> requests.Response:
    r = requests.post(url + "/v1/chat/completions", headers={"Authorization": f"Bearer {key}"}, timeout=15,
                      json={"model": model, "messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 200, r.text
    return r


def test_routing_pages_in_a_real_browser(browser_page, console_server, mock):
    page, app = browser_page, console_server.app
    add_provider(app, "upstream", "openai", mock + "/v1", [])
    key = make_key(app)
    login(page)
    page.click("header nav summary:has-text('Configure')")     # the top bar's menu of setup pages
    page.click("header nav a:has-text('Routing')")
    page.wait_for_url(re.compile(r"/routing/deployments$"))

    # a deployment refused next to its field, then two versions of a model
    page.goto("/routing/deployments/new")
    page.fill("input[name=model]", "chat-v1")
    page.fill("input[name=weight]", "-1")
    page.click("#deployment-form button[type=submit]")
    page.wait_for_selector("#weight-error")
    assert "0 or more" in page.inner_text("#weight-error")
    shot(page, "routing-02-deployment-error")
    add_deployment(page, "chat-v1", "echo", input_per_1k="0.00015", output_per_1k="0.0006", context_window="16000")
    add_deployment(page, "chat-v2", "echo+latency=1", rpm_limit="600")
    rows = page.inner_text("#deployment-rows")
    assert "chat-v1" in rows and "chat-v2" in rows and "$0.00015 in" in rows and "16,000" in rows
    shot(page, "routing-01-deployments")

    # an alias, switched to v2, rolled back to v1 with one click
    page.click("nav.routing-tabs a:has-text('Aliases')")
    page.fill("#alias-form input[name=name]", "chat-stable")
    page.fill("#alias-form input[name=target]", "chat-v1")
    page.click("#alias-form button[type=submit]")
    page.wait_for_url(re.compile(r"/routing/aliases$"))
    page.fill("#alias-form input[name=name]", EVIL)
    page.fill("#alias-form input[name=target]", "nothing-here")
    page.click("#alias-form button[type=submit]")
    page.wait_for_selector("#target-error")
    assert EVIL in page.input_value("#alias-form input[name=name]")       # shown as text, never run
    page.click("#alias-rows a:has-text('History')")
    page.fill("#alias-switch input[name=target]", "chat-v2")
    page.click("#alias-switch button[type=submit]")
    page.wait_for_selector("#alias-current:has-text('chat-v2')")
    assert chat(console_server.url, key, "chat-stable").headers["x-gateway-deployment"] == "upstream/echo+latency=1"
    page.click("#alias-rollback")
    page.wait_for_selector("#alias-current:has-text('chat-v1')")
    history = page.locator("#alias-history tbody tr")
    assert history.count() == 3
    assert [history.nth(i).locator("td").nth(1).inner_text() for i in range(3)] == ["rollback", "set", "set"]
    assert "admin@example.com" in history.nth(0).inner_text()
    shot(page, "routing-03-alias-history")
    page.click("nav.routing-tabs a:has-text('Aliases')")
    shot(page, "routing-04-aliases")
    assert chat(console_server.url, key, "chat-stable").headers["x-gateway-deployment"] == "upstream/echo"

    # a policy: v1 as the candidate, 30% of traffic to v2 first
    page.click("nav.routing-tabs a:has-text('Policies')")
    page.click("a:has-text('Add policy')")
    page.fill("input[name=name]", "v2-trial")
    page.select_option("select[name=strategy]", "weighted")
    page.check("input[name=candidates][value=chat-v1]")
    page.fill("input[name=weight_chat-v1]", "2")
    page.select_option("select[name=ab_model]", "chat-v2")
    page.fill("input[name=ab_percent]", "130")
    page.click("#policy-form button[type=submit]")
    page.wait_for_selector("#ab_percent-error")
    shot(page, "routing-06-policy-error")
    page.fill("input[name=ab_percent]", "30")
    page.select_option("select[name=shadow_model]", "chat-v2")
    page.fill("input[name=shadow_percent]", "0")
    page.click("#policy-form button[type=submit]")
    page.wait_for_url(re.compile(r"/routing/policies$"))
    row = page.inner_text("#policy-rows")
    assert "v2-trial" in row and "chat-v2 · 30.0%" in row and "chat-v1 ×2" in row
    assert "policy:latency-optimized" in page.inner_text("#built-in-policies")
    shot(page, "routing-05-policies")

    # traffic through the policy: arm B is served by v2, arm A by v1
    arms = set()
    for _ in range(12):
        r = chat(console_server.url, key, "policy:v2-trial")
        variant, served = r.headers["x-gateway-variant"], r.headers["x-gateway-deployment"]
        assert served == {"A": "upstream/echo", "B": "upstream/echo+latency=1"}[variant], (variant, served)
        arms.add(variant)
    assert arms <= {"A", "B"} and arms
    # Chromium logs each refused form's 422 as a failed load: the three refusals above, nothing else
    refused = [e for e in page.js_errors if "status of 422" in e]
    assert len(refused) == 3 and len(page.js_errors) == 3, page.js_errors


ROW_FIT = """() => [...document.querySelectorAll('td.actions')].map(td => {
    const cell = td.getBoundingClientRect(), row = td.parentElement.getBoundingClientRect();
    return [getComputedStyle(td).display, Math.round(cell.top - row.top), Math.round(row.bottom - cell.bottom)];
})"""


def test_action_cells_fill_their_rows(browser_page, console_server, mock):
    """A table's Edit/Disable/Delete cell is a cell of its row: a flex <td> fell out of the table
    layout, its borders off the row's and its height its own."""
    page, app = browser_page, console_server.app
    add_provider(app, "upstream", "openai", mock + "/v1", ["chat-with-a-long-name-v1", "chat-v2"])
    login(page)
    for path in ("/routing/deployments", "/providers"):
        page.goto(path)
        cells = page.evaluate(ROW_FIT)
        assert cells and all(c == ["table-cell", 0, 0] for c in cells), (path, cells)
    assert page.js_errors == []
