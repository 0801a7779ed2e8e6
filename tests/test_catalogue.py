"""The model catalogue (mode, context window, capabilities) and default prices from genai-prices:
lookups, what deployments and the marketplace get from them, and `gateway models refresh`."""
from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select

from gateway.extensions import db
from gateway.models import Deployment
from gateway.providers import model_catalogue
from gateway.providers.base import Usage
from gateway.services.accounting import pricing
from gateway.services.admin import catalog_admin
from tests.console_client import Console, make_user
from tests.helpers import add_provider, make_key, usage_records

FIXTURE = Path(__file__).parent / "fixtures" / "litellm_models_small.json"


def _deployments(app) -> dict[str, Deployment]:
    with app.app_context():
        rows = db.session.scalars(select(Deployment)).all()
        db.session.expunge_all()
        return {d.model: d for d in rows}


def test_shipped_catalogue_knows_the_common_models():
    mini = model_catalogue.lookup("gpt-4o-mini")
    assert mini.mode == "chat" and mini.context_window == 128000
    assert {"tools", "vision", "json"} <= set(mini.capabilities)
    embed = model_catalogue.lookup("text-embedding-3-small")
    assert embed.mode == "embedding" and embed.capabilities == ("embeddings",)
    assert model_catalogue.lookup("deepseek/deepseek-chat") == model_catalogue.lookup("deepseek-chat")
    assert model_catalogue.lookup("models/gemini-2.5-pro").context_window >= 1_000_000
    assert model_catalogue.lookup("no-such-model-anywhere") is None
    header = model_catalogue.about()
    assert "LiteLLM" in header["source"] and header["generated"] and header["count"] > 1000


def test_providers_add_infers_embedding_mode_and_fills_the_catalogue_fields(app):
    runner = app.test_cli_runner()
    out = runner.invoke(args=["providers", "add", "--name", "oai", "--kind", "openai", "--api-key",
                              "sk-upstream-secret-123456", "--models",
                              "text-embedding-3-small,gpt-4o-mini,my-own-model,raw=text-embedding-3-large"])
    assert out.exit_code == 0, out.output
    d = _deployments(app)
    assert d["text-embedding-3-small"].mode == "embedding" and d["raw"].mode == "embedding"
    assert d["text-embedding-3-small"].capabilities == ["embeddings"]
    assert (d["gpt-4o-mini"].mode, d["gpt-4o-mini"].context_window) == ("chat", 128000)
    assert (d["my-own-model"].mode, d["my-own-model"].context_window) == ("chat", None)   # unknown: chat
    assert d["my-own-model"].capabilities is None                                       # nothing ruled out
    out = runner.invoke(args=["providers", "add", "--name", "oai", "--kind", "openai",
                              "--embedding-models", "gpt-4o-mini"])                    # explicit wins
    assert out.exit_code == 0, out.output
    assert _deployments(app)["gpt-4o-mini"].mode == "embedding"


def test_an_inferred_embedding_deployment_serves_embeddings(sqlite_app, mock):
    add_provider(sqlite_app, "up", "openai", mock + "/v1", ["text-embedding-3-small"])
    secret = make_key(sqlite_app)
    r = sqlite_app.test_client().post("/v1/embeddings", json={"model": "text-embedding-3-small", "input": "hi"},
                                      headers={"Authorization": f"Bearer {secret}"})
    assert r.status_code == 200, r.json
    assert r.json["data"][0]["embedding"]


def test_admin_set_fields_win_over_the_catalogue(sqlite_app):
    add_provider(sqlite_app, "up", "openai", None, [])
    with sqlite_app.app_context():
        d = catalog_admin.save_deployment("gpt-4o-mini", "up", context_window=1000, capabilities=["tools"])
        assert (d.context_window, d.capabilities, d.mode) == (1000, ["tools"], "chat")
        d = catalog_admin.save_deployment("gpt-4o-mini", "up", weight=3)
        assert (d.context_window, d.capabilities) == (1000, ["tools"])
        e = catalog_admin.save_deployment("text-embedding-3-large", "up")
        assert e.mode == "embedding" and e.context_window == 8191


def test_genai_prices_is_the_default_and_the_admin_price_wins(sqlite_app, mock):
    add_provider(sqlite_app, "up", "openai", mock + "/v1", ["gpt-4o-mini", "echo"])
    secret = make_key(sqlite_app)
    chat = {"messages": [{"role": "user", "content": "one two three"}]}
    client = sqlite_app.test_client()
    auth = {"Authorization": f"Bearer {secret}"}
    with sqlite_app.app_context():
        listed = pricing.price_book().lookup("gpt-4o-mini")
        assert listed[:2] == pytest.approx((0.00015, 0.0006))        # $0.15 / $0.60 per 1M
        assert pricing.price_book().lookup("echo") is None
    assert client.post("/v1/chat/completions", json={**chat, "model": "gpt-4o-mini"}, headers=auth).status_code == 200
    with sqlite_app.app_context():
        catalog_admin.save_price("gpt-4o-mini", 0.01, 0.02)
    assert client.post("/v1/chat/completions", json={**chat, "model": "gpt-4o-mini"}, headers=auth).status_code == 200
    first, second = usage_records(sqlite_app)
    assert first.cost_usd == pytest.approx(pricing.cost_of(listed, Usage(first.prompt_tokens, first.completion_tokens)))
    assert second.cost_usd == pytest.approx((second.prompt_tokens * 0.01 + second.completion_tokens * 0.02) / 1000)
    assert first.cost_usd > 0 and second.cost_usd > first.cost_usd


def test_models_refresh_from_a_file_takes_precedence(sqlite_app):
    runner = sqlite_app.test_cli_runner()
    out = runner.invoke(args=["models", "refresh", "--from", str(FIXTURE)])
    assert out.exit_code == 0, out.output
    assert "5 models" in out.output     # the video model is left out; acme-think also by its bare name
    path = Path(sqlite_app.instance_path) / "models.json"
    assert path.is_file()
    with sqlite_app.app_context():
        assert model_catalogue.lookup("gpt-4o-mini", sqlite_app.instance_path).context_window == 64000
        think = model_catalogue.lookup("acme-think", sqlite_app.instance_path)
        assert think.context_window == 32000 and "reasoning" in think.capabilities   # not bedrock's
        assert model_catalogue.lookup("text-embedding-3-small", sqlite_app.instance_path) is None
    assert model_catalogue.lookup("gpt-4o-mini").context_window == 128000     # the shipped file is untouched
    shown = runner.invoke(args=["models", "show", "acme-embed-1"]).output
    assert "mode=embedding" in shown and "context=2048" in shown
    assert str(path) in runner.invoke(args=["models", "about"]).output
    add_provider(sqlite_app, "acme", "openai", None, ["acme-embed-1"])
    assert _deployments(sqlite_app)["acme-embed-1"].mode == "embedding"


def test_models_refresh_refuses_bad_input_and_ssrf_urls(sqlite_app, tmp_path):
    runner = sqlite_app.test_cli_runner()
    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2]")
    out = runner.invoke(args=["models", "refresh", "--from", str(bad)])
    assert out.exit_code == 1 and "not LiteLLM's model map" in out.output
    out = runner.invoke(args=["models", "refresh", "--from", "http://169.254.169.254/latest/models.json"])
    assert out.exit_code == 1 and "URL refused" in out.output
    assert not (Path(sqlite_app.instance_path) / "models.json").exists()


def test_marketplace_card_shows_context_window_and_money(sqlite_app):
    add_provider(sqlite_app, "up", "openai", None, ["gpt-4o-mini"])
    make_user(sqlite_app, "boss@example.com", "admin")
    c = Console(sqlite_app, "boss@example.com")
    cards = c.get("/models", headers={"HX-Request": "true"}).text
    assert "128,000 tokens" in cards
    assert "$0.15 / 1M" in cards and "$0.60 / 1M" in cards and "e-0" not in cards
    page = c.get("/models/gpt-4o-mini").text
    assert "context 128,000 tokens" in page and "list price (genai-prices)" in page


def test_models_endpoint_adds_nothing_non_standard(sqlite_app):
    add_provider(sqlite_app, "up", "openai", None, ["gpt-4o-mini"])
    secret = make_key(sqlite_app)
    r = sqlite_app.test_client().get("/v1/models", headers={"Authorization": f"Bearer {secret}"})
    (entry,) = [m for m in r.json["data"] if m["id"] == "gpt-4o-mini"]
    assert set(entry) <= {"id", "object", "created", "owned_by"}
