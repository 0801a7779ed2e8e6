"""The marketplace and the playground in a real browser: cards with status, p95, context,
capabilities and prices as money; the playground offers chat models only.

Screenshots go to artifacts/screenshots/market-*.png."""
from __future__ import annotations

from gateway.services.admin import catalog_admin
from gateway.services.routing.catalog import catalog
from gateway.services.routing.health import health
from tests.browser import BROWSER, expect, login, shot
from tests.helpers import add_provider

pytestmark = BROWSER


def _seed(app) -> None:
    """A priced chat model with 20 answered requests (p95 290 ms), an embedding model, an image
    model priced per image, and a chat model whose circuit is open."""
    add_provider(app, "mockp", "mock", None, ["demo-chat", "flaky-chat"], embedding_models=["demo-embed"])
    with app.app_context():
        catalog_admin.save_provider("oai", "openai", base_url="http://127.0.0.1:9/v1", api_key="sk-up-123456789",
                                    media_models={"image": ["painter"]})
        catalog_admin.save_deployment("demo-chat", "mockp", input_per_1k=7.5e-05, output_per_1k=0.0003,
                                      context_window=128_000, capabilities=["tools", "vision"])
        catalog_admin.save_deployment("painter", "oai", unit_price=0.04, price_unit="image")
        routes = catalog().snapshot().routes
    h = health(app)
    for ms in range(100, 300, 10):
        h.success(routes["demo-chat"][0], float(ms))
    for _ in range(int(app.config["CIRCUIT_FAILURES"])):
        h.failure(routes["flaky-chat"][0], 40.0, status=502)


def test_marketplace_cards_and_the_chat_only_playground(browser_page, console_server):
    page, app = browser_page, console_server.app
    _seed(app)
    login(page)

    page.goto("/models")
    card = page.locator("a.model-card[data-model='demo-chat']")
    expect(card.locator(".state")).to_have_text("healthy")
    expect(card.locator(".p95")).to_have_text("290 ms")
    expect(card.locator(".context")).to_have_text("128,000 tokens")
    expect(card.locator(".price-input")).to_have_text("$0.075 / 1M")
    expect(card.locator(".price-output")).to_have_text("$0.30 / 1M")
    assert card.locator(".tag").all_inner_texts() == ["chat", "tools", "vision"]
    flaky = page.locator("a.model-card[data-model='flaky-chat']")
    expect(flaky.locator(".state")).to_have_text("circuit open")
    expect(page.locator("a.model-card[data-model='painter'] .price-unit")).to_have_text("$0.04 / image")
    expect(page.locator("a.model-card[data-model='demo-embed'] .state")).to_have_text("no traffic yet")
    assert "e-0" not in page.inner_text("#model-cards")
    shot(page, "market-01-marketplace")

    page.select_option("select[name=capability]", "vision")     # an htmx swap of the cards
    expect(page.locator("a.model-card")).to_have_count(1)
    shot(page, "market-02-marketplace-filtered")

    card = page.locator("a.model-card[data-model='demo-chat']")
    card.click()
    page.wait_for_selector("#snippet-curl")
    expect(page.locator("table >> text=290 ms")).to_have_count(1)
    expect(page.locator("td.deployment-price")).to_have_text("$0.075 in, $0.30 out / 1M")
    expect(page.locator("h1 + p .state")).to_have_text("healthy")
    shot(page, "market-03-model-detail")

    page.goto("/playground")
    offered = page.locator("#pg-model option").all_inner_texts()
    assert "demo-chat" in offered and "flaky-chat" in offered
    assert "demo-embed" not in offered and "painter" not in offered
    page.select_option("#pg-model", "demo-chat")
    page.fill("#pg-prompt", "hello from the marketplace")
    page.click("#pg-send")
    expect(page.locator("#pg-status")).to_contain_text("Done")
    assert page.inner_text("#pg-output").strip()
    shot(page, "market-04-playground")
    assert page.js_errors == []
