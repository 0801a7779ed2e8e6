"""Key cache invalidation across processes: two app instances stand in for two workers on one
database; with Redis a revoke in one reaches the other's cache at once, without it the TTL rules."""
from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from sqlalchemy import select

from gateway import create_app
from gateway.extensions import db
from gateway.models import ApiKey
from gateway import pubsub
from gateway.services.accounting import keys
from tests.helpers import REDIS_URL, add_provider, make_app, make_key, redis_or_skip

ROOT = Path(__file__).resolve().parents[1]
CHAT = {"model": "demo-chat", "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture
def workers(tmp_path, request):
    """Two apps on one SQLite file with a one-minute key cache; REDIS_URL from the param."""
    url = f"sqlite:///{tmp_path}/t.db"
    cfg = dict(KEY_CACHE_SECONDS=60.0, **getattr(request, "param", {}))
    w1 = make_app(url, instance_path=str(tmp_path / "i1"), **cfg)
    w2 = create_app(instance_path=str(tmp_path / "i2"), overrides=dict(w1.config, SQLALCHEMY_DATABASE_URI=url))
    add_provider(w1, "demo", "mock", None, ["demo-chat"])
    yield w1, w2
    for app in (w1, w2):
        b = app.extensions.get("pubsub")
        if b is not None:
            b.stop()
        with app.app_context():
            from gateway.services.accounting.usage import recorder
            recorder(app).drain()
            db.engine.dispose()


def post(app, secret):
    return app.test_client().post("/v1/chat/completions", json=CHAT, headers={"Authorization": f"Bearer {secret}"})


def change(app, action):
    with app.app_context():
        action(db.session.scalar(select(ApiKey)))


def wait_for_status(app, secret, status, timeout=5.0) -> int:
    deadline = time.monotonic() + timeout
    while True:
        got = post(app, secret).status_code
        if got == status or time.monotonic() > deadline:
            return got
        time.sleep(0.05)


def cached_in(app, secret) -> None:
    """Serve once so the listener starts, wait until it subscribed (which empties the cache),
    then serve again: the key is now cached for a minute."""
    assert post(app, secret).status_code == 200
    assert pubsub.bus(app).ready.wait(5.0), "the listener did not subscribe"
    assert post(app, secret).status_code == 200
    with app.app_context():
        assert keys.hash_secret(secret) in keys.cache().entries


@pytest.mark.parametrize("workers", [{"REDIS_URL": REDIS_URL}], indirect=True)
def test_revoke_in_one_worker_reaches_the_other(workers):
    redis_or_skip()
    w1, w2 = workers
    secret = make_key(w1)
    cached_in(w2, secret)
    change(w1, keys.revoke_key)
    assert wait_for_status(w2, secret, 401) == 401


@pytest.mark.parametrize("workers", [{"REDIS_URL": REDIS_URL}], indirect=True)
def test_disable_and_rotate_reach_the_other_worker(workers):
    redis_or_skip()
    w1, w2 = workers
    secret = make_key(w1)
    cached_in(w2, secret)
    change(w1, lambda k: keys.update_key(k, enabled=False))
    assert wait_for_status(w2, secret, 401) == 401
    change(w1, lambda k: keys.update_key(k, enabled=True))
    assert wait_for_status(w2, secret, 200) == 200
    with w1.app_context():
        _, new = keys.rotate_key(db.session.scalar(select(ApiKey)), grace_seconds=0)
    assert wait_for_status(w2, secret, 401) == 401
    assert post(w2, new).status_code == 200


@pytest.mark.parametrize("workers", [{"REDIS_URL": REDIS_URL}], indirect=True)
def test_clear_reaches_the_other_worker(workers):
    redis_or_skip()
    w1, w2 = workers
    secret = make_key(w1)
    cached_in(w2, secret)
    with w1.app_context():
        keys.cache().clear()
    deadline = time.monotonic() + 5
    with w2.app_context():
        while keys.cache().entries and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not keys.cache().entries


@pytest.mark.parametrize("workers", [{"REDIS_URL": REDIS_URL, "SETTINGS_CACHE_SECONDS": 60}], indirect=True)
def test_a_setting_changed_in_one_worker_reaches_the_other(workers):
    redis_or_skip()
    w1, w2 = workers
    from gateway.services.admin import settings
    assert settings.cached(w2, "log_prompts") is False
    pubsub.bus(w2).ensure()
    assert pubsub.bus(w2).ready.wait(5.0)
    assert settings.cached(w2, "log_prompts") is False     # cached for a minute
    with w1.app_context():
        settings.put("log_prompts", True)
    deadline = time.monotonic() + 5
    while not settings.cached(w2, "log_prompts") and time.monotonic() < deadline:
        time.sleep(0.02)
    assert settings.cached(w2, "log_prompts") is True


def test_without_redis_the_ttl_rules(workers):
    """No Redis: the revoking worker refuses at once; another serves its cached entry until the TTL."""
    w1, w2 = workers
    secret = make_key(w1)
    assert post(w2, secret).status_code == 200
    change(w1, keys.revoke_key)
    assert post(w1, secret).status_code == 401
    assert post(w2, secret).status_code == 200      # cached for KEY_CACHE_SECONDS
    assert "pubsub" not in w2.extensions or pubsub.bus(w2).listener.thread is None
    with w2.app_context():
        keys.cache().ttl = 0
    assert post(w2, secret).status_code == 401


@pytest.mark.parametrize("workers", [{"REDIS_URL": "redis://127.0.0.1:1/0"}], indirect=True)
def test_redis_down_degrades_to_the_ttl_and_logs_once(workers, caplog):
    w1, w2 = workers
    secret = make_key(w1)
    with caplog.at_level(logging.WARNING, logger="gateway.pubsub"):
        assert post(w2, secret).status_code == 200
        change(w1, keys.revoke_key)
        change(w1, lambda k: keys.update_key(k, name="again"))
        assert post(w1, secret).status_code == 401
    assert 1 <= sum("Redis unreachable" in m for m in caplog.messages) <= 2     # once per app at most
    link = pubsub.bus(w1).link      # later changes skip Redis for a while instead of timing out
    assert link.state == "open" and link.attempts == 1


def test_a_lookup_racing_an_invalidation_is_not_cached(sqlite_app, monkeypatch):
    secret = make_key(sqlite_app)
    with sqlite_app.app_context():
        c = keys.cache()
        c.ttl = 60
        real = db.session.scalar

        def racing(*a, **kw):       # the key is revoked while this lookup runs
            c.forget("x")
            return real(*a, **kw)
        monkeypatch.setattr(db.session, "scalar", racing)
        assert c.get(keys.hash_secret(secret)) is not None
        assert keys.hash_secret(secret) not in c.entries


def gunicorn(app, db_url: str, tmp_path, **env) -> tuple[subprocess.Popen, str]:
    """One gevent worker serving the app; (process, base URL) once it answers."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    environ = dict(os.environ, DATABASE_URL=db_url, GATEWAY_ALLOW_PRIVATE_UPSTREAMS="1", GATEWAY_DEMO="0",
                   GATEWAY_SKIP_BOOTSTRAP="1", GATEWAY_ENCRYPTION_KEY=app.config["ENCRYPTION_KEY"],
                   GATEWAY_SECRET_KEY="test", **env)
    log = open(tmp_path / "gunicorn.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "gunicorn", "-c", "python:gateway.gunicorn_conf",
                             "-b", f"127.0.0.1:{port}", "-w", "1", "app:app"],
                            cwd=ROOT, env=environ, stdout=log, stderr=subprocess.STDOUT)
    log.close()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            requests.get(url + "/v1/models", timeout=5)
            return proc, url
        except requests.RequestException:
            time.sleep(0.2)
    proc.kill()
    proc.wait()
    raise RuntimeError("gunicorn did not start; see " + str(tmp_path / "gunicorn.log"))


def test_gunicorn_gevent_worker_drops_a_revoked_key(tmp_path):
    """The listener as a greenlet in a real gevent worker, the revoke made by another process."""
    redis_or_skip()
    url = f"sqlite:///{tmp_path}/t.db"
    app = make_app(url, instance_path=str(tmp_path / "i"), REDIS_URL=REDIS_URL)
    add_provider(app, "demo", "mock", None, ["demo-chat"])
    secret = make_key(app)
    proc, base = gunicorn(app, url, tmp_path, GATEWAY_KEY_CACHE_SECONDS="60", REDIS_URL=REDIS_URL)
    try:
        def status():
            return requests.post(base + "/v1/chat/completions", json=CHAT, timeout=10,
                                 headers={"Authorization": f"Bearer {secret}"}).status_code
        assert status() == 200
        time.sleep(0.5)             # let the worker's listener subscribe
        assert status() == 200      # cached for a minute
        change(app, keys.revoke_key)
        deadline = time.monotonic() + 10
        while status() != 401:
            assert time.monotonic() < deadline, "the worker still accepts a revoked key"
            time.sleep(0.05)
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        pubsub.bus(app).stop()
        with app.app_context():
            db.engine.dispose()
