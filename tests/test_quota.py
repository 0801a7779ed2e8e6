"""Quotas, budgets and rate limits: reserve the worst case, settle the real usage, reset on time."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import pytest
from sqlalchemy import select

from gateway.errors import QuotaExceeded, RateLimited
from gateway.extensions import db
from gateway.models import ApiKey, QuotaCounter, Reservation
from gateway.services.accounting import keys, quota, teams
from gateway.services.api_request import ApiRequest
from gateway.services.routing.plan import plan as plan_for
from gateway.services.accounting.usage import UsageEntry
from tests.helpers import add_provider, make_key, usage_records

HELLO = [{"role": "user", "content": "hello there friend"}]
CHAT = {"model": "demo-chat", "max_tokens": 20, "messages": HELLO}


@pytest.fixture
def demo(app):
    add_provider(app, "demo", "mock", None, ["demo-chat", "fail-500"])
    return app


def post(client, key, body=None, **headers):
    return client.post("/v1/chat/completions", json=body or CHAT,
                       headers={"Authorization": f"Bearer {key}", **headers})


def counters(app) -> dict[str, QuotaCounter]:
    with app.app_context():
        rows = db.session.scalars(select(QuotaCounter)).all()
        db.session.expunge_all()
        return {r.scope: r for r in rows}


def key_info(app, secret: str) -> keys.KeyInfo:
    with app.app_context():
        keys.cache().clear()
        return keys.authenticate(secret)


@dataclass
class Call:
    """A request as admit() and settle() see it: parsed, by a key, and once admitted its admission."""
    req: ApiRequest
    key: keys.KeyInfo
    admission: quota.Admission | None = None

    @property
    def reservation(self):
        return self.admission.reservation


def call_for(info, body=None, rid="r1", tags=None) -> Call:
    return Call(ApiRequest(rid, "chat", dict(body or CHAT), tags or {}), info)


def admit(call: Call, now=None) -> quota.Admission:
    call.admission = quota.admit(call.req, call.key, plan_for(call.req, call.key), now=now)
    return call.admission


def estimate(call: Call) -> tuple[int, float]:
    return quota.estimate(call.req, plan_for(call.req, call.key))


def finish(app, call, tokens=10, status=200, cost=0.0):
    quota.settle(app, call.admission, UsageEntry(request_id=call.req.request_id, endpoint="chat", status=status,
                                                 total_tokens=tokens, prompt_tokens=tokens, cost_usd=cost))


def test_unlimited_key_reserves_nothing(demo, client):
    key = make_key(demo)
    r = post(client, key)
    assert r.status_code == 200
    assert not any(h.startswith("x-ratelimit") for h in r.headers.keys())
    assert counters(demo) == {}
    with demo.app_context():
        assert db.session.scalar(select(Reservation)) is None


def test_token_quota_is_enforced_and_settled_to_real_usage(demo, client):
    key = make_key(demo, token_quota=100)
    statuses = [post(client, key).status_code for _ in range(12)]
    # each answer is 10 tokens but reserves 32 (12 estimated prompt + 20 max_tokens)
    assert statuses[:6] == [200] * 6 and statuses[-1] == 429
    r = post(client, key)
    assert r.json["error"]["type"] == "insufficient_quota" and r.json["error"]["code"] == "insufficient_quota"
    served = [u for u in usage_records(demo) if u.status == 200]
    c = counters(demo)["key:1"]
    assert c.used_tokens == sum(u.total_tokens for u in served) <= 100
    assert c.reserved_tokens == 0 and c.inflight == 0


def test_headers_like_openai(demo, client):
    key = make_key(demo, token_quota=1000, rpm=10, tpm=500)
    r = post(client, key)
    h = r.headers
    assert h["x-ratelimit-limit-requests"] == "10" and h["x-ratelimit-remaining-requests"] == "9"
    assert h["x-ratelimit-limit-tokens"] == "500" and int(h["x-ratelimit-remaining-tokens"]) == 500 - 32
    assert h["x-ratelimit-reset-requests"].endswith("s") and h["x-ratelimit-reset-tokens"].endswith("s")


def test_failure_releases_the_reservation(demo, client):
    key = make_key(demo, token_quota=100)
    r = post(client, key, dict(CHAT, model="fail-500"))
    assert r.status_code >= 500
    c = counters(demo)["key:1"]
    assert (c.used_tokens, c.reserved_tokens, c.inflight) == (0, 0, 0)


def test_settle_is_idempotent(demo):
    secret = make_key(demo, token_quota=100)
    info = key_info(demo, secret)
    with demo.test_request_context():
        call = call_for(info)
        admit(call)
        finish(demo, call, tokens=10)
        call.reservation.settled = False     # a second settle of the same request id
        finish(demo, call, tokens=10)
    c = counters(demo)["key:1"]
    assert (c.used_tokens, c.reserved_tokens, c.inflight) == (10, 0, 0)


def test_stream_cut_by_client_is_charged_for_what_streamed(demo, client):
    key = make_key(demo, token_quota=1000)
    r = client.post("/v1/chat/completions", json=dict(CHAT, stream=True, max_tokens=50,
                    messages=[{"role": "user", "content": " ".join(["word"] * 30)}]),
                    headers={"Authorization": f"Bearer {key}"}, buffered=False)
    it = r.response
    next(iter(it))
    r.close()       # the client leaves after the first chunk
    rec = usage_records(demo)[-1]
    c = counters(demo)["key:1"]
    assert rec.status == 499 and c.used_tokens == rec.total_tokens > 0 and c.reserved_tokens == 0


def test_mid_stream_exhaustion_finishes_then_refuses(demo, client):
    demo.config["QUOTA_DEFAULT_MAX_TOKENS"] = 60
    key = make_key(demo, token_quota=100)
    body = {"model": "demo-chat", "stream": True, "messages": [{"role": "user", "content": " ".join(["w"] * 60)}]}
    r = post(client, key, body)
    assert r.status_code == 200 and b"[DONE]" in r.data      # reserved 97, used 124: it still finishes
    assert counters(demo)["key:1"].used_tokens > 100
    r = post(client, key)
    assert r.status_code == 429 and r.json["error"]["type"] == "insufficient_quota"


def test_period_resets_in_the_keys_time_zone(demo):
    secret = make_key(demo, token_quota=40, quota_period="day", quota_tz="America/New_York")
    info = key_info(demo, secret)
    evening = datetime(2025, 3, 10, 3, 30)      # 23:30 in New York on the 9th
    with demo.test_request_context():
        admit(call_for(info, rid="a"), now=evening)
        with pytest.raises(QuotaExceeded):
            admit(call_for(info, rid="b"), now=evening + timedelta(minutes=20))
        admit(call_for(info, rid="c"), now=evening + timedelta(minutes=31))   # past midnight there


def test_week_and_month_periods(demo):
    from gateway.services.accounting import periods
    start, end = periods.bounds("week", "UTC", datetime(2025, 1, 1, 12))      # a Wednesday
    assert (start, end) == (datetime(2024, 12, 30), datetime(2025, 1, 6))
    start, end = periods.bounds("month", "Europe/Paris", datetime(2025, 1, 31, 23, 30))
    assert (start, end) == (datetime(2025, 1, 31, 23), datetime(2025, 2, 28, 23))
    assert periods.bounds("total", "UTC", datetime(2025, 1, 1)) == (periods.EPOCH, None)


def test_rpm_limit_and_window_reset(demo):
    secret = make_key(demo, rpm=2)
    info = key_info(demo, secret)
    t = datetime(2025, 5, 1, 12, 0, 10)
    with demo.test_request_context():
        for rid in ("a", "b"):
            c = call_for(info, rid=rid)
            admit(c, now=t)
            finish(demo, c)
        with pytest.raises(RateLimited) as e:
            admit(call_for(info, rid="c"), now=t + timedelta(seconds=30))
        assert e.value.type == "rate_limit_exceeded" and e.value.headers["retry-after"] == "20"
        admit(call_for(info, rid="d"), now=t + timedelta(seconds=50))


def test_tpm_limit(demo):
    secret = make_key(demo, tpm=100)
    info = key_info(demo, secret)
    t = datetime(2025, 5, 1, 12, 0, 0)
    with demo.test_request_context():
        c = call_for(info, dict(CHAT, max_tokens=60), rid="a")
        admit(c, now=t)
        with pytest.raises(RateLimited):      # 72 reserved + 72 more > 100
            admit(call_for(info, dict(CHAT, max_tokens=60), rid="b"), now=t)
        finish(demo, c, tokens=20)            # settled to 20: room again
        admit(call_for(info, dict(CHAT, max_tokens=60), rid="c"), now=t)


def test_parallel_limit(demo):
    secret = make_key(demo, max_parallel=2)
    info = key_info(demo, secret)
    with demo.test_request_context():
        a, b = call_for(info, rid="a"), call_for(info, rid="b")
        admit(a)
        admit(b)
        with pytest.raises(RateLimited) as e:
            admit(call_for(info, rid="c"))
        assert "parallel" in e.value.message
        finish(demo, a, status=502, tokens=0)
        admit(call_for(info, rid="d"))


def test_team_budget_is_a_hard_cap(demo, client):
    with demo.app_context():
        team = teams.save_team("search", budget_usd=0.0001, budget_period="month")
        tid = team.id
    key = make_key(demo, team_id=tid)
    statuses = [post(client, key).status_code for _ in range(12)]
    assert 200 in statuses and statuses[-1] == 429
    c = counters(demo)[f"team:{tid}"]
    assert c.used_usd <= 0.0001 + 1e-12 and c.reserved_usd == pytest.approx(0, abs=1e-12)
    assert "team budget" in post(client, key).json["error"]["message"]


def test_tag_budget(demo, client):
    with demo.app_context():
        teams.save_tag_budget("feature", "search", 0.00005)
    key = make_key(demo)
    tagged = [post(client, key, **{"x-gateway-tags": "feature=search"}).status_code for _ in range(8)]
    assert tagged[0] == 200 and tagged[-1] == 429
    assert post(client, key, **{"x-gateway-tags": "feature=chat"}).status_code == 200


def test_plan_defaults_apply_unless_the_key_overrides(demo):
    with demo.app_context():
        plan = teams.save_plan("free", token_quota=1000, rpm=5, models=["demo-chat"])
        pid = plan.id
    info = key_info(demo, make_key(demo, plan_id=pid))
    assert (info.token_quota, info.rpm, info.models) == (1000, 5, frozenset({"demo-chat"}))
    info = key_info(demo, make_key(demo, plan_id=pid, rpm=50))
    assert info.rpm == 50 and info.token_quota == 1000


def test_stale_reservations_are_released(demo):
    secret = make_key(demo, token_quota=100)
    info = key_info(demo, secret)
    t = datetime(2025, 5, 1, 12)
    with demo.test_request_context():
        admit(call_for(info, rid="lost"), now=t)    # its process "died": never settled
        assert counters(demo)["key:1"].reserved_tokens == 32
        assert quota.release_stale(demo, now=t + timedelta(hours=2)) == 1
    c = counters(demo)["key:1"]
    assert (c.reserved_tokens, c.inflight, c.used_tokens) == (0, 0, 0)


def test_update_key_takes_effect_without_reissuing(demo, client):
    key = make_key(demo)
    assert post(client, key).status_code == 200
    with demo.app_context():
        row = db.session.scalar(select(ApiKey))
        keys.update_key(row, token_quota=5)
    assert post(client, key).status_code == 429


def test_policy_requests_reserve_at_the_dearest_candidate_price(demo):
    # `policy:...` names no model; the worst case is still priced, so budgets hold under policies.
    with demo.app_context():
        info = keys.authenticate(make_key(demo, budget_usd=5.0))
        _, usd_model = estimate(call_for(info))
        _, usd_policy = estimate(call_for(info, dict(CHAT, model="policy:cost-optimized")))
    assert usd_model > 0 and usd_policy == pytest.approx(usd_model)
