"""Alerts in a real browser: a key with a token quota crosses 80% through /v1, the banner
appears, the Alerts page acknowledges it, the banner goes. Screenshots: alerts-*."""
from __future__ import annotations

import re

import requests
from sqlalchemy import select

from gateway.extensions import db
from gateway.models import Alert
from tests.browser import BROWSER, EVIL, login, shot
from tests.helpers import add_provider

pytestmark = BROWSER
CHAT = {"model": "echo", "max_tokens": 8, "messages": [{"role": "user", "content": "one two three four"}]}


def _alerts(app) -> list[Alert]:
    with app.app_context():
        rows = db.session.scalars(select(Alert).order_by(Alert.id)).all()
        db.session.expunge_all()
        db.session.remove()
        return rows


def test_a_key_crossing_80_percent_shows_a_banner_until_acknowledged(browser_page, console_server, mock):
    page, app = browser_page, console_server.app
    add_provider(app, "upstream", "openai", mock + "/v1", ["echo"])
    login(page)
    assert page.locator("#alert-banner").count() == 0

    # a key with a token quota, made in the console (its name is hostile: shown as text)
    page.goto("/keys/new")
    page.fill("input[name=name]", EVIL)
    page.fill("input[name=token_quota]", "200")
    page.click("button[type=submit].primary")
    secret = page.inner_text("#new-secret").strip()

    # traffic through /v1 against the mock upstream until the quota is 80% used
    for _ in range(60):
        r = requests.post(console_server.url + "/v1/chat/completions", json=CHAT, timeout=10,
                          headers={"Authorization": f"Bearer {secret}"})
        if r.status_code != 200 or _alerts(app):
            break
    made = _alerts(app)
    assert [(a.kind, a.threshold) for a in made] == [("tokens", 80)], (r.status_code, r.text[:300])

    # the banner, on the next page load
    page.goto("/keys")
    banner = page.locator("#alert-banner")
    assert banner.is_visible()
    assert "1 open alert" in banner.inner_text() and "crossed 80% of its token quota" in banner.inner_text()
    assert EVIL in banner.inner_text()          # the key's name, as text, never run
    shot(page, "alerts-01-banner")

    # the alerts page, and acknowledging
    banner.locator("a:has-text('View alerts')").click()
    page.wait_for_url(re.compile(r"/alerts\?state=open"))
    row = page.locator(f"#alert-{made[0].id}")
    assert "open" in row.inner_text() and "tokens" in row.inner_text()
    shot(page, "alerts-02-page")
    row.locator("button:has-text('Acknowledge')").click()
    page.wait_for_url(re.compile(r"/alerts\?state=open"))
    assert page.locator(f"#alert-{made[0].id}").count() == 0
    assert page.locator("#alert-banner").count() == 0
    page.goto("/alerts")
    assert "acknowledged by admin@example.com" in page.inner_text(f"#alert-{made[0].id}")
    page.select_option("select[name=kind]", "provider_down")        # the filters swap the table in
    page.wait_for_url(re.compile(r"kind=provider_down"))
    assert page.locator(f"#alert-{made[0].id}").count() == 0
    shot(page, "alerts-03-history")
    page.goto("/settings")
    shot(page, "alerts-04-settings")
    assert page.js_errors == []
