"""Small quotas and budgets: a request reserves what is left and the upstream is told to stop
there (max_tokens), so a 50-token quota serves short requests and is still never overspent."""
from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import pytest
import requests
from sqlalchemy import select

from gateway.extensions import db
from gateway.models import QuotaCounter
from gateway.providers.base import Target
from gateway.services.accounting import tokens
from gateway.services.routing.plan import output_field
from tests.helpers import REDIS_URL, LiveServer, add_provider, make_app, make_key, redis_or_skip, usage_records

WORDS = " ".join(["word"] * 20)     # the mock echoes it: an answer of 21 words unless capped
ASK = {"model": "m", "messages": [{"role": "user", "content": WORDS}]}
PROMPT = tokens.estimate_prompt(ASK)    # what admission reserves for the prompt


def upstream_bodies(mock) -> list[dict]:
    """The chat bodies the mock upstream received, oldest first."""
    got = requests.get(mock + "/_mock/requests", timeout=5).json()["requests"]
    return [r["body"] for r in got if r["path"].endswith(("/chat/completions", "/messages"))]


def counter(app, scope: str = "key:1") -> QuotaCounter:
    with app.app_context():
        row = db.session.scalar(select(QuotaCounter).where(QuotaCounter.scope == scope))
        db.session.expunge_all()
        return row


def post(client, key, body=None):
    return client.post("/v1/chat/completions", json=body or ASK, headers={"Authorization": f"Bearer {key}"})


def test_fifty_token_quota_without_max_tokens_is_served_within_it(app, mock):
    add_provider(app, "up", "openai", mock + "/v1", ["m=echo"])
    key = make_key(app, token_quota=50)
    client = app.test_client()
    r = post(client, key)
    assert r.status_code == 200, r.json
    allowed = 50 - PROMPT
    [sent] = upstream_bodies(mock)
    assert sent["max_tokens"] == allowed and "max_completion_tokens" not in sent
    assert r.headers["x-gateway-max-tokens"] == str(allowed)
    assert r.json["choices"][0]["finish_reason"] == "length"   # cut where the quota ends
    r = post(client, key)
    assert r.status_code == 429 and r.json["error"]["type"] == "insufficient_quota"
    assert "at least" in r.json["error"]["message"]
    [served] = [u for u in usage_records(app) if u.status == 200]
    c = counter(app)
    assert c.used_tokens == served.total_tokens <= 50 and c.reserved_tokens == 0


def test_short_requests_use_up_a_small_quota(app, mock):
    add_provider(app, "up", "openai", mock + "/v1", ["m=echo"])
    key = make_key(app, token_quota=50)
    client = app.test_client()
    hello = {"model": "m", "messages": [{"role": "user", "content": "hello there friend"}]}
    statuses = [post(client, key, hello).status_code for _ in range(8)]
    assert statuses[:4] == [200] * 4 and statuses[-1] == 429
    assert counter(app).used_tokens <= 50


def test_the_cap_goes_in_the_field_the_request_uses(app, mock):
    add_provider(app, "up", "openai", mock + "/v1", ["m=echo"])
    key = make_key(app, token_quota=50)
    r = post(app.test_client(), key, dict(ASK, max_completion_tokens=500))
    assert r.status_code == 200
    [sent] = upstream_bodies(mock)
    assert sent["max_completion_tokens"] == 50 - PROMPT and "max_tokens" not in sent


def test_a_request_asking_less_than_is_left_is_sent_as_it_is(app, mock):
    add_provider(app, "up", "openai", mock + "/v1", ["m=echo"])
    key = make_key(app, token_quota=1000)
    r = post(app.test_client(), key, dict(ASK, max_tokens=5))
    assert r.status_code == 200 and "x-gateway-max-tokens" not in r.headers
    [sent] = upstream_bodies(mock)
    assert sent["max_tokens"] == 5


def test_anthropic_gets_the_cap_instead_of_its_default(app, mock):
    # The Anthropic adapter sends max_tokens=4096 when a request sets none.
    add_provider(app, "claude", "anthropic", mock + "/v1", ["m=claude-x"])
    key = make_key(app, token_quota=50)
    assert post(app.test_client(), key).status_code == 200
    [sent] = upstream_bodies(mock)
    assert sent["max_tokens"] == 50 - PROMPT


def test_a_stream_cannot_outrun_a_small_quota(app, mock):
    add_provider(app, "up", "openai", mock + "/v1", ["m=echo"])
    key = make_key(app, token_quota=50)
    r = post(app.test_client(), key, dict(ASK, stream=True))
    assert r.status_code == 200 and b"data: [DONE]" in r.data
    [sent] = upstream_bodies(mock)
    assert sent["max_tokens"] == 50 - PROMPT and sent["stream"] is True
    c = counter(app)
    assert 0 < c.used_tokens <= 50 and c.reserved_tokens == 0


def test_budget_allowance_is_capped_through_the_price(app, mock):
    # demo-chat is priced $0.0005 in and $0.0015 out per 1K tokens: a $0.00004 budget has room
    # for the prompt and about 16 answer tokens, not for the 4,096 reserved by default.
    add_provider(app, "up", "openai", mock + "/v1", ["m=demo-chat"])
    budget = 0.00004
    key = make_key(app, budget_usd=budget)
    client = app.test_client()
    r = post(client, key)
    assert r.status_code == 200, r.json
    [sent] = upstream_bodies(mock)
    cap = sent["max_tokens"]
    assert 1 <= cap < 21 and (PROMPT * 0.0005 + cap * 0.0015) / 1000 <= budget + 1e-12
    assert (PROMPT * 0.0005 + (cap + 2) * 0.0015) / 1000 > budget     # the most that fits, within rounding
    assert post(client, key).status_code == 429
    c = counter(app)
    assert 0 < c.used_usd <= budget and c.reserved_usd == pytest.approx(0, abs=1e-12)


def test_rate_limits_refuse_rather_than_shorten(app, mock):
    add_provider(app, "up", "openai", mock + "/v1", ["m=echo"])
    key = make_key(app, tpm=50)     # a per-minute limit passes with time: no shortened answers
    r = post(app.test_client(), key)
    assert r.status_code == 429 and r.json["error"]["type"] == "rate_limit_exceeded"
    assert upstream_bodies(mock) == []


@pytest.fixture(params=["database", "redis"])
def counters_app(request, app):
    """The app with its counters in the database, or in Redis (a namespace of its own)."""
    if request.param == "database":
        yield app
        return
    client = redis_or_skip()
    prefix = f"gw:test:{uuid.uuid4().hex[:8]}:"
    app = make_app(app.config["SQLALCHEMY_DATABASE_URI"], instance_path=app.instance_path + "-redis",
                   REDIS_URL=REDIS_URL, QUOTA_REDIS_PREFIX=prefix, HEALTH_SYNC_SECONDS=3600)
    app.redis_prefix = prefix
    yield app
    for k in client.scan_iter(match=prefix + "*"):
        client.delete(k)


def test_concurrent_small_quota_requests_never_overspend(counters_app, mock):
    app = counters_app
    add_provider(app, "up", "openai", mock + "/v1", ["m=echo"])
    quota = 300
    key = make_key(app, token_quota=quota)
    server = LiveServer(app)
    try:
        session = requests.Session()
        session.mount("http://", requests.adapters.HTTPAdapter(pool_maxsize=16))

        def one(_):
            r = session.post(server.url + "/v1/chat/completions", json=ASK, timeout=30,
                             headers={"Authorization": f"Bearer {key}"})
            return r.status_code, (r.json()["usage"]["total_tokens"] if r.status_code == 200 else 0)
        with ThreadPoolExecutor(16) as pool:
            results = list(pool.map(one, range(48)))
    finally:
        server.stop()
    assert {s for s, _ in results} <= {200, 429}
    spent = sum(t for _, t in results)
    assert spent <= quota and sum(1 for s, _ in results if s == 200) >= 2
    assert all(1 <= b["max_tokens"] <= quota - PROMPT for b in upstream_bodies(mock))
    records = usage_records(app)
    assert len(records) == 48 and sum(u.total_tokens for u in records if u.status == 200) == spent
    if getattr(app, "redis_prefix", None):
        r = redis_or_skip()
        [ckey] = list(r.scan_iter(match=app.redis_prefix + "c:key:1@*"))
        h = {k.decode(): v.decode() for k, v in r.hgetall(ckey).items()}
        assert (int(h["ut"]), int(h["rt"]), int(h["inf"])) == (spent, 0, 0)
    else:
        c = counter(app)
        assert (c.used_tokens, c.reserved_tokens, c.inflight) == (spent, 0, 0)


@dataclass(frozen=True)
class _Route:
    kind: str
    target: Target


def _route(kind: str, url: str) -> _Route:
    return _Route(kind, Target(kind=kind, base_url=url, api_key="", model="x"))


def test_output_field_suits_every_deployment_tried():
    openai = _route("openai", "https://api.openai.com/v1")
    compatible = _route("openai", "https://api.deepseek.com/v1")
    claude = _route("anthropic", "https://api.anthropic.com/v1")
    azure = _route("azure", "https://r.openai.azure.com")
    assert output_field({"max_tokens": 5}, [openai]) == "max_tokens"
    assert output_field({"max_completion_tokens": 5}, [compatible]) == "max_completion_tokens"
    assert output_field({}, [openai, claude]) == "max_completion_tokens"   # reasoning models take only this
    assert output_field({}, [openai, compatible]) == "max_tokens"
    assert output_field({}, [azure]) == "max_tokens"
