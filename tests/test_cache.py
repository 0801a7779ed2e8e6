"""The exact-match response cache: what shares an entry and what never does, streams replayed
as streams, TTL, refresh and off, both stores, and Redis down meaning no cache."""
from __future__ import annotations

import uuid

import openai
import pytest
import requests

from gateway.extensions import db
from gateway.formatting import money
from gateway.metrics import metrics
from gateway.services.accounting import teams
from gateway.services.admin import catalog_admin
from gateway.services.response_store import store
from tests.helpers import REDIS_URL, Listener, add_provider, make_app, make_key, redis_or_skip, usage_records

CHAT = {"model": "chat", "messages": [{"role": "user", "content": "hello cache"}], "max_tokens": 20}
ON = {"x-gateway-cache": "on"}


def upstream_calls(mock) -> int:
    return requests.get(mock + "/_mock/stats", timeout=5).json()["total"]


def post(client, key, body=None, headers=None, path="/v1/chat/completions"):
    return client.post(path, json=body or CHAT, headers={"Authorization": f"Bearer {key}", **(headers or {})})


@pytest.fixture
def gw(sqlite_app, mock):
    add_provider(sqlite_app, "up", "openai", mock + "/v1", ["chat=echo-model", "other=echo-model"],
                 embedding_models=["embed=embed-model"])
    with sqlite_app.app_context():
        catalog_admin.save_price("echo-model", 0.5, 1.0)
    return sqlite_app


def test_off_unless_asked(gw, mock):
    key = make_key(gw)
    c = gw.test_client()
    for _ in range(2):
        r = post(c, key)
        assert r.status_code == 200 and "x-gateway-cache" not in r.headers
    assert upstream_calls(mock) == 2


def test_hit_is_free_recorded_and_counted(gw, mock):
    key = make_key(gw, token_quota=10_000)
    c = gw.test_client()
    first, second = post(c, key, headers=ON), post(c, key, headers=ON)
    assert first.headers["x-gateway-cache"] == "miss" and second.headers["x-gateway-cache"] == "hit"
    assert second.json == first.json
    assert upstream_calls(mock) == 1
    miss, hit = usage_records(gw)
    assert (miss.cached, hit.cached) == (False, True)
    assert miss.cost_usd > 0 and hit.cost_usd == 0 and hit.saved_usd == pytest.approx(miss.cost_usd)
    assert hit.total_tokens == miss.total_tokens         # kept for reporting
    text = metrics(gw).render()[0].decode()
    assert 'gateway_cache_lookups_total{result="hit"} 1.0' in text
    assert 'gateway_cache_lookups_total{result="miss"} 1.0' in text
    assert "gateway_cache_saved_usd_total" in text


def test_hit_charges_no_quota(gw, mock):
    # A quota that holds one answer: the cached second one must not use it up.
    key = make_key(gw, token_quota=60)
    c = gw.test_client()
    assert post(c, key, headers=ON).status_code == 200
    for _ in range(3):
        assert post(c, key, headers=ON).headers["x-gateway-cache"] == "hit"
    from sqlalchemy import select

    from gateway.models import QuotaCounter
    with gw.app_context():
        counter = db.session.scalar(select(QuotaCounter).where(QuotaCounter.scope.like("key:%")))
        assert counter.used_tokens == usage_records(gw)[0].total_tokens
        assert counter.reserved_tokens == 0


def test_what_never_shares_an_entry(gw, mock):
    key, other_key = make_key(gw), make_key(gw, name="other")
    c = gw.test_client()
    post(c, key, headers=ON)
    variants = [
        (key, {**CHAT, "temperature": 0.5}),
        (key, {**CHAT, "max_tokens": 21}),
        (key, {**CHAT, "messages": [{"role": "user", "content": "hello cache!"}]}),
        (key, {**CHAT, "tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}]}),
        (key, {**CHAT, "model": "other"}),
        (other_key, CHAT),
    ]
    for k, body in variants:
        assert post(c, k, body, ON).headers["x-gateway-cache"] == "miss", body
    assert upstream_calls(mock) == 1 + len(variants)
    # ... while key order and the end user's id are no part of the question
    again = {"max_tokens": 20, "user": "someone", "messages": CHAT["messages"], "model": "chat"}
    assert post(c, key, again, ON).headers["x-gateway-cache"] == "hit"


def test_aliases_share_the_model_they_resolve_to(gw, mock):
    with gw.app_context():
        catalog_admin.set_alias("nick", "chat")
    key = make_key(gw)
    c = gw.test_client()
    post(c, key, headers=ON)
    assert post(c, key, {**CHAT, "model": "nick"}, ON).headers["x-gateway-cache"] == "hit"


def test_team_scope(tmp_path, mock):
    app = make_app(f"sqlite:///{tmp_path}/t.db", instance_path=str(tmp_path / "i"), CACHE_SCOPE="team")
    add_provider(app, "up", "openai", mock + "/v1", ["chat=echo-model"])
    with app.app_context():
        red, blue = teams.save_team("red").id, teams.save_team("blue").id
    red1, red2, blue1 = (make_key(app, name="r1", team_id=red), make_key(app, name="r2", team_id=red),
                         make_key(app, name="b1", team_id=blue))
    loner = make_key(app, name="no team")
    c = app.test_client()
    assert post(c, red1, headers=ON).headers["x-gateway-cache"] == "miss"
    assert post(c, red2, headers=ON).headers["x-gateway-cache"] == "hit"      # same team shares
    assert post(c, blue1, headers=ON).headers["x-gateway-cache"] == "miss"    # another never
    assert post(c, loner, headers=ON).headers["x-gateway-cache"] == "miss"
    assert upstream_calls(mock) == 3


def test_key_and_policy_settings(gw, mock):
    keyed = make_key(gw, name="keyed", cache_ttl=60)
    c = gw.test_client()
    post(c, keyed)
    assert post(c, keyed).headers["x-gateway-cache"] == "hit"
    assert "x-gateway-cache" not in post(c, keyed, headers={"x-gateway-cache": "off"}).headers
    with gw.app_context():
        catalog_admin.save_policy("cached", cache_ttl=60)
    bound = make_key(gw, name="bound", policy="cached")
    post(c, bound, {**CHAT, "model": "other"})
    assert post(c, bound, {**CHAT, "model": "other"}).headers["x-gateway-cache"] == "hit"


def test_ttl_expiry_and_refresh(gw, mock):
    clock = [1_000_000.0]
    store(gw).clock = lambda: clock[0]
    key = make_key(gw)
    c = gw.test_client()
    ttl = {"x-gateway-cache-ttl": "30"}
    post(c, key, headers=ttl)
    clock[0] += 29
    assert post(c, key, headers=ttl).headers["x-gateway-cache"] == "hit"
    clock[0] += 2
    assert post(c, key, headers=ttl).headers["x-gateway-cache"] == "miss"
    assert upstream_calls(mock) == 2
    refreshed = post(c, key, headers={"x-gateway-cache": "refresh"})
    assert refreshed.headers["x-gateway-cache"] == "miss" and upstream_calls(mock) == 3
    assert post(c, key, headers=ON).headers["x-gateway-cache"] == "hit"
    assert post(c, key, headers={"x-gateway-cache": "sometimes"}).status_code == 400
    assert post(c, key, headers={"x-gateway-cache-ttl": "-1"}).json["error"]["param"] == "x-gateway-cache-ttl"


def test_embeddings(gw, mock):
    key = make_key(gw)
    c = gw.test_client()
    body = {"model": "embed", "input": "hello"}
    first = post(c, key, body, ON, "/v1/embeddings")
    second = post(c, key, body, ON, "/v1/embeddings")
    assert second.headers["x-gateway-cache"] == "hit" and second.json == first.json
    assert upstream_calls(mock) == 1


def test_stream_replayed_with_the_sdk(sqlite_app, mock):
    from tests.helpers import LiveServer
    add_provider(sqlite_app, "up", "openai", mock + "/v1", ["chat=echo-model"])
    live = LiveServer(sqlite_app)
    try:
        client = openai.OpenAI(base_url=live.url + "/v1", api_key=make_key(sqlite_app), max_retries=0,
                               default_headers=ON)
        texts = []
        for _ in range(2):
            raw = client.chat.completions.with_raw_response.create(
                model="chat", messages=CHAT["messages"], stream=True, stream_options={"include_usage": True})
            texts.append((raw.headers["x-gateway-cache"],
                          "".join(ch.choices[0].delta.content or "" for ch in raw.parse() if ch.choices)))
    finally:
        live.stop()
    assert texts[0] == ("miss", "Echo: hello cache") and texts[1] == ("hit", "Echo: hello cache")
    assert upstream_calls(mock) == 1
    first, hit = usage_records(sqlite_app)
    assert hit.cached and hit.stream and hit.status == 200 and hit.saved_usd == pytest.approx(first.cost_usd)


def test_broken_stream_is_not_kept(gw, mock):
    key = make_key(gw)
    c = gw.test_client()
    requests.post(mock + "/_mock/faults", json={"faults": ["cut=2"]}, timeout=5)
    body = {**CHAT, "stream": True}
    broken = post(c, key, body, ON).get_data()
    assert b"[DONE]" not in broken
    r = post(c, key, body, ON)
    assert r.headers["x-gateway-cache"] == "miss" and b"[DONE]" in r.get_data()


def test_database_store(app, mock):
    # SQLite and Postgres: the table, expiry and purge.
    add_provider(app, "up", "openai", mock + "/v1", ["chat=echo-model"])
    key = make_key(app)
    c = app.test_client()
    post(c, key, headers=ON)
    assert post(c, key, headers=ON).headers["x-gateway-cache"] == "hit"
    s = store(app)
    assert s.kind == "database"
    s.clock = lambda: 4_000_000_000.0
    from gateway.services.accounting import retention
    with app.app_context():
        assert retention.purge(None, None).cached == 1      # the retention job's batches
        assert s.purge_expired() == 0
    assert post(c, key, headers=ON).headers["x-gateway-cache"] == "miss"


def test_redis_store(tmp_path, mock):
    r = redis_or_skip()
    prefix = f"gw:test:{uuid.uuid4().hex[:8]}:"
    app = make_app(f"sqlite:///{tmp_path}/t.db", instance_path=str(tmp_path / "i"), REDIS_URL=REDIS_URL,
                   RESPONSE_STORE_REDIS_PREFIX=prefix, QUOTA_REDIS_PREFIX=prefix + "q:",
                   HEALTH_SYNC_SECONDS=3600)
    add_provider(app, "up", "openai", mock + "/v1", ["chat=echo-model"])
    key = make_key(app)
    c = app.test_client()
    try:
        post(c, key, headers=ON)
        assert post(c, key, headers=ON).headers["x-gateway-cache"] == "hit"
        assert store(app).kind == "redis" and len(list(r.scan_iter(match=prefix + "*"))) == 1
        with app.app_context():
            from sqlalchemy import func, select

            from gateway.models import CachedResponse
            assert db.session.scalar(select(func.count()).select_from(CachedResponse)) == 0
        store(app).clock = lambda: 4_000_000_000.0     # past the TTL by our clock
        assert post(c, key, headers=ON).headers["x-gateway-cache"] == "miss"
    finally:
        for k in r.scan_iter(match=prefix + "*"):
            r.delete(k)


def test_redis_down_means_no_cache(tmp_path, mock):
    silent = Listener()
    try:
        app = make_app(f"sqlite:///{tmp_path}/t.db", instance_path=str(tmp_path / "i"),
                       REDIS_URL=f"redis://127.0.0.1:{silent.port}/0", QUOTA_REDIS_FALLBACK="database",
                       HEALTH_SYNC_SECONDS=3600)
        add_provider(app, "up", "openai", mock + "/v1", ["chat=echo-model"])
        key = make_key(app)
        c = app.test_client()
        statuses = [post(c, key, headers=ON) for _ in range(3)]
        assert [r.status_code for r in statuses] == [200] * 3
        assert upstream_calls(mock) == 3        # nothing kept, nothing failed
    finally:
        silent.close()


def test_cli_settings(gw):
    run = gw.test_cli_runner().invoke
    out = run(args=["keys", "create", "--name", "cli", "--cache-ttl", "120"])
    assert out.exit_code == 0, out.output
    secret = out.output.strip().splitlines()[-1]
    assert "cache=120s" in run(args=["keys", "list"]).output
    assert run(args=["policies", "set", "p", "--cache-ttl", "60"]).exit_code == 0
    assert "cache=60s" in run(args=["policies", "list"]).output
    from sqlalchemy import select

    from gateway.models import ApiKey, Policy
    with gw.app_context():
        assert db.session.scalar(select(ApiKey.cache_ttl).where(ApiKey.name == "cli")) == 120
        assert db.session.scalar(select(Policy.cache_ttl).where(Policy.name == "p")) == 60
    c = gw.test_client()
    post(c, secret)
    assert post(c, secret).headers["x-gateway-cache"] == "hit"
    assert run(args=["keys", "update", secret[:14], "--cache-ttl", "0"]).exit_code == 0
    assert "x-gateway-cache" not in post(c, secret).headers


def test_console_tiles_and_key_form(gw):
    from tests.console_client import Console, make_user
    key = make_key(gw)
    c = gw.test_client()
    for _ in range(4):
        post(c, key, headers=ON)        # 1 miss, 3 hits
    usage_records(gw)
    make_user(gw, "admin@example.com", "admin")
    console = Console(gw, "admin@example.com")
    page = console.get("/usage?range=24h").text
    assert 'id="cache-hit-rate">75.0%<' in page
    saved = sum(r.saved_usd for r in usage_records(gw))
    assert saved > 0 and f'id="cache-saved">{money(saved)}<' in page
    pct = page.split('id="overhead-pct">')[1].split("<")[0]
    assert " ms / " in pct and "—" not in pct
    assert " ms / " in page.split('id="upstream-pct">')[1].split("<")[0]
    assert 'name="cache_ttl"' in console.get("/keys/1/edit").text
    assert console.get("/logs").text.count(">cached</span>") == 3


def test_big_answers_are_not_kept(tmp_path, mock):
    app = make_app(f"sqlite:///{tmp_path}/t.db", instance_path=str(tmp_path / "i"), CACHE_MAX_BYTES=100)
    add_provider(app, "up", "openai", mock + "/v1", ["chat=echo-model"])
    key = make_key(app)
    c = app.test_client()
    for body in (CHAT, {**CHAT, "stream": True}):
        for _ in range(2):
            r = post(c, key, body, ON)
            assert r.status_code == 200 and r.headers["x-gateway-cache"] == "miss"
            r.get_data()
    assert upstream_calls(mock) == 4


def test_the_playground_is_never_cached(gw):
    from gateway.services.api_request import ApiRequest
    from gateway.services.accounting.keys import KeyInfo
    from gateway.services.routing import cache
    from gateway.services.routing.plan import Need, Plan
    console = KeyInfo(id=None, name="console playground", prefix="console", user_id=1, models=None,
                      expires_at=None, revoked=False, team_id=1)
    plan = Plan([], Need("chat", frozenset(), 1, None), cache_ttl=60)
    req = ApiRequest("r", "chat", CHAT, cache="on")
    assert cache.ttl_for(gw, req, console, plan) is None
    keyed = KeyInfo(id=7, name="k", prefix="p", user_id=1, models=None, expires_at=None, revoked=False)
    assert cache.ttl_for(gw, req, keyed, plan) == 60
    assert cache.ttl_for(gw, ApiRequest("r", "chat", CHAT, cache="off"), keyed, plan) is None
