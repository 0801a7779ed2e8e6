"""The console in a real browser (headless Debian Chromium via Playwright): the "done when" flow.

Screenshots of the main pages go to artifacts/screenshots/ (git-ignored)."""
from __future__ import annotations

import re

import pytest

from console_client import PASSWORD, make_user

from gateway.extensions import db
from gateway.models import UsageRecord
from gateway.services.accounting.usage import recorder
from tests.browser import BROWSER, EVIL, expect, login, shot
from tests.helpers import add_provider

pytestmark = BROWSER


def test_console_flow_in_a_real_browser(browser_page, console_server, mock, tmp_path):
    page, app = browser_page, console_server.app

    # log in
    page.goto("/login")
    shot(page, "01-login")
    page.fill("input[name=email]", "admin@example.com")
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(re.compile(r"/$"))
    assert "admin@example.com" in page.inner_text("header")
    shot(page, "02-overview")

    # a provider pointed at the mock upstream, with a working Test connection
    page.goto("/providers/new")
    page.fill("input[name=name]", "upstream")
    page.select_option("select[name=kind]", "openai")
    page.fill("input[name=base_url]", mock + "/v1")
    page.fill("input[name=api_key]", "sk-upstream-browser-secret-7777")
    page.fill("textarea[name=models]", "echo")
    page.click("#test-connection")
    page.wait_for_selector("#provider-test .test-result")
    result = page.inner_text("#provider-test")
    assert "Connected" in result and " ms" in result, result
    shot(page, "03-provider-test-connection")
    page.click("button[type=submit].primary")
    page.wait_for_url(re.compile(r"/providers/\d+/edit"))
    assert "••••7777" in page.content() and "sk-upstream-browser-secret" not in page.content()
    page.goto("/providers")
    shot(page, "04-providers")

    # a key, with its secret copied to the clipboard
    page.goto("/keys/new")
    page.fill("input[name=name]", EVIL)
    page.fill("input[name=budget_usd]", "25")
    page.click("button[type=submit].primary")
    secret = page.inner_text("#new-secret").strip()
    assert secret.startswith("sk-gw-")
    page.click("button[data-copy-target='#new-secret']")
    page.wait_for_selector("button.copied")
    assert page.evaluate("navigator.clipboard.readText()") == secret
    shot(page, "05-key-created")
    page.goto("/keys")
    assert EVIL in page.inner_text("#key-rows")           # shown as text, never run
    shot(page, "06-keys")

    # the model's snippet, copied
    page.goto("/models")
    shot(page, "07-marketplace")
    page.click("a.model-card:has-text('echo')")
    page.wait_for_selector("#snippet-curl")
    page.click("button[data-copy-target='#snippet-curl']")
    page.wait_for_selector("button.copied")
    copied = page.evaluate("navigator.clipboard.readText()")
    assert f"{console_server.url}/v1/chat/completions" in copied and '"model": "echo"' in copied
    shot(page, "08-model-detail")

    # a streamed playground request
    page.goto("/playground?model=echo")
    page.fill("#pg-prompt", "hello from the browser")
    page.click("#pg-send")
    expect(page.locator("#pg-status")).to_contain_text("Done")      # no wait_for_function: the CSP forbids eval
    assert page.inner_text("#pg-output") == "Echo: hello from the browser"
    shot(page, "09-playground")

    # ... and also one through /v1 with the new key, so the usage has two requests
    import requests
    r = requests.post(console_server.url + "/v1/chat/completions", headers={"Authorization": f"Bearer {secret}"},
                      json={"model": "echo", "messages": [{"role": "user", "content": "one two three"}]}, timeout=10)
    assert r.status_code == 200
    with app.app_context():
        assert recorder(app).drain()
        rows = db.session.query(UsageRecord).all()
        want_requests, want_tokens = len(rows), sum(x.total_tokens for x in rows)
        want_cost = sum(x.cost_usd for x in rows)
    assert want_requests == 2

    # usage chart and totals
    page.goto("/usage?range=24h")
    page.wait_for_selector("#chart-requests .main-svg")
    assert page.inner_text("#total-requests") == "2"
    assert page.locator("#chart-requests .bars path").count() >= 1 or page.locator("#chart-requests .trace").count() >= 1
    shot(page, "10-usage")
    page.select_option("select[name=group]", "key")           # an htmx swap of the panel
    page.wait_for_selector("#usage-panel th:has-text('Key')")
    page.wait_for_selector("#chart-requests .main-svg")

    # logs and the detail drawer
    page.goto("/logs")
    rows_in_table = page.locator("tr.log-row")
    assert rows_in_table.count() == 2
    rows_in_table.first.click()
    page.wait_for_selector("#log-detail.open h2")
    assert "Attempt chain" in page.inner_text("#log-detail")
    page.wait_for_timeout(300)      # let the drawer finish sliding in before the screenshot
    shot(page, "11-logs-drawer")

    # Excel export of the current view, opened with openpyxl
    page.goto("/usage?range=24h")
    with page.expect_download() as dl:
        page.click("#export-xlsx")
    path = tmp_path / "export.xlsx"
    dl.value.save_as(path)
    import openpyxl
    wb = openpyxl.load_workbook(path)
    summary = {row[0]: row[1] for row in wb["Summary"].iter_rows(values_only=True) if row and row[0]}
    assert summary["Requests"] == want_requests and summary["Total tokens"] == want_tokens
    assert summary["Cost (USD)"] == pytest.approx(want_cost)
    assert wb["Detail"].max_row == want_requests + 1

    # a destructive action asks first
    page.goto("/keys")
    page.click("#key-rows a")
    page.click("button:has-text('Disable')")
    page.wait_for_selector(".state-disabled")
    assert any(t == "confirm" for t, _ in page.dialogs)

    for url, name in (("/audit", "12-audit"), ("/users", "13-users"), ("/settings", "14-settings")):
        page.goto(url)
        shot(page, name)
    assert not [m for t, m in page.dialogs if t == "alert"], "user text ran as script"
    assert page.js_errors == []


def test_test_connection_to_a_new_url_asks_for_the_key_next_to_its_field(browser_page, console_server, mock):
    page, app = browser_page, console_server.app
    add_provider(app, "byok", "openai", mock + "/v1", ["echo"], api_key="sk-stored-browser-key-4242")
    page.goto("/login")
    page.fill("input[name=email]", "admin@example.com")
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(re.compile(r"/$"))
    page.goto("/providers")
    page.click("a:text-is(\"Edit\")")
    page.wait_for_url(re.compile(r"/providers/\d+/edit"))
    page.fill("input[name=base_url]", "http://127.0.0.1:9/v1")
    page.click("#test-connection")
    page.wait_for_selector("#api-key-test-error.field-error")
    assert "API key again" in page.inner_text("#api-key-test-error")
    assert "Not tested" in page.inner_text("#provider-test")
    page.fill("input[name=base_url]", mock + "/v1")     # back to the stored URL: the stored key is used
    page.click("#test-connection")
    page.wait_for_selector("#provider-test .test-result.ok")
    assert page.inner_text("#api-key-test-error") == ""
    shot(page, "03b-provider-test-key-required")
    assert not page.js_errors, page.js_errors


def test_every_page_under_the_content_security_policy(browser_page, console_server, mock):
    """The CSP forbids inline script and style and eval: every page, htmx swap and chart works
    under it, and the browser reports no violation."""
    page, app = browser_page, console_server.app
    from gateway.services.accounting import keys
    from tests.helpers import add_provider
    add_provider(app, "upstream", "openai", mock + "/v1", ["echo"])
    make_user(app, "member@example.com", "member")
    with app.app_context():
        key, secret = keys.create_key("browser key", rpm=60)
        key_id = key.id
    import requests
    r = requests.post(console_server.url + "/v1/chat/completions", headers={"Authorization": f"Bearer {secret}"},
                      json={"model": "echo", "messages": [{"role": "user", "content": "hi"}]}, timeout=10)
    assert r.status_code == 200
    with app.app_context():
        assert recorder(app).drain()
        record_id = db.session.query(UsageRecord.id).scalar()

    violations, policies = [], {}
    page.on("console", lambda m: "Content Security Policy" in m.text and violations.append(m.text))
    page.add_init_script("document.addEventListener('securitypolicyviolation', e => "
                         "(window.__csp = window.__csp || []).push(e.violatedDirective + ' ' + e.blockedURI))")
    page.on("response", lambda resp: resp.request.resource_type == "document" and policies.update(
        {resp.url: resp.headers.get("content-security-policy", "")}))

    def visit(url: str) -> None:
        page.goto(url)
        page.wait_for_load_state("load")
        assert not page.evaluate("window.__csp || []"), (url, page.evaluate("window.__csp"))

    visit("/login")
    page.fill("input[name=email]", "admin@example.com")
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(re.compile(r"/$"))
    for url in ("/", "/models", "/models/echo", "/providers", "/providers/new", "/providers/1/edit", "/keys",
                "/keys/new", f"/keys/{key_id}", f"/keys/{key_id}/edit", "/usage", "/usage?range=7d&group=key",
                "/logs", f"/logs/{record_id}", "/playground?model=echo", "/users", "/audit", "/settings", "/account",
                "/keys/999999", "/no-such-page"):
        visit(url)

    # htmx swaps and the scripts behind them, still without a violation
    visit("/usage?range=24h")
    page.wait_for_selector("#chart-requests .main-svg")
    page.select_option("select[name=group]", "model")
    page.wait_for_selector("#usage-panel th:has-text('Model')")
    page.wait_for_selector("#chart-cost .main-svg")          # charts drawn again after the swap
    visit("/logs")
    page.focus("tr.log-row")
    page.keyboard.press("Enter")                             # opens like a click, without an eval'd filter
    page.wait_for_selector("#log-detail.open h2")
    visit("/keys")
    page.fill("input[type=search]", "browser")
    expect(page.locator("#key-rows tbody tr")).to_have_count(1)
    visit("/models")
    page.fill("input[type=search]", "echo")
    page.wait_for_selector("#model-cards a.model-card")
    visit("/providers/1/edit")
    page.click("#test-connection")
    page.wait_for_selector("#provider-test .test-result")
    visit("/playground?model=echo")
    page.fill("#pg-prompt", "under the policy")
    page.click("#pg-send")
    expect(page.locator("#pg-status")).to_contain_text("Done")      # no wait_for_function: the CSP forbids eval
    assert not page.evaluate("window.__csp || []"), page.evaluate("window.__csp")

    assert violations == []
    assert page.js_errors == [] or all("404" in e or "Not Found" in e for e in page.js_errors), page.js_errors
    assert policies and all("script-src 'self'" in p and "unsafe-inline" not in p for p in policies.values()), policies


def test_the_closed_log_drawer_leaves_no_shadow(browser_page, console_server):
    """The drawer waits off-screen to the right; closed, its shadow showed as a grey strip down
    the page's right edge, and its (empty) content could take the focus."""
    page = browser_page
    login(page)
    page.goto("/logs")
    closed = page.evaluate("() => { const s = getComputedStyle(document.querySelector('#log-detail'));"
                           " return [s.boxShadow, s.visibility]; }")
    assert closed == ["none", "hidden"]
    assert page.js_errors == []


def test_the_top_bar_stays_on_one_line(browser_page, console_server):
    """13 links and a long e-mail wrapped the top bar; the menus keep it on one line, open on a
    click, and close on a click elsewhere or Escape."""
    page, app = browser_page, console_server.app
    make_user(app, "someone.with.a.long.name@example.com", "admin")
    page.set_viewport_size({"width": 1280, "height": 800})
    login(page, "someone.with.a.long.name@example.com")
    page.goto("/keys")
    tops = page.evaluate("() => [...document.querySelectorAll('header.top > *, header nav > *')]"
                         ".map(e => Math.round(e.getBoundingClientRect().top))")
    assert max(tops) - min(tops) < 10, tops      # a second line starts a line height (~30 px) lower
    page.click("header nav summary:has-text('Admin')")
    page.click("header nav a:has-text('Audit')")
    page.wait_for_url("**/audit")
    page.click("header nav summary:has-text('Configure')")
    assert page.is_visible("header nav a:has-text('Providers')")
    page.mouse.click(700, 600)                  # anywhere else on the page
    assert not page.is_visible("header nav a:has-text('Providers')")
    page.click("header nav summary:has-text('Configure')")
    page.keyboard.press("Escape")
    assert not page.is_visible("header nav a:has-text('Providers')")
    shot(page, "qa-01-top-bar")
    assert page.js_errors == []
