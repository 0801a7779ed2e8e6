"""What the browser tests share: a live console on SQLite with an admin, a headless Debian
Chromium page that records JS errors and dialogs, and screenshots under artifacts/screenshots/.

conftest.py imports the fixtures; a test file takes `BROWSER` (its pytestmark), `shot`,
`login` and Playwright's `expect` from here."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

try:
    from playwright.sync_api import expect  # noqa: F401 (for the test files)
except ImportError:     # the browser tests skip without Playwright
    expect = None

from gateway.extensions import db
from gateway.services.accounting.usage import recorder
from tests.console_client import PASSWORD, make_user
from tests.helpers import LiveServer, make_app

CHROMIUM = "/usr/bin/chromium"
SHOTS = Path(__file__).resolve().parent.parent / "artifacts" / "screenshots"
EVIL = "<script>alert(1)</script>"

BROWSER = [pytest.mark.browser,
           pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"{CHROMIUM} is missing (apt-get install chromium)")]


@pytest.fixture
def console_server(tmp_path):
    app = make_app(f"sqlite:///{tmp_path}/browser.db", instance_path=str(tmp_path / "instance"))
    make_user(app, "admin@example.com", "admin")
    server = LiveServer(app)
    yield server
    server.stop()
    with app.app_context():
        recorder(app).drain()
        db.engine.dispose()


@pytest.fixture
def browser_page(console_server):
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--no-first-run"])
        context = browser.new_context(base_url=console_server.url, accept_downloads=True,
                                      viewport={"width": 1360, "height": 900})
        context.grant_permissions(["clipboard-read", "clipboard-write"], origin=console_server.url)
        page = context.new_page()
        page.set_default_timeout(15_000)
        page.js_errors = []
        page.dialogs = []
        page.on("console", lambda m: m.type == "error" and page.js_errors.append(f"console: {m.text}"))
        page.on("pageerror", lambda e: page.js_errors.append(f"pageerror: {e}"))

        def on_dialog(d):
            page.dialogs.append((d.type, d.message))
            d.accept()
        page.on("dialog", on_dialog)
        yield page
        context.close()
        browser.close()


def shot(page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def login(page, email: str = "admin@example.com", password: str = PASSWORD) -> None:
    """Log in through the form and wait for the console's first page."""
    page.goto("/login")
    page.fill("input[name=email]", email)
    page.fill("input[name=password]", password)
    page.click("button[type=submit]")
    page.wait_for_url(lambda url: "/login" not in url)
