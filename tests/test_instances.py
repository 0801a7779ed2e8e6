"""Several gateway instances over one Postgres and one Redis, behind a load balancer without
sticky sessions: two gunicorn processes on their own ports, started together on an empty
database. Both come up (they take turns migrating and seeding); a key's token quota holds
across both under concurrent load; a key revoked with the CLI is refused by both within a
second; a circuit one opened is respected by the other. Bounded: 60 requests, 16 at a time."""
from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import uuid

import pytest
import requests
from sqlalchemy import select

from gateway import create_app
from gateway.database import schema_lock
from gateway.extensions import db
from gateway.models import QuotaCounter, User
from gateway.services.routing.catalog import Route
from gateway.services.routing.health import Health
from tests.helpers import (REDIS_URL, ROOT, TEST_CONFIG, Gunicorn, add_provider, check_quota, fire, make_key,
                           postgres_database, records_when_written, redis_or_skip)
from tests.test_monitoring import samples, value

N, PARALLEL, QUOTA = 60, 16, 300
BODY = {"model": "echo", "max_tokens": 20, "messages": [{"role": "user", "content": "hello there friend"}]}


class Pair:
    """Two instances and the test's own app, all on one database and one Redis key prefix."""

    def __init__(self, db_url: str, tmp, prefix: str):
        self.db_url, self.prefix = db_url, prefix
        self.env = {"REDIS_URL": REDIS_URL, "GATEWAY_QUOTA_REDIS_PREFIX": prefix + "q:",
                    "GATEWAY_HEALTH_REDIS_PREFIX": prefix + "h:", "GATEWAY_HEALTH_SYNC_SECONDS": "0.2",
                    "GATEWAY_KEY_CACHE_SECONDS": "60",      # revocations must travel, not expire
                    "GATEWAY_CATALOG_CACHE_SECONDS": "0.5", "GATEWAY_CIRCUIT_FAILURES": "3",
                    "GATEWAY_MAX_ATTEMPTS": "1", "GATEWAY_ADMIN_EMAIL": "ops@example.com",
                    "GATEWAY_ADMIN_PASSWORD": "two-instances-pass",
                    "GATEWAY_ENCRYPTION_KEY": "qVq6OeHqZLDiWLbNkvhnUVaDfyPBnzdOYd7nD7gUdzA="}
        # both at once, on an empty database: each runs `gateway bootstrap` before its workers
        self.servers = [Gunicorn(None, db_url, 1, tmp, bootstrap=True, wait=False, **self.env) for _ in range(2)]
        try:
            for s in self.servers:
                s.wait()
        except RuntimeError:
            for s in self.servers:
                if not s.log.closed:
                    s.stop()
            raise
        self.app = create_app(instance_path=str(tmp / "test-app"), overrides={
            **TEST_CONFIG, "SQLALCHEMY_DATABASE_URI": db_url, "REDIS_URL": REDIS_URL,
            "ENCRYPTION_KEY": self.env["GATEWAY_ENCRYPTION_KEY"], "QUOTA_REDIS_PREFIX": prefix + "q:"})

    @property
    def urls(self) -> list[str]:
        return [s.url for s in self.servers]

    def stop(self) -> None:
        for s in self.servers:
            s.stop()
        with self.app.app_context():
            db.engine.dispose()


@pytest.fixture(scope="module")
def pair(tmp_path_factory, mock_upstream):
    redis = redis_or_skip()
    prefix = f"gw:test:{uuid.uuid4().hex[:8]}:"
    databases = postgres_database()
    url = next(databases)
    p = Pair(url, tmp_path_factory.mktemp("instances"), prefix)
    add_provider(p.app, "up", "openai", mock_upstream + "/v1", ["echo", "flaky=echo+fail=500"])
    try:
        yield p
    finally:
        p.stop()
        for k in redis.scan_iter(match=prefix + "*"):
            redis.delete(k)
        next(databases, None)       # drop the database


def post(url: str, secret: str, model: str = "echo") -> requests.Response:
    return requests.post(url + "/v1/chat/completions", timeout=10, headers={"Authorization": f"Bearer {secret}"},
                         json={"model": model, "messages": [{"role": "user", "content": "hi"}]})


def serving(pair, secret: str, model: str = "echo") -> None:
    """Wait until both instances have read the new catalogue (CATALOG_CACHE_SECONDS)."""
    deadline = time.monotonic() + 10
    for url in pair.urls:
        while post(url, secret, model).status_code == 404:
            assert time.monotonic() < deadline, f"{url} does not serve {model}"
            time.sleep(0.1)


@pytest.mark.postgres
def test_two_instances_starting_together_on_an_empty_database_both_come_up(pair):
    for url in pair.urls:
        r = requests.get(url + "/readyz", timeout=10)
        assert r.status_code == 200, r.text
        assert r.json()["checks"] == {"database": "ok", "migrations": "ok", "redis": "ok"}
    with pair.app.app_context():      # seeded once: one first admin, not one per instance
        assert db.session.scalars(select(User.email)).all() == ["ops@example.com"]
        db.session.remove()


@pytest.mark.postgres
def test_a_token_quota_holds_across_both_instances(pair):
    key = make_key(pair.app, "shared-quota", token_quota=QUOTA)
    serving(pair, key)      # spends a little of the quota: two served requests
    results = fire(pair.urls, key, N, PARALLEL, BODY)
    records = records_when_written(pair.app, N + 2)
    with pair.app.app_context():
        key_id = records[-1].key_id
        mine = [r for r in records if r.key_id == key_id and r.request_id.startswith("conc-")]
        ledger = db.session.scalar(select(QuotaCounter).where(QuotaCounter.scope == f"key:{key_id}"))
        warmup = sum(r.total_tokens for r in records if r.key_id == key_id and not r.request_id.startswith("conc-"))
        check_quota(results, mine, ledger.used_tokens - warmup, ledger.reserved_tokens, QUOTA - warmup)
        served_by = {url: sum(1 for i, (s, _, _) in enumerate(results) if s == 200 and i % 2 == n)
                     for n, url in enumerate(pair.urls)}
        assert all(served_by.values()), served_by      # both instances served some
        db.session.remove()


@pytest.mark.postgres
def test_a_key_revoked_with_the_cli_is_refused_by_both_within_a_second(pair):
    key = make_key(pair.app, "to-revoke")
    serving(pair, key)
    for url in pair.urls:       # cached for a minute in each (GATEWAY_KEY_CACHE_SECONDS=60)
        assert post(url, key).status_code == 200
    env = {**os.environ, "DATABASE_URL": pair.db_url, "GATEWAY_DEMO": "0", "PYTHONPATH": str(ROOT),
           **pair.env}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    r = subprocess.run([sys.executable, "-m", "flask", "--app", "app", "keys", "revoke", key[:14]],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    revoked_at = time.monotonic()
    refused = {}
    while len(refused) < 2 and time.monotonic() - revoked_at < 1.0:
        for url in pair.urls:
            if url not in refused and post(url, key).status_code == 401:
                refused[url] = time.monotonic() - revoked_at
    assert set(refused) == set(pair.urls), f"still accepted after a second by {set(pair.urls) - set(refused)}"
    for url in pair.urls:
        r = post(url, key)
        assert r.status_code == 401 and r.json()["error"]["code"] == "key_revoked"


@pytest.mark.postgres
def test_a_circuit_opened_on_one_instance_is_respected_by_the_other(pair, mock):
    key = make_key(pair.app, "circuit")
    first, second = pair.urls
    for _ in range(3):          # CIRCUIT_FAILURES=3, one attempt per request
        assert post(first, key, "flaky").status_code == 502
    calls = requests.get(mock + "/_mock/stats", timeout=5).json()["total"]
    assert calls == 3

    def circuit(url):
        found = samples(requests.get(url + "/metrics", timeout=10).text)
        return value(found, "gateway_deployment_circuit_state", deployment_id="2", deployment="up/echo+fail=500")

    assert circuit(first) == 2
    deadline = time.monotonic() + 10
    while circuit(second) != 2:         # the other instance's view, through Redis
        assert time.monotonic() < deadline, "the second instance never saw the circuit open"
        time.sleep(0.1)
    r = post(second, key, "flaky")
    assert r.status_code == 503 and r.json()["error"]["code"] == "no_healthy_deployment"
    assert requests.get(mock + "/_mock/stats", timeout=5).json()["total"] == calls    # no upstream call


def test_a_new_process_takes_an_open_circuit_from_redis_before_its_first_sync(tmp_path):
    """No wait for the background sync: the first look at a deployment reads its shared state."""
    redis = redis_or_skip()
    prefix = f"gw:test:{uuid.uuid4().hex[:8]}:h:"
    config = {**TEST_CONFIG, "SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path}/t.db", "REDIS_URL": REDIS_URL,
              "HEALTH_REDIS_PREFIX": prefix, "HEALTH_SYNC_SECONDS": 3600.0, "CIRCUIT_FAILURES": 2}
    one = create_app(config, instance_path=str(tmp_path / "one"))
    route = Route(7, "m", "chat", 1, "p", "openai", "", 1, None)
    opened = Health(one)
    for _ in range(2):
        opened.failure(route, 10.0, status=500)
    assert opened.available(route) == "open" and opened.sync()
    fresh = Health(create_app(config, instance_path=str(tmp_path / "two")))
    assert fresh.available(route) == "open"
    for k in redis.scan_iter(match=prefix + "*"):
        redis.delete(k)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def any_db_url(request, tmp_path):
    return f"sqlite:///{tmp_path}/lock.db" if request.param == "sqlite" else request.getfixturevalue("empty_postgres")


def test_the_schema_lock_lets_one_holder_in_at_a_time(any_db_url, tmp_path):
    """What keeps instances (and CLI commands) from migrating and seeding at the same time."""
    app = create_app({**TEST_CONFIG, "SQLALCHEMY_DATABASE_URI": any_db_url}, instance_path=str(tmp_path / "i"))
    holding, release, order = threading.Event(), threading.Event(), []

    def holder():
        with app.app_context(), schema_lock():
            with schema_lock():         # reentrant in its own thread
                order.append("first in")
                holding.set()
                release.wait(10)
            order.append("first out")

    def waiter():
        holding.wait(10)
        with app.app_context(), schema_lock():
            order.append("second in")

    threads = [threading.Thread(target=holder), threading.Thread(target=waiter)]
    for t in threads:
        t.start()
    holding.wait(10)
    threads[1].join(0.5)
    assert threads[1].is_alive() and order == ["first in"]     # waits while the first holds it
    release.set()
    for t in threads:
        t.join(10)
    assert order == ["first in", "first out", "second in"]
    with app.app_context():
        db.engine.dispose()
