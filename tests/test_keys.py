"""Key settings: expiry, rotation with a grace period, IP allowlists, disabling, editing."""
from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

from gateway.errors import AuthenticationFailed, InvalidRequest, PermissionDenied
from gateway.extensions import db
from gateway.models import ApiKey, utcnow
from gateway.services.accounting import keys
from tests.helpers import add_provider, make_key

CHAT = {"model": "demo-chat", "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture
def demo(sqlite_app):
    add_provider(sqlite_app, "demo", "mock", None, ["demo-chat"])
    return sqlite_app


@pytest.fixture
def client(demo):
    return demo.test_client()


def post(client, key, **headers):
    return client.post("/v1/chat/completions", json=CHAT, headers={"Authorization": f"Bearer {key}", **headers})


def the_key(app) -> ApiKey:
    return db.session.scalar(select(ApiKey))


def test_expiry(demo):
    secret = make_key(demo, expires_at=utcnow() + timedelta(hours=1))
    with demo.app_context():
        keys.authenticate(secret)
        with pytest.raises(AuthenticationFailed) as e:
            keys.authenticate(secret, now=utcnow() + timedelta(hours=2))
        assert e.value.code == "key_expired"


def test_rotation_keeps_settings_and_the_old_secret_for_the_grace_period(demo):
    old = make_key(demo, token_quota=500, rpm=7, models=["demo-chat"])
    with demo.app_context():
        row = the_key(demo)
        key_id = row.id
        t = utcnow()
        _, new = keys.rotate_key(row, grace_seconds=3600, now=t)
        assert new != old and new.startswith(row.prefix)
        a, b = keys.authenticate(new), keys.authenticate(old, now=t + timedelta(minutes=59))
        assert a.id == b.id == key_id and (a.token_quota, a.rpm) == (b.token_quota, b.rpm) == (500, 7)
        keys.cache().clear()
        with pytest.raises(AuthenticationFailed) as e:
            keys.authenticate(old, now=t + timedelta(minutes=61))
        assert e.value.code == "key_rotated"
        keys.authenticate(new, now=t + timedelta(days=1))


def test_rotation_without_grace_stops_the_old_secret_at_once(demo, client):
    old = make_key(demo)
    with demo.app_context():
        _, new = keys.rotate_key(the_key(demo), grace_seconds=0)
    assert post(client, old).status_code == 401
    assert post(client, new).status_code == 200


def test_ip_allowlist(demo, client):
    secret = make_key(demo, ip_allow="10.0.0.0/8, 192.0.2.7")
    with demo.app_context():
        info = keys.authenticate(secret, ip="10.1.2.3")
        assert info.allows_ip("192.0.2.7") and info.allows_ip("::ffff:10.0.0.1")
        assert not info.allows_ip("192.0.2.8") and not info.allows_ip("garbage")
        with pytest.raises(PermissionDenied) as e:
            keys.authenticate(secret, ip="203.0.113.9")
        assert e.value.code == "ip_not_allowed"
    # the test client connects from 127.0.0.1
    r = post(client, secret)
    assert r.status_code == 403 and r.json["error"]["code"] == "ip_not_allowed"
    # X-Forwarded-For counts only behind a trusted proxy
    assert post(client, secret, **{"X-Forwarded-For": "10.9.9.9"}).status_code == 403


def test_ip_allowlist_behind_a_trusted_proxy_uses_the_address_it_saw(tmp_path):
    from tests.helpers import make_app
    app = make_app(f"sqlite:///{tmp_path}/p.db", instance_path=str(tmp_path / "i"), TRUST_PROXY=True)
    add_provider(app, "demo", "mock", None, ["demo-chat"])
    secret = make_key(app, ip_allow="10.0.0.0/8")
    client = app.test_client()
    # The proxy appends the peer it saw; entries before it are whatever the client claimed.
    assert post(client, secret, **{"X-Forwarded-For": "10.9.9.9, 203.0.113.9"}).status_code == 403
    assert post(client, secret, **{"X-Forwarded-For": "203.0.113.9, 10.9.9.9"}).status_code == 200


def test_bad_cidr_is_refused(demo):
    with demo.app_context(), pytest.raises(InvalidRequest):
        keys.create_key("x", ip_allow=["10.0.0.0/33"])


def test_disable_and_enable_without_reissuing(demo, client):
    secret = make_key(demo)
    with demo.app_context():
        keys.update_key(the_key(demo), enabled=False)
    r = post(client, secret)
    assert r.status_code == 401 and r.json["error"]["code"] == "key_disabled"
    with demo.app_context():
        keys.update_key(the_key(demo), enabled=True, models=["other"])
    assert post(client, secret).status_code == 403


def test_update_validates(demo):
    make_key(demo)
    with demo.app_context():
        row = the_key(demo)
        for bad in ({"quota_period": "year"}, {"rpm": -1}, {"quota_tz": "Mars/Base"}, {"colour": "red"}):
            with pytest.raises(InvalidRequest):
                keys.update_key(row, **bad)


def test_cli_create_update_rotate(demo):
    runner = demo.test_cli_runner()
    out = runner.invoke(args=["teams", "create", "--name", "search", "--budget", "25", "--alerts", "50,80,100"])
    assert out.exit_code == 0, out.output
    out = runner.invoke(args=["keys", "create", "--name", "svc", "--team", "search", "--token-quota", "1000",
                              "--quota-period", "day", "--budget", "5", "--rpm", "60", "--tpm", "10000",
                              "--parallel", "4", "--models", "demo-chat", "--policy", "cheapest",
                              "--expires", "2099-01-31", "--ip-allow", "10.0.0.0/8"])
    assert out.exit_code == 0, out.output
    secret = out.output.strip().splitlines()[-1]
    with demo.app_context():
        row = the_key(demo)
        prefix = row.prefix
        assert (row.token_quota, row.quota_period, row.budget_usd, row.rpm, row.tpm, row.max_parallel,
                row.models, row.policy, row.ip_allow, row.team.name) == (
            1000, "day", 5.0, 60, 10000, 4, ["demo-chat"], "cheapest", ["10.0.0.0/8"], "search")
    out = runner.invoke(args=["keys", "update", prefix, "--rpm", "0", "--token-quota", "50", "--disable"])
    assert out.exit_code == 0, out.output
    with demo.app_context():
        row = the_key(demo)
        assert (row.rpm, row.token_quota, row.enabled, row.key_hash) == (None, 50, False, keys.hash_secret(secret))
    out = runner.invoke(args=["keys", "rotate", prefix, "--grace", "1h"])
    assert out.exit_code == 0, out.output
    new = out.output.strip().splitlines()[-1]
    with demo.app_context():
        row = the_key(demo)
        assert row.key_hash == keys.hash_secret(new) and row.prev_key_hash == keys.hash_secret(secret)
    assert runner.invoke(args=["keys", "update", "sk-gw-nope", "--rpm", "1"]).exit_code != 0
    assert "quota=50/day" in runner.invoke(args=["keys", "list"]).output
