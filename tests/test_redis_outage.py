"""Redis refused or silent: limited keys keep their limits (counted in the database, or refused
with a 503 under QUOTA_REDIS_FALLBACK=refuse), never a 500, and a request never waits on Redis
for more than one short timeout: after a failure the breaker skips Redis. Then Redis comes back
and catches up with what the database counted meanwhile."""
from __future__ import annotations

import uuid

import pytest
from sqlalchemy import select

from gateway.extensions import db
from gateway.models import ApiKey, QuotaCounter, Reservation as LedgerRow
from gateway.redis_link import link
from gateway.services.accounting import keys, quota
from gateway.services.accounting.usage import UsageEntry
from gateway.services.admin import catalog_admin
from gateway.services.api_request import ApiRequest
from gateway.services.routing.health import health
from gateway.services.routing.plan import plan as plan_for
from tests.helpers import (REDIS_URL, Listener, add_provider, free_port, make_app, make_key, redis_or_skip,
                           usage_records)

CHAT = {"model": "demo-chat", "max_tokens": 20, "messages": [{"role": "user", "content": "hello there friend"}]}


def silent_redis() -> tuple[Listener, str]:
    """A listener on 127.0.0.1 that accepts and never answers (every read times out), its URL."""
    listener = Listener()
    return listener, f"redis://127.0.0.1:{listener.port}/0"


@pytest.fixture(params=["refused", "silent"])
def down_url(request):
    if request.param == "refused":
        yield f"redis://127.0.0.1:{free_port()}/0"
        return
    silent, url = silent_redis()
    yield url
    silent.close()


def gateway_on(tmp_path, redis_url: str, **config):
    app = make_app(f"sqlite:///{tmp_path}/t.db", instance_path=str(tmp_path / "i"), REDIS_URL=redis_url,
                   QUOTA_REDIS_PREFIX=f"gw:test:{uuid.uuid4().hex[:8]}:", HEALTH_SYNC_SECONDS=3600, **config)
    add_provider(app, "demo", "mock", None, ["demo-chat"])
    return app


def post(client, key, body=None):
    return client.post("/v1/chat/completions", json=body or CHAT, headers={"Authorization": f"Bearer {key}"})


def test_timeouts_are_short_and_not_retried(tmp_path):
    app = gateway_on(tmp_path, REDIS_URL)
    kw = link(app).client().connection_pool.connection_kwargs
    assert kw["socket_connect_timeout"] == 0.25 and kw["socket_timeout"] == 0.5
    assert kw["retry"].get_retries() == 0


def test_redis_down_falls_back_to_the_database_counters(tmp_path, down_url):
    app = gateway_on(tmp_path, down_url)
    key = make_key(app, token_quota=100)
    client = app.test_client()
    statuses = [post(client, key).status_code for _ in range(12)]
    # The same answers as with Redis up: each reserves 32, uses 10, and the quota holds.
    assert statuses[:6] == [200] * 6 and statuses[-1] == 429 and set(statuses) == {200, 429}
    assert link(app).attempts == 1 and link(app).state == "open"    # one timeout, then skipped
    served = [u for u in usage_records(app) if u.status == 200]
    with app.app_context():
        c = db.session.scalar(select(QuotaCounter).where(QuotaCounter.scope == "key:1"))
        assert c.used_tokens == sum(u.total_tokens for u in served) <= 100
        assert (c.reserved_tokens, c.inflight) == (0, 0)


def test_redis_down_with_refuse_policy_is_a_fast_503(tmp_path, down_url):
    app = gateway_on(tmp_path, down_url, QUOTA_REDIS_FALLBACK="refuse")
    key = make_key(app, token_quota=100)
    unlimited = make_key(app, name="free")
    client = app.test_client()
    for _ in range(5):
        r = post(client, key)
        assert r.status_code == 503
        assert set(r.json["error"]) == {"message", "type", "param", "code"}
        assert r.json["error"]["type"] == "service_unavailable"
        assert r.json["error"]["code"] == "quota_store_unavailable"
        assert 1 <= int(r.headers["retry-after"]) <= 5
    assert link(app).attempts == 1 and link(app).state == "open"
    assert post(client, unlimited).status_code == 200       # nothing to count: Redis not needed
    records = usage_records(app)
    assert [u.status for u in records] == [503] * 5 + [200]


def test_health_and_invalidation_skip_a_silent_redis(tmp_path):
    silent, silent_url = silent_redis()
    try:
        app = gateway_on(tmp_path, silent_url)
        with app.app_context():
            catalog_admin.save_deployment("capped", "demo", "echo", rpm_limit=1000)
        key = make_key(app)
        client = app.test_client()
        body = dict(CHAT, model="capped")
        # The first capped request pays one read timeout; the next ones and a key change that
        # publishes an invalidation do not ask Redis at all while the breaker is open.
        assert [post(client, key, body).status_code for _ in range(4)] == [200] * 4
        with app.app_context():
            keys.update_key(db.session.scalar(select(ApiKey)), name="renamed")
            assert health(app).sync() is False
        assert link(app).attempts == 1 and link(app).state == "open"
    finally:
        silent.close()


@pytest.fixture
def shared(tmp_path):
    """A gateway on the real Redis, and a way to cut it off and let it back."""
    r = redis_or_skip()
    app = gateway_on(tmp_path, REDIS_URL, REDIS_BREAKER_SECONDS=3600)
    lk = link(app)
    real = lk.client()

    class Outage:
        def start(self):
            import redis
            lk._client = redis.Redis.from_url(f"redis://127.0.0.1:{free_port()}/0")

        def end(self):
            lk._client = real
            lk.open_until = 1e-9        # the breaker's cooldown is over: the next call probes

    yield app, r, Outage()
    for k in r.scan_iter(match=app.config["QUOTA_REDIS_PREFIX"] + "*"):
        r.delete(k)


def _hash(r, app, scope: str) -> dict:
    [k] = list(r.scan_iter(match=f"{app.config['QUOTA_REDIS_PREFIX']}c:{scope}@*"))
    return {f.decode(): v.decode() for f, v in r.hgetall(k).items()}


def test_redis_catches_up_with_what_the_database_counted(shared):
    app, r, outage = shared
    key = make_key(app, token_quota=1000)
    client = app.test_client()
    assert post(client, key).status_code == 200           # counted in Redis
    with app.app_context():
        info = keys.authenticate(key)
        req = ApiRequest("before-outage", "chat", dict(CHAT))
        held = quota.admit(req, info, plan_for(req, info))   # in flight when Redis goes away
    assert held.reservation.store == "redis" and int(_hash(r, app, "key:1")["rt"]) == 32
    outage.start()
    assert [post(client, key).status_code for _ in range(3)] == [200] * 3    # counted in the database
    quota.settle(app, held, UsageEntry(request_id="before-outage", endpoint="chat", status=200,
                                       total_tokens=10, prompt_tokens=10))
    assert link(app).state == "open"
    outage.end()
    assert post(client, key).status_code == 200           # catches up, then counts in Redis again
    served = sum(u.total_tokens for u in usage_records(app) if u.status == 200) + 10
    h = _hash(r, app, "key:1")
    with app.app_context():
        ledger = db.session.scalar(select(QuotaCounter).where(QuotaCounter.scope == "key:1"))
        open_rows = db.session.scalars(select(LedgerRow).where(LedgerRow.settled_at.is_(None))).all()
    # Redis knows every token spent, the outage's too; nothing is held any more, anywhere.
    assert int(h["ut"]) == ledger.used_tokens == served
    assert (int(h["rt"]), int(h["inf"]), ledger.reserved_tokens, open_rows) == (0, 0, 0, [])
    assert link(app).state == "closed"


def test_the_breaker_lets_one_probe_through_after_its_cooldown():
    from gateway.redis_link import RedisDown, RedisLink
    lk = RedisLink(f"redis://127.0.0.1:{free_port()}/0", cooldown=3600)
    calls = []

    def ping(r):
        calls.append(1)
        return r.ping()
    for _ in range(3):
        with pytest.raises(RedisDown):
            lk.run(ping)
    assert (len(calls), lk.state) == (1, "open")        # asked once, then skipped
    lk.open_until = 1e-9                                  # the cooldown is over
    assert lk.state == "half_open"
    lk._client = type("Up", (), {"ping": lambda self: True})()
    assert lk.run(ping) is True and lk.state == "closed" and len(calls) == 2
