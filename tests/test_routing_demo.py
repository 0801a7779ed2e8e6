"""The demo echo provider serves only requests that name its models (demo-chat, demo-embed):
never a policy's open pool, a fallback through one, or an alias that does not name them."""
from __future__ import annotations

import pytest

from gateway import bootstrap
from gateway.services.admin import catalog_admin
from tests.helpers import make_key

SECRET = "sk-upstream-secret-123456"
MSG = [{"role": "user", "content": "hello there"}]


@pytest.fixture
def demo_app(sqlite_app):
    """The demo seeded on a fresh database, then a real provider added, as a newcomer would."""
    sqlite_app.config["DEMO"] = True
    with sqlite_app.app_context():
        bootstrap.seed_demo(out=lambda *_: None)
        catalog_admin.save_provider("real", "mock", models=["real-chat=echo"], api_key=SECRET)
    sqlite_app.key = make_key(sqlite_app)
    return sqlite_app


def served_by(app, model: str, **body) -> str:
    r = app.test_client().post("/v1/chat/completions", headers={"Authorization": f"Bearer {app.key}"},
                               json={"model": model, "messages": MSG, **body})
    assert r.status_code == 200, r.text
    return r.headers["x-gateway-deployment"].split("/", 1)[0]


@pytest.mark.parametrize("policy", ["latency-optimized", "cost-optimized", "throughput-optimized",
                                    "reliability-optimized"])
def test_built_in_policies_never_pick_the_demo(demo_app, policy):
    assert {served_by(demo_app, f"policy:{policy}") for _ in range(12)} == {"real"}


def test_open_admin_policy_and_alias_to_it_never_pick_the_demo(demo_app):
    with demo_app.app_context():
        catalog_admin.save_policy("open", strategy="weighted")
        catalog_admin.set_alias("default", "policy:open")
    assert {served_by(demo_app, "policy:open") for _ in range(12)} == {"real"}
    assert {served_by(demo_app, "default") for _ in range(12)} == {"real"}


def test_fallback_through_a_policy_never_reaches_the_demo(demo_app):
    with demo_app.app_context():
        catalog_admin.save_provider("broken", "mock", models=["flaky=echo+fail=500"], api_key=SECRET)
    for _ in range(8):
        r = demo_app.test_client().post(
            "/v1/chat/completions", headers={"Authorization": f"Bearer {demo_app.key}"},
            json={"model": "flaky", "messages": MSG, "models": ["policy:cost-optimized"]})
        assert r.status_code == 200, r.text
        assert r.headers["x-gateway-deployment"].startswith("real/")


def test_the_demo_still_serves_requests_that_name_it(demo_app):
    assert served_by(demo_app, "demo-chat") == "demo (mock)"
    with demo_app.app_context():
        catalog_admin.set_alias("try-demo", "demo-chat")
        catalog_admin.save_policy("demo-only", candidates=["demo-chat"])
    assert served_by(demo_app, "try-demo") == "demo (mock)"
    assert served_by(demo_app, "policy:demo-only") == "demo (mock)"


def test_a_policy_with_only_the_demo_has_nothing_to_serve(sqlite_app):
    sqlite_app.config["DEMO"] = True
    with sqlite_app.app_context():
        bootstrap.seed_demo(out=lambda *_: None)
    key = make_key(sqlite_app)
    r = sqlite_app.test_client().post("/v1/chat/completions", headers={"Authorization": f"Bearer {key}"},
                                      json={"model": "policy:latency-optimized", "messages": MSG})
    assert r.status_code == 404 and r.json["error"]["code"] == "model_not_found"
