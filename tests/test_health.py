"""Rolling statistics, circuit breaker states, 429 cool-down and caps; shared through the
real Redis at 127.0.0.1:6379 between two trackers standing in for two workers."""
from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

import pytest

from gateway.config import Defaults
from gateway.services.routing.health import Health, Sample
from tests.helpers import REDIS_URL, redis_or_skip



@dataclass(frozen=True)
class R:
    deployment_id: int
    rpm_limit: int | None = None
    tpm_limit: int | None = None


class FakeApp:
    def __init__(self, **config):
        defaults = {k: getattr(Defaults, k) for k in dir(Defaults) if k.isupper()}
        self.config = {**defaults, "UPSTREAM_FIRST_BYTE_TIMEOUT": 5, **config}
        self.extensions = {}


def tracker(**config) -> Health:
    return Health(FakeApp(**config))


@pytest.fixture
def shared():
    """Two trackers sharing one Redis namespace (as two workers would); cleaned up after."""
    client = redis_or_skip()
    prefix = f"gw:test:{uuid.uuid4().hex[:8]}:"
    cfg = dict(REDIS_URL=REDIS_URL, HEALTH_REDIS_PREFIX=prefix, HEALTH_SYNC_SECONDS=3600)
    yield tracker(**cfg), tracker(**cfg)
    keys = list(client.scan_iter(prefix + "*"))
    if keys:
        client.delete(*keys)


def test_stats_percentiles_and_rates():
    h = tracker()
    r = R(1)
    for ms in range(1, 101):
        h.success(r, float(ms), ttft=ms / 2, out_tokens=10)
    h.failure(r, 5.0, status=500)
    h.failure(r, 5.0, status=429, retry_after=0)
    st = h.stats(1)
    assert st.count == 102 and st.p50_ms == 51 and st.p95_ms == 96 and st.ttft_p95_ms == 48
    assert st.error_rate == pytest.approx(1 / 102, abs=1e-3) and st.rate_429 == pytest.approx(1 / 102, abs=1e-3)
    assert st.tokens_per_s > 0


def test_old_samples_leave_the_window():
    h = tracker(HEALTH_WINDOW_SECONDS=60)
    h._dep(1).samples.append(Sample(time.time() - 120, 10, 10, None, False))
    assert h.stats(1).count == 0


def test_circuit_opens_on_consecutive_failures_then_half_opens():
    h = tracker(CIRCUIT_FAILURES=3, CIRCUIT_COOLDOWN_SECONDS=0.2)
    r = R(1)
    for _ in range(2):
        h.failure(r, 1, status=502)
    assert h.available(r) == "ok"
    h.failure(r, 1, status=502)
    assert h.available(r) == "open" and not h.begin(r, 0)
    time.sleep(0.25)
    assert h.available(r) == "probe"
    assert h.begin(r, 0)                    # one probe goes ...
    assert h.available(r) == "busy" and not h.begin(r, 0)     # ... and only one
    h.failure(r, 1, status=502)             # it failed: open again, for longer
    assert h.available(r) == "open" and h._dep(1).open_until - time.time() > 0.3
    h._dep(1).open_until = time.time() - 0.01
    assert h.begin(r, 0)
    h.success(r, 5)
    assert h.available(r) == "ok" and h.state(1) == "closed"


def test_circuit_opens_on_error_rate():
    h = tracker(CIRCUIT_FAILURES=100, CIRCUIT_MIN_REQUESTS=10, CIRCUIT_ERROR_RATE=0.5)
    r = R(1)
    for i in range(10):
        (h.failure(r, 1, status=500) if i % 2 else h.success(r, 1))
    assert h.available(r) == "open"


def test_429_cools_down_without_opening_the_circuit():
    h = tracker(CIRCUIT_FAILURES=1)
    r = R(1)
    h.failure(r, 1, status=429, retry_after=0.2)
    assert h.available(r) == "cooling" and h.state(1) == "closed"
    time.sleep(0.25)
    assert h.available(r) == "ok"


def test_rpm_cap_in_memory():
    h = tracker()
    r = R(1, rpm_limit=2)
    assert h.begin(r, 10) and h.begin(r, 10) and not h.begin(r, 10)
    assert h.over_cap(r, 10)


def test_tpm_cap_counts_served_tokens():
    h = tracker()
    r = R(1, tpm_limit=100)
    assert h.begin(r, 50)
    h.success(r, 5, total_tokens=90)
    assert not h.begin(r, 50) and h.over_cap(r, 50)


def test_stats_are_shared_through_redis(shared):
    w1, w2 = shared
    r = R(7)
    for ms in (10, 20, 30):
        w1.success(r, ms)
    w2._dep(7)         # a worker syncs the deployments it has routed to
    assert w1.sync() and w2.sync()
    assert w2.stats(7).count == 3 and w2.stats(7).p95_ms == 30
    w2.success(r, 40)
    assert w2.sync() and w1.sync()
    assert w1.stats(7).count == 4


def test_circuit_state_is_shared_through_redis(shared):
    w1, w2 = shared
    r = R(8)
    w2._dep(8)
    w1.app.config.update(CIRCUIT_FAILURES=2, CIRCUIT_COOLDOWN_SECONDS=30)
    w1.failure(r, 1, status=500)
    w1.failure(r, 1, status=500)
    assert w1.available(r) == "open"
    assert w1.sync() and w2.sync()
    assert w2.available(r) == "open"
    w1.failure(R(9), 1, status=429, retry_after=30)
    w2._dep(9)
    assert w1.sync() and w2.sync()
    assert w2.available(R(9)) == "cooling"


def test_rpm_cap_is_shared_through_redis(shared):
    w1, w2 = shared
    r = R(11, rpm_limit=3)
    got = [w.begin(r, 1) for w in (w1, w2, w1, w2, w1)]
    assert got == [True, True, True, False, False]


def test_redis_down_degrades_to_memory(caplog):
    h = tracker(REDIS_URL="redis://127.0.0.1:1/0", HEALTH_SYNC_SECONDS=3600)
    r = R(1, rpm_limit=1)
    h.success(r, 5)
    assert h.sync() is False and h.sync() is False
    assert h.begin(r, 1) and not h.begin(r, 1)      # the cap still holds, per worker
    assert h.stats(1).count == 1
    assert sum("Redis unreachable" in m for m in caplog.messages) == 1      # logged once


def test_two_workers_share_an_open_circuit(tmp_path):
    """Two app instances (as two gunicorn workers) on one database and one Redis."""
    client = redis_or_skip()
    from gateway import create_app, mock_upstream
    from gateway.services.admin import catalog_admin
    from gateway.services.routing.health import health
    from tests.helpers import make_app, make_key

    prefix = f"gw:test:{uuid.uuid4().hex[:8]}:"
    cfg = dict(REDIS_URL=REDIS_URL, HEALTH_REDIS_PREFIX=prefix, HEALTH_SYNC_SECONDS=3600,
               CIRCUIT_FAILURES=2, MAX_ATTEMPTS=1)
    url = f"sqlite:///{tmp_path}/t.db"
    w1 = make_app(url, instance_path=str(tmp_path / "i1"), **cfg)
    w2 = create_app(instance_path=str(tmp_path / "i2"), overrides=dict(
        w1.config, SQLALCHEMY_DATABASE_URI=url))
    with w1.app_context():
        catalog_admin.save_provider("up", "mock", models=["m=echo"], api_key="sk-mock-123456")
    key = make_key(w1)
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    auth = {"Authorization": f"Bearer {key}"}
    try:
        assert w2.test_client().post("/v1/chat/completions", json=body, headers=auth).status_code == 200
        mock_upstream.app.queue_faults({"faults": ["fail=500", "fail=500"]})
        c1 = w1.test_client()
        assert [c1.post("/v1/chat/completions", json=body, headers=auth).status_code for _ in range(2)] == [502, 502]
        assert health(w1).sync() and health(w2).sync()
        r = w2.test_client().post("/v1/chat/completions", json=body, headers=auth)
        assert r.status_code == 503 and r.json["error"]["code"] == "no_healthy_deployment"
    finally:
        mock_upstream.app.clear_faults({})
        keys = list(client.scan_iter(prefix + "*"))
        if keys:
            client.delete(*keys)
        for app in (w1, w2):
            with app.app_context():
                from gateway.services.accounting.usage import recorder
                recorder(app).drain()
