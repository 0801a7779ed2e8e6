"""Marketplace cards (status, p95, context, capabilities, prices), the playground's chat-only
list, and money written as money on every page, in messages, exports and the CLI."""
from __future__ import annotations

import csv
import io
import re
from datetime import timedelta

import pytest
from console_client import Console, make_user
from sqlalchemy import event, insert

from gateway.extensions import db
from gateway.models import Team, UsageRecord, utcnow
from gateway.services.accounting import key_ceiling, keys, teams
from gateway.services.admin import catalog_admin, settings
from gateway.services.reporting import charts, exports, filters
from gateway.services.reporting import marketplace as market
from gateway.services.routing.catalog import catalog
from gateway.services.routing.health import health
from tests.helpers import add_provider, make_app, make_key

TINY = 7.5e-05          # USD per 1K tokens: what used to render as 7.5e-05
NO_EXPONENT = re.compile(r"\d(?:\.\d+)?e-\d", re.IGNORECASE)
# The charts' figures travel as JSON for plotly.js to draw (numbers, never shown as written).
CHART_DATA = re.compile(r'<script type="application/json" id="chart-[^"]*">.*?</script>', re.DOTALL)


def _served(app, model: str):
    """The routing snapshot's route of `model` (to feed the health statistics)."""
    with app.app_context():
        return catalog().snapshot().routes[model][0]


def _shop(app):
    """A chat model with a price and health samples, an embedding model, an image model priced
    per image, a chat model with its circuit open, and one whose only deployment is hidden."""
    add_provider(app, "mockp", "mock", None, ["fast-chat", "broken-chat", "hidden-chat"],
                 embedding_models=["embedder"])
    with app.app_context():
        catalog_admin.save_provider("oai", "openai", base_url="http://127.0.0.1:9/v1", api_key="sk-up-123456789",
                                    media_models={"image": ["painter"]})
        catalog_admin.save_deployment("fast-chat", "mockp", input_per_1k=TINY, output_per_1k=0.0003,
                                      context_window=128_000, capabilities=["tools", "vision"])
        catalog_admin.save_deployment("painter", "oai", unit_price=0.04, price_unit="image")
        hidden = next(d for d in catalog_admin.provider_named("mockp").deployments if d.model == "hidden-chat")
        catalog_admin.set_deployment_enabled(hidden, False)
    h = health(app)
    fast = _served(app, "fast-chat")
    for ms in range(100, 300, 10):          # 20 successes: p95 is the 19th of them, 290 ms
        h.success(fast, float(ms))
    broken = _served(app, "broken-chat")
    for _ in range(int(app.config["CIRCUIT_FAILURES"])):
        h.failure(broken, 50.0, status=500)


def _card(html: str, model: str) -> str:
    m = re.search(rf'<a class="card model-card"[^>]*data-model="{re.escape(model)}">(.*?)</a>', html, re.DOTALL)
    assert m, f"no card for {model}"
    return m.group(1)


def test_cards_show_status_p95_context_capabilities_and_prices(sqlite_app):
    app = sqlite_app
    make_user(app, "admin@example.com", "admin")
    _shop(app)
    page = Console(app, "admin@example.com").get("/models").text
    fast = _card(page, "fast-chat")
    assert 'data-status="healthy"' in fast and "290 ms" in fast
    assert "128,000 tokens" in fast
    for badge in ("chat", "tools", "vision"):
        assert f'<span class="tag">{badge}</span>' in fast
    assert "$0.075 / 1M" in fast and "$0.30 / 1M" in fast          # per 1M tokens, as money
    broken = _card(page, "broken-chat")
    assert 'data-status="open"' in broken and "circuit open" in broken
    assert 'data-status="unknown"' in _card(page, "embedder")     # no traffic yet
    painter = _card(page, "painter")
    assert "$0.04 / image" in painter and "/ 1M" not in painter
    hidden = _card(page, "hidden-chat")
    assert 'data-status="disabled"' in hidden
    assert not NO_EXPONENT.search(page)


def test_a_model_with_one_bad_deployment_of_two_is_degraded(sqlite_app):
    app = sqlite_app
    make_user(app, "admin@example.com", "admin")
    add_provider(app, "a", "mock", None, ["twin"])
    add_provider(app, "b", "mock", None, ["twin"])
    with app.app_context():
        good, bad = catalog().snapshot().routes["twin"]
    h = health(app)
    h.success(good, 120.0)
    h.success(bad, 900.0)
    for _ in range(int(app.config["CIRCUIT_FAILURES"])):
        h.failure(bad, 50.0, status=503)
    card = _card(Console(app, "admin@example.com").get("/models").text, "twin")
    assert 'data-status="degraded"' in card and "120–900 ms" in card


def test_members_and_viewers_do_not_see_hidden_models(sqlite_app):
    app = sqlite_app
    for role in ("member", "viewer"):
        make_user(app, f"{role}@example.com", role)
    _shop(app)
    for role in ("member", "viewer"):
        c = Console(app, f"{role}@example.com")
        page = c.get("/models").text
        assert 'data-model="fast-chat"' in page and 'data-model="hidden-chat"' not in page
        assert c.get("/models/hidden-chat").status_code == 404


def test_an_admin_sees_a_hidden_model_page_as_disabled(sqlite_app):
    make_user(sqlite_app, "admin@example.com", "admin")
    _shop(sqlite_app)
    detail = Console(sqlite_app, "admin@example.com").get("/models/hidden-chat")
    assert detail.status_code == 200 and "state-disabled" in detail.text


def test_the_marketplace_runs_the_same_queries_for_five_models_or_a_hundred(tmp_path):
    # The production cache time: with 0 (the tests' default) the price table is reread per lookup.
    app = make_app(f"sqlite:///{tmp_path}/n.db", instance_path=str(tmp_path / "instance"), CATALOG_CACHE_SECONDS=5.0)
    make_user(app, "admin@example.com", "admin")
    c = Console(app, "admin@example.com")

    def queries() -> tuple[int, str]:
        seen = []
        with app.app_context():
            engine = db.engine
        listener = lambda *a: seen.append(a[2])
        event.listen(engine, "before_cursor_execute", listener)
        try:
            r = c.get("/models", headers={"HX-Request": "true"})
        finally:
            event.remove(engine, "before_cursor_execute", listener)
        assert r.status_code == 200
        return len(seen), r.text

    def hide_one(provider: str) -> None:
        with app.app_context():
            catalog_admin.set_deployment_enabled(catalog_admin.provider_named(provider).deployments[0], False)

    add_provider(app, "p1", "mock", None, [f"m{i}" for i in range(5)])
    hide_one("p1")
    few, page = queries()
    assert page.count('class="card model-card"') == 5 and page.count('data-status="disabled"') == 1
    add_provider(app, "p2", "mock", None, [f"n{i}" for i in range(95)])     # the writes invalidate the caches
    hide_one("p2")
    many, page = queries()
    assert page.count('class="card model-card"') == 100 and page.count('data-status="disabled"') == 2
    assert many == few


def test_per_million_uses_money():
    assert market.per_million(TINY) == "$0.075"
    assert market.per_million(0.00015) == "$0.15"
    assert market.per_million(0.0025) == "$2.50"
    assert market.per_million(1e-9) == "$0.000001"
    assert market.per_million(None) == "—"


# -- the playground ---------------------------------------------------------------------------

def test_the_playground_lists_only_what_can_chat(sqlite_app):
    app = sqlite_app
    make_user(app, "admin@example.com", "admin")
    _shop(app)
    with app.app_context():
        catalog_admin.set_alias("chatty", "fast-chat")
        catalog_admin.set_alias("vectors", "embedder")
        catalog_admin.save_policy("talkers", strategy="cost", candidates=["fast-chat", "embedder"])
        catalog_admin.set_alias("routed", "policy:talkers")
        catalog_admin.save_policy("embedders", strategy="cost", candidates=["embedder"])
        catalog_admin.save_policy("images", strategy="cost", candidates=["painter"])
    page = Console(app, "admin@example.com").get("/playground").text
    options = set(re.findall(r'<option(?: value="([^"]*)")?[^>]*>([^<]*)</option>', page))
    shown = {value or text for value, text in options}
    assert {"fast-chat", "broken-chat", "chatty", "routed", "policy:talkers"} <= shown
    for never in ("embedder", "painter", "vectors", "policy:embedders", "policy:images", "hidden-chat"):
        assert never not in shown, never


def test_the_playground_refuses_a_media_model_it_does_not_list(sqlite_app):
    make_user(sqlite_app, "admin@example.com", "admin")
    _shop(sqlite_app)
    r = Console(sqlite_app, "admin@example.com").post("/playground/stream", json={"model": "embedder", "prompt": "hi"})
    assert r.status_code == 400 and "does not support" in r.json["error"]["message"]


# -- money everywhere -------------------------------------------------------------------------

def _tiny_world(app) -> dict:
    """Prices, budgets and costs small enough that %s or :g would write them with an exponent."""
    ids = {r: make_user(app, f"{r}@example.com", r) for r in ("admin", "member", "viewer")}
    add_provider(app, "mockp", "mock", None, ["demo-chat"], embedding_models=["demo-embed"])
    with app.app_context():
        catalog_admin.save_price("demo-chat", TINY, 2 * TINY, TINY / 10)
        catalog_admin.save_deployment("demo-embed", "mockp", input_per_1k=2e-05, output_per_1k=0.0)
        team = teams.save_team("tiny team", budget_usd=2e-05, budget_period="month")
        key, _ = keys.create_key("tiny", user_id=ids["member"], budget_usd=2e-05, team_id=team.id)
        settings.put("monthly_budget_usd", 3e-05)
        now = utcnow()
        db.session.execute(insert(UsageRecord), [
            {"request_id": f"t{i}", "endpoint": "chat", "status": 200, "key_id": key.id, "key_prefix": key.prefix,
             "user_id": ids["member"], "requested_model": "demo-chat", "provider": "mockp", "total_tokens": 3,
             "prompt_tokens": 2, "completion_tokens": 1, "cost_usd": TINY * (i + 1), "latency_ms": 50.0,
             "created_at": now - timedelta(minutes=i), "tags": {"feature": "x"}, "attempts": []}
            for i in range(3)])
        db.session.commit()
        return {"key": key.id, "team": team.id, "provider": catalog_admin.provider_named("mockp").id, **ids}


def _console_pages(app, ids: dict) -> list[str]:
    """Every console GET page an admin can open, the ones with ids filled in from `ids`."""
    fill = {"key_id": ids["key"], "provider_id": ids["provider"], "name": "demo-chat", "team_id": ids["team"],
            "user_id": ids["member"], "record_id": 1, "id": 1}
    urls = []
    for rule in app.url_map.iter_rules():
        if not rule.endpoint.startswith("console.") or "GET" not in rule.methods:
            continue
        if any(arg not in fill for arg in rule.arguments):
            continue
        url = rule.rule
        for arg in rule.arguments:
            url = re.sub(rf"<(?:[a-z]+:)?{arg}>", str(fill[arg]), url)
        urls.append(url)
    return sorted(set(urls)) + ["/usage?range=30d&group=key", "/usage?range=24h&group=team", "/models?sort=price"]


def test_no_console_page_writes_money_with_an_exponent(sqlite_app):
    app = sqlite_app
    ids = _tiny_world(app)
    c = Console(app, "admin@example.com")
    checked = 0
    for url in _console_pages(app, ids):
        r = c.get(url)
        if r.status_code != 200 or not r.mimetype.startswith(("text/html", "text/csv")):
            continue
        text = CHART_DATA.sub("", r.data.decode("utf-8", "replace"))
        assert not NO_EXPONENT.search(text), (url, NO_EXPONENT.search(text).group(0))
        checked += 1
    assert checked >= 15
    member = Console(app, "member@example.com")
    for url in (f"/keys/{ids['key']}", f"/keys/{ids['key']}/edit", "/keys", "/usage"):
        text = CHART_DATA.sub("", member.get(url).text)
        assert not NO_EXPONENT.search(text), url
    detail = c.get("/models/demo-chat").text
    assert "$0.075" in detail and 'value="0.000075"' in detail        # the table and the price form


def test_the_key_page_shows_its_budget_as_money(sqlite_app):
    ids = _tiny_world(sqlite_app)
    page = Console(sqlite_app, "admin@example.com").get(f"/keys/{ids['key']}").text
    assert "$0.00002" in page


def test_a_refused_request_states_the_budget_as_money(app):
    add_provider(app, "mockp", "mock", None, ["demo-chat"])
    with app.app_context():
        catalog_admin.save_price("demo-chat", 0.5, 1.0)
    key = make_key(app, budget_usd=2e-05)
    r = app.test_client().post("/v1/chat/completions", headers={"Authorization": f"Bearer {key}"},
                               json={"model": "demo-chat", "messages": [{"role": "user", "content": "hello"}]})
    message = r.json["error"]["message"]
    assert r.status_code == 429 and "it allows $0.00002" in message, message
    assert not NO_EXPONENT.search(message) and re.search(r"\(\$0\.\d+\)", message)


def test_a_member_is_told_the_admin_budget_as_money():
    ceiling = key_ceiling.Ceiling({"budget_usd": 2e-05})
    assert ceiling.hint("budget_usd") == "$0.00002"
    _, errors = key_ceiling.narrow({"budget_usd": 1.0}, ceiling)
    assert errors["budget_usd"] == "At most $0.00002: the limit an admin set for this key."


def test_cli_output_writes_dollars(sqlite_app):
    app = sqlite_app
    add_provider(app, "mockp", "mock", None, ["demo-chat"])
    with app.app_context():
        catalog_admin.save_deployment("demo-chat", "mockp", input_per_1k=TINY, output_per_1k=0.0003)
    run = app.test_cli_runner().invoke
    assert run(args=["keys", "create", "--name", "tiny", "--budget", "0.00002"]).exit_code == 0
    out = run(args=["keys", "list"]).output
    assert "budget=$0.00002/total" in out
    out = run(args=["teams", "create", "--name", "t", "--budget", "0.00002", "--period", "month"]).output
    assert "$0.00002/month" in out
    out = run(args=["teams", "tag-budget", "feature=search", "--budget", "1234.5"]).output
    assert "budget $1,234.50/" in out
    out = run(args=["deployments", "list"]).output
    assert "price=$0.000075/$0.0003 per 1K" in out
    assert not NO_EXPONENT.search(out)


def test_charts_and_exports_write_money(sqlite_app):
    app = sqlite_app
    _tiny_world(app)
    with app.app_context():
        f = filters.UsageFilter(start=utcnow() - timedelta(hours=24), end=utcnow() + timedelta(minutes=1))
        cost = charts.figures(f, budget=2e-05)["cost"]
        trace = cost["data"][0]
        assert trace["customdata"][-1] == "$0.00045" and "%{customdata}" in trace["hovertemplate"]
        assert cost["layout"]["yaxis"]["tickprefix"] == "$" and "e" not in cost["layout"]["yaxis"]["tickformat"]
        assert cost["layout"]["annotations"][0]["text"] == "budget $0.00002"
        rows = list(csv.reader(io.StringIO(exports.csv_bytes(f).decode("utf-8-sig"))))
        col = rows[0].index("Cost (USD)")
        assert sorted(r[col] for r in rows[1:]) == ["0.000075", "0.00015", "0.000225"]
        book = pytest.importorskip("openpyxl").load_workbook(io.BytesIO(exports.xlsx_bytes(f)))
        detail = book["Detail"]
        header = [c.value for c in detail[1]]
        cell = detail.cell(row=2, column=header.index("Cost (USD)") + 1)
        assert cell.number_format == exports.MONEY_FORMAT and cell.value == pytest.approx(TINY * 1)


def test_money_axis_keeps_two_significant_digits():
    assert charts.money_axis(0.0004) == {"tickprefix": "$", "tickformat": ",.5~f"}
    assert charts.money_axis(0.5) == {"tickprefix": "$", "tickformat": ",.2f"}
    assert charts.money_axis(1200) == {"tickprefix": "$", "tickformat": ",.0f"}
    assert charts.money_hover([TINY, 1234.5])["customdata"] == ["$0.000075", "$1,234.50"]


def test_a_members_key_form_states_the_admin_budget_as_money(sqlite_app):
    """A member's key form states the admin's ceiling as money, not 2e-05."""
    app = sqlite_app
    with app.app_context():
        team = Team(name="crew")
        db.session.add(team)
        db.session.commit()
        team_id = team.id
    member = make_user(app, "member@example.com", "member", team_id)
    make_user(app, "admin@example.com", "admin")
    with app.app_context():
        key, _ = keys.create_key("mine", user_id=member, team_id=team_id, budget_usd=2e-05)
        key.admin_limits = {"budget_usd": 2e-05}
        db.session.commit()
        key_id = key.id
    page = Console(app, "member@example.com").get(f"/keys/{key_id}/edit").text
    assert "$0.00002" in page and not NO_EXPONENT.search(page)


@pytest.mark.parametrize("usd, text", [
    (None, "—"), (0, "$0.00"), (0.075, "$0.075"), (0.15000000000000002, "$0.15"), (2.5, "$2.50"),
    (0.015, "$0.015"), (1234.5, "$1,234.50"), (TINY, "$0.000075"), (1e-9, "$0.000000001"),
])
def test_prices_keep_their_digits_past_the_cents(usd, text):
    from gateway.formatting import price
    assert price(usd) == text
