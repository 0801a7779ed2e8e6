"""Routing and resilience through the real HTTP path: fallbacks, retries, streams, circuit
breakers, policies, regions, client fallback lists, aliases, A/B and shadow traffic."""
from __future__ import annotations

import time
from collections import Counter

import orjson
import pytest
import requests

from gateway.services.admin import catalog_admin
from gateway.services.routing.health import deployment_status, health
from tests.helpers import LiveServer, make_app, make_key, usage_records

SECRET = "sk-upstream-secret-123456"
MSG = [{"role": "user", "content": "one two three four five"}]


@pytest.fixture
def gw(tmp_path, mock):
    """A live gateway on SQLite with fast retries, talking to the real mock upstream."""
    app = make_app(f"sqlite:///{tmp_path}/t.db", instance_path=str(tmp_path / "instance"),
                   RETRY_BASE_SECONDS=0.01, RETRY_MAX_SECONDS=0.05, UPSTREAM_FIRST_BYTE_TIMEOUT=1.0)
    server = LiveServer(app)
    server.key = make_key(app)
    server.mock = mock
    yield server
    server.stop()
    with app.app_context():
        from gateway.services.accounting.usage import recorder
        recorder(app).drain()


def deploy(gw, provider, model, upstream, **fields):
    """A deployment of `model` on its own provider (one provider per deployment keeps labels clear)."""
    with gw.app.app_context():
        catalog_admin.save_provider(provider, "openai", base_url=gw.mock + "/v1", api_key=SECRET)
        return catalog_admin.save_deployment(model, provider, upstream, **fields).id


def chat(gw, model="m", stream=False, headers=None, **body):
    return requests.post(gw.url + "/v1/chat/completions", timeout=15, stream=stream,
                         headers={"Authorization": f"Bearer {gw.key}", **(headers or {})},
                         json={"model": model, "messages": MSG, "stream": stream, **body})


def mock_models(gw) -> Counter:
    return Counter(requests.get(gw.mock + "/_mock/stats", timeout=5).json()["models"])


def served(r) -> str:
    return r.headers["x-gateway-deployment"].split("/", 1)[0]


@pytest.mark.parametrize("fault", ["fail=500", "fail=429+retry_after=30", "hang", "reset", "fail=503"])
def test_falls_back_to_the_next_deployment(gw, fault):
    deploy(gw, "a", "m", "echo+" + fault)
    deploy(gw, "b", "m", "echo", weight=0)      # weight 0: only ever a fallback
    r = chat(gw)
    assert r.status_code == 200, r.text
    assert served(r) == "b" and r.headers["x-gateway-attempts"] == "2"
    assert r.json()["choices"][0]["message"]["content"].startswith("Echo:")
    [rec] = usage_records(gw.app)
    assert rec.status == 200 and rec.provider == "b"
    assert [a["provider"] for a in rec.attempts] == ["a", "b"]
    assert rec.attempts[0]["status"] != 200 and rec.attempts[1]["status"] == 200


def test_no_double_billing_on_retries(gw):
    deploy(gw, "a", "m", "echo+fail=500")
    deploy(gw, "b", "m", "echo+fail=502", weight=0)
    deploy(gw, "c", "m", "echo", weight=0)
    gw.app.config["MAX_ATTEMPTS"] = 3
    r = chat(gw)
    assert r.status_code == 200 and r.headers["x-gateway-attempts"] == "3"
    usage = r.json()["usage"]
    recs = usage_records(gw.app)
    assert len(recs) == 1, "one record per client request"
    rec = recs[0]
    assert (rec.prompt_tokens, rec.completion_tokens) == (usage["prompt_tokens"], usage["completion_tokens"])
    assert not rec.estimated and len(rec.attempts) == 3
    # Three upstream attempts happened, but only the serving one's tokens were billed.
    assert sum(mock_models(gw).values()) == 3


def test_retries_the_same_deployment_with_backoff(gw):
    deploy(gw, "a", "m", "echo")
    requests.post(gw.mock + "/_mock/faults", json={"faults": ["fail=500", "reset"]}, timeout=5)
    r = chat(gw)
    assert r.status_code == 200 and r.headers["x-gateway-attempts"] == "3"
    [rec] = usage_records(gw.app)
    assert [a["status"] for a in rec.attempts][-1] == 200 and len(rec.attempts) == 3


def test_attempts_are_capped(gw):
    deploy(gw, "a", "m", "echo+fail=500")
    gw.app.config["MAX_ATTEMPTS"] = 2
    r = chat(gw)
    assert r.status_code == 502 and r.headers["x-gateway-attempts"] == "2"
    assert mock_models(gw)["echo+fail=500"] == 2


def test_client_errors_do_not_fall_back(gw):
    deploy(gw, "a", "m", "echo+fail=400")
    deploy(gw, "b", "m", "echo", weight=0)
    r = chat(gw)
    assert r.status_code == 400
    assert mock_models(gw)["echo"] == 0


@pytest.mark.parametrize("fault", ["fail=500", "cut=0", "reset", "fail=429"])
def test_stream_falls_back_before_the_first_chunk(gw, fault):
    deploy(gw, "a", "m", "echo+" + fault)
    deploy(gw, "b", "m", "echo", weight=0)
    r = chat(gw, stream=True)
    assert r.status_code == 200 and served(r) == "b", r.text
    events = [line[6:] for line in r.iter_lines() if line.startswith(b"data: ")]
    assert events[-1] == b"[DONE]"
    text = "".join((orjson.loads(e)["choices"] or [{}])[0].get("delta", {}).get("content") or ""
                   for e in events[:-1])
    assert text.startswith("Echo: one two")
    [rec] = usage_records(gw.app)
    assert rec.status == 200 and rec.provider == "b" and len(rec.attempts) == 2 and rec.ttft_ms


def test_stream_cut_after_first_chunk_ends_with_error_event(gw):
    deploy(gw, "a", "m", "echo+cut=2")
    deploy(gw, "b", "m", "echo", weight=0)
    r = chat(gw, stream=True)
    events = [line[6:] for line in r.iter_lines() if line.startswith(b"data: ")]
    assert served(r) == "a"
    assert "error" in orjson.loads(events[-1])
    assert mock_models(gw)["echo"] == 0     # no second answer spliced into the first


def test_circuit_opens_and_recovers(gw):
    dep = deploy(gw, "a", "m", "echo")
    gw.app.config.update(MAX_ATTEMPTS=1, CIRCUIT_FAILURES=2, CIRCUIT_COOLDOWN_SECONDS=0.5)
    requests.post(gw.mock + "/_mock/faults", json={"faults": ["fail=500", "fail=500"]}, timeout=5)
    assert chat(gw).status_code == 502
    assert chat(gw).status_code == 502
    with gw.app.app_context():
        assert deployment_status(dep)["state"] == "open"
    r = chat(gw)        # open: refused without calling upstream
    assert r.status_code == 503 and r.json()["error"]["code"] == "no_healthy_deployment"
    assert int(r.headers["Retry-After"]) >= 1
    assert sum(mock_models(gw).values()) == 2
    time.sleep(0.6)     # cooldown over: one half-open probe goes, succeeds, closes the circuit
    assert chat(gw).status_code == 200
    with gw.app.app_context():
        status = deployment_status(dep)
    assert status["circuit"] == "closed" and status["state"] in ("healthy", "degraded")
    assert chat(gw).status_code == 200


def test_open_circuit_sends_traffic_elsewhere(gw):
    deploy(gw, "a", "m", "echo+fail=500")
    deploy(gw, "b", "m", "echo", weight=0)
    gw.app.config.update(CIRCUIT_FAILURES=2, CIRCUIT_COOLDOWN_SECONDS=60)
    for _ in range(5):
        assert chat(gw).status_code == 200
    assert mock_models(gw)["echo+fail=500"] == 2       # opened after two, then skipped


def test_rate_limited_deployment_cools_down(gw):
    deploy(gw, "a", "m", "echo+fail=429+retry_after=30")
    deploy(gw, "b", "m", "echo", weight=0)
    for _ in range(4):
        assert served(chat(gw)) == "b"
    assert mock_models(gw)["echo+fail=429+retry_after=30"] == 1


def test_rpm_cap_is_respected(gw):
    deploy(gw, "a", "m", "echo", rpm_limit=2)
    deploy(gw, "b", "m", "echo+latency=1", weight=0)
    got = [served(chat(gw)) for _ in range(5)]
    assert got.count("a") == 2 and got.count("b") == 3


def test_latency_policy_shifts_traffic_to_the_faster_deployment(gw):
    # Far apart, and no exploration: one slow sample of "fast" on a loaded CI machine must not
    # look like "slow" (p95 over a handful of samples is nearly the maximum).
    gw.app.config["ROUTING_EXPLORE"] = 0.0
    deploy(gw, "slow", "m", "echo+latency=600")
    deploy(gw, "fast", "m", "echo")
    with gw.app.app_context():
        catalog_admin.save_policy("quick", strategy="latency", candidates=["m"])
    got = [served(chat(gw, "policy:quick")) for _ in range(20)]
    assert "slow" in got[:3]        # unknown deployments are tried first, to learn
    assert got[5:].count("fast") >= 13


def test_cost_policy_picks_the_cheapest_capable_deployment(gw):
    deploy(gw, "cheap", "m", "echo", input_per_1k=0.0001, output_per_1k=0.0002, capabilities=["json"])
    deploy(gw, "mid", "m", "echo+latency=1", input_per_1k=0.001, output_per_1k=0.002,
           capabilities=["tools", "json"])
    deploy(gw, "dear", "m", "echo+latency=2", input_per_1k=0.01, output_per_1k=0.02,
           capabilities=["tools", "json", "vision"])
    with gw.app.app_context():
        catalog_admin.set_alias("chat-default", "policy:cost-optimized")
    assert {served(chat(gw, "chat-default")) for _ in range(3)} == {"cheap"}
    tools = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]
    assert served(chat(gw, "chat-default", tools=tools)) == "mid"
    image = [{"role": "user", "content": [{"type": "text", "text": "what is it"},
                                          {"type": "image_url", "image_url": {"url": "data:,"}}]}]
    assert served(chat(gw, "chat-default", messages=image)) == "dear"
    [rec] = [r for r in usage_records(gw.app) if r.provider == "dear"]
    assert rec.cost_usd == pytest.approx((rec.prompt_tokens * 0.01 + rec.completion_tokens * 0.02) / 1000)


def test_capability_and_context_checks(gw):
    deploy(gw, "small", "m", "echo", context_window=20)
    deploy(gw, "text", "m", "echo+latency=1", capabilities=["tools"], context_window=200)
    long = [{"role": "user", "content": "word " * 100}]
    assert served(chat(gw, messages=long)) == "text"
    image = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:,"}}]}]
    assert served(chat(gw, messages=image)) == "small"      # capabilities unset: not ruled out
    r = chat(gw, messages=image + long)
    assert r.status_code == 400 and r.json()["error"]["code"] == "no_suitable_deployment"
    r = chat(gw, messages=[{"role": "user", "content": "word " * 300}])
    assert r.status_code == 400 and r.json()["error"]["code"] == "context_length_exceeded"


def test_region_constraint_holds_under_fallback(gw):
    deploy(gw, "eu1", "m", "echo+fail=500", region="eu-west-1")
    deploy(gw, "us1", "m", "echo", region="us-east-1", weight=5)
    deploy(gw, "eu2", "m", "echo+latency=1", region="eu-central-1", weight=0)
    with gw.app.app_context():
        catalog_admin.save_policy("eu-only", candidates=["m"], regions=["eu"])
    for _ in range(3):
        r = chat(gw, "policy:eu-only")
        assert r.status_code == 200 and served(r) == "eu2"
    assert mock_models(gw)["echo"] == 0
    # Every EU deployment failing never spills over to the US.
    with gw.app.app_context():
        catalog_admin.save_deployment("m", "eu2", "echo+latency=1", enabled=False)
    r = chat(gw, "policy:eu-only")
    assert r.status_code in (502, 503) and mock_models(gw)["echo"] == 0
    for rec in usage_records(gw.app):
        assert all(a["region"].startswith("eu") for a in rec.attempts)


def test_key_bound_policy_applies_region(gw):
    deploy(gw, "us1", "m", "echo", region="us-east-1")
    deploy(gw, "eu1", "m", "echo+latency=1", region="eu-west-1", weight=0)
    with gw.app.app_context():
        catalog_admin.save_policy("eu-only", regions=["eu"])
        from gateway.services.accounting import keys
        key, secret = keys.create_key("eu-team")
        keys.update_key(key, policy="eu-only")
    r = requests.post(gw.url + "/v1/chat/completions", timeout=10, json={"model": "m", "messages": MSG},
                      headers={"Authorization": f"Bearer {secret}"})
    assert served(r) == "eu1"
    assert served(chat(gw)) == "us1"     # other keys are unaffected


def test_request_fallback_list(gw):
    deploy(gw, "a", "primary", "echo+fail=500")
    deploy(gw, "b", "backup", "echo")
    r = chat(gw, "primary", models=["backup"])
    assert r.status_code == 200 and served(r) == "b"
    r = chat(gw, "primary", headers={"x-gateway-fallbacks": "nope, backup"})
    assert r.status_code == 200 and served(r) == "b"
    sent = requests.get(gw.mock + "/_mock/requests", timeout=5).json()["requests"]
    assert all("models" not in (q["body"] or {}) for q in sent)     # ours, never forwarded
    assert chat(gw, "primary", models="backup").status_code == 400


def test_alias_retargets_without_client_change(gw):
    deploy(gw, "a", "m1", "echo")
    deploy(gw, "b", "m2", "echo+latency=1")
    with gw.app.app_context():
        catalog_admin.set_alias("chat-default", "m1")
    assert served(chat(gw, "chat-default")) == "a"
    with gw.app.app_context():
        catalog_admin.set_alias("chat-default", "m2")
    assert served(chat(gw, "chat-default")) == "b"
    assert chat(gw, "policy:nope").status_code == 404


def test_sticky_routing_by_user(gw):
    for name in ("a", "b", "c"):
        deploy(gw, name, "m", "echo+latency=" + str(ord(name) - 96))
    with gw.app.app_context():
        catalog_admin.save_policy("sticky", candidates=["m"], sticky="user")
    for user in ("alice", "bob", "carol"):
        got = {served(chat(gw, "policy:sticky", user=user)) for _ in range(4)}
        assert len(got) == 1


def test_ab_split_proportions_and_variant_recorded(sqlite_app):
    app = sqlite_app
    with app.app_context():
        catalog_admin.save_provider("pa", "mock", models=["m-a=echo"], api_key=SECRET)
        catalog_admin.save_provider("pb", "mock", models=["m-b=echo"], api_key=SECRET)
        catalog_admin.save_policy("exp", candidates=["m-a"], ab={"model": "m-b", "percent": 30})
    key = make_key(app)
    client = app.test_client()
    n, arms = 300, Counter()
    for _ in range(n):
        r = client.post("/v1/chat/completions", json={"model": "policy:exp", "messages": MSG},
                        headers={"Authorization": f"Bearer {key}"})
        assert r.status_code == 200
        arms[r.headers["x-gateway-variant"]] += 1
        assert (r.headers["x-gateway-variant"] == "B") == r.headers["x-gateway-deployment"].startswith("pb/")
    # Binomial(300, 0.3): mean 90, sd 7.9; +-4.4 sd.
    assert 55 <= arms["B"] <= 125
    recs = usage_records(app)
    assert Counter(r.variant for r in recs) == arms


def test_shadow_never_changes_the_answer_and_is_not_billed(gw):
    deploy(gw, "main", "m", "echo")
    deploy(gw, "cand", "m-next", "echo+fail=500")
    with gw.app.app_context():
        catalog_admin.save_policy("mirror", candidates=["m"], shadow={"model": "m-next", "percent": 100})
    direct = chat(gw, "m").json()["choices"][0]["message"]
    r = chat(gw, "policy:mirror")
    assert r.status_code == 200 and served(r) == "main"
    assert r.json()["choices"][0]["message"] == direct
    deadline = time.monotonic() + 5
    while len(usage_records(gw.app)) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    recs = usage_records(gw.app)
    shadows = [x for x in recs if x.variant == "shadow"]
    assert len(shadows) == 1 and len(recs) == 3
    s = shadows[0]
    assert s.key_id is None and s.tags["shadow"] == "1" and s.tags["shadow_of"] == r.headers["x-request-id"]
    assert s.status == 502 and s.provider == "cand"


def test_streamed_shadow_answer_is_the_primarys(gw):
    deploy(gw, "main", "m", "echo")
    deploy(gw, "cand", "m-next", "echo+latency=50")
    with gw.app.app_context():
        catalog_admin.save_policy("mirror", candidates=["m"], shadow={"model": "m-next", "percent": 100})
    r = chat(gw, "policy:mirror", stream=True)
    events = [line[6:] for line in r.iter_lines() if line.startswith(b"data: ")]
    assert served(r) == "main" and events[-1] == b"[DONE]"
    deadline = time.monotonic() + 5
    while len(usage_records(gw.app)) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    shadow = [x for x in usage_records(gw.app) if x.variant == "shadow"]
    assert shadow and shadow[0].status == 200 and shadow[0].completion_tokens > 0 and not shadow[0].stream


def test_deployment_status_shape(gw):
    dep = deploy(gw, "a", "m", "echo")
    with gw.app.app_context():
        assert deployment_status(dep)["state"] == "unknown"
    for _ in range(3):
        chat(gw)
    with gw.app.app_context():
        st = deployment_status(dep)
        assert health().stats(dep).count == 3
    assert st["state"] == "healthy" and st["p50_ms"] > 0 and st["p95_ms"] >= st["p50_ms"]
    assert set(st) >= {"state", "p50_ms", "p95_ms", "ttft_p95_ms", "error_rate", "rate_429"}


def test_model_aliases_are_listed(gw):
    deploy(gw, "a", "m1", "echo")
    with gw.app.app_context():
        catalog_admin.set_alias("chat-default", "m1")
        catalog_admin.set_alias("cheap", "policy:cost-optimized")
    h = {"Authorization": f"Bearer {gw.key}"}
    ids = {m["id"] for m in requests.get(gw.url + "/v1/models", headers=h, timeout=5).json()["data"]}
    assert ids == {"m1", "chat-default"}
    assert requests.get(gw.url + "/v1/models/chat-default", headers=h, timeout=5).status_code == 200
