"""Key settings: expiry, rotation with a grace period, IP allowlists, disabling, editing."""
from __future__ import annotations

import re
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


def test_a_key_is_refused_before_its_valid_from_date(demo, client):
    starts = utcnow() + timedelta(hours=1)
    secret = make_key(demo, valid_from=starts)
    r = post(client, secret)
    assert r.status_code == 401
    assert r.json["error"]["code"] == "key_not_yet_valid" and r.json["error"]["type"] == "invalid_request_error"
    assert f"{starts:%Y-%m-%d %H:%M} UTC" in r.json["error"]["message"]
    with demo.app_context():
        # the cached KeyInfo is judged at each call: once the date is reached the same entry passes
        assert keys.authenticate(secret, now=starts + timedelta(seconds=1)).name == "test"
        with pytest.raises(AuthenticationFailed) as e:
            keys.authenticate(secret, now=starts - timedelta(seconds=1))
        assert e.value.code == "key_not_yet_valid"
        keys.update_key(the_key(demo), valid_from=None)     # the edit drops the cached entry at once
    assert post(client, secret).status_code == 200


def test_past_expiries_and_starts_after_the_expiry_are_refused(demo):
    now = utcnow()
    with demo.app_context():
        with pytest.raises(InvalidRequest) as e:
            keys.create_key("late", expires_at=now - timedelta(minutes=1))
        assert e.value.param == "expires_at" and "in the past" in e.value.message
        with pytest.raises(InvalidRequest) as e:
            keys.create_key("backwards", valid_from=now + timedelta(days=2), expires_at=now + timedelta(days=1))
        assert e.value.param == "valid_from" and "must come first" in e.value.message
        key, _ = keys.create_key("ok", valid_from=now + timedelta(days=1), expires_at=now + timedelta(days=2))
        with pytest.raises(InvalidRequest) as e:        # against the stored start
            keys.update_key(key, expires_at=now + timedelta(hours=12))
        assert e.value.param == "expires_at"
        with pytest.raises(InvalidRequest):
            keys.update_key(key, expires_at=now - timedelta(days=1))
        # an expiry already stored may stay, even once it has passed: renaming an expired key works
        key.expires_at = now - timedelta(days=1)
        key.valid_from = None
        db.session.commit()
        keys.update_key(key, name="renamed", expires_at=key.expires_at)
        assert the_key(demo).name == "renamed"


def test_effective_limits_combine_key_plan_and_team(demo):
    from gateway.services.accounting import key_limits, teams
    with demo.app_context():
        plan = teams.save_plan("pro", models=["demo-chat", "gpt-4o"], rpm=100, token_quota=5000, quota_period="month")
        team = teams.save_team("red", budget_usd=25.0)
        key, _ = keys.create_key("on plan", plan_id=plan.id, team_id=team.id, rpm=10)
        e = key_limits.effective(key)
        assert e.models == ("demo-chat", "gpt-4o") and e.models_source == "plan pro"
        assert e.models_text == "demo-chat, gpt-4o"          # never "all" for a plan-restricted key
        got = {a.name: (a.text, a.source) for a in e.applied}
        assert got == {"token_quota": ("5,000 tokens a month", "plan pro"), "rpm": ("10 requests a minute", "key"),
                       "team_budget": ("$25.00 a month, shared by the team", "team red")}
        assert e.compact() == ("models: demo-chat, gpt-4o (plan pro) · 5,000 tok/month (plan pro) · rpm 10 · "
                               "team $25.00/month (team red)")
        free, _ = keys.create_key("free")
        assert key_limits.effective(free).compact() == "models: all · unlimited"
        # the same values the request path enforces
        i = keys.info(key)
        assert (i.token_quota, i.rpm, i.team_budget_usd, i.models) == (5000, 10, 25.0, frozenset(e.models))


def test_cli_valid_from_past_expiry_and_show(demo):
    runner = demo.test_cli_runner()
    assert runner.invoke(args=["teams", "plan", "--name", "pro", "--models", "demo-chat", "--rpm", "60"]).exit_code == 0
    out = runner.invoke(args=["keys", "create", "--name", "old", "--expires", "2001-01-01"])
    assert out.exit_code == 1 and "in the past" in out.output
    out = runner.invoke(args=["keys", "create", "--name", "svc", "--plan", "pro", "--valid-from", "2098-01-01",
                              "--expires", "2099-01-31"])
    assert out.exit_code == 0, out.output
    with demo.app_context():
        row = the_key(demo)
        prefix = row.prefix
        assert row.valid_from.isoformat() == "2098-01-01T00:00:00"
    listed = runner.invoke(args=["keys", "list"]).output
    assert "not-yet-valid" in listed and "valid_from=2098-01-01" in listed and "models=demo-chat" in listed
    assert "rpm=60@plan:pro" in listed
    shown = dict(re.split(r"\s{2,}", line, maxsplit=1) for line in
                 runner.invoke(args=["keys", "show", prefix]).output.splitlines())
    assert shown["models"] == "demo-chat (plan pro)" and shown["valid from"] == "2098-01-01 00:00 UTC"
    assert shown["requests / minute"] == "60 requests a minute (plan pro)" and shown["state"] == "not-yet-valid"
    out = runner.invoke(args=["keys", "update", prefix, "--valid-from", "2100-01-01"])
    assert out.exit_code == 1 and "must come first" in out.output
    assert runner.invoke(args=["keys", "update", prefix, "--valid-from", "now"]).exit_code == 0
    with demo.app_context():
        assert the_key(demo).valid_from is None
    assert runner.invoke(args=["keys", "create", "--name", "x", "--valid-from", "soon"]).exit_code == 2


def test_key_states_in_sql_match_the_state_of_each_key(app):
    """key_scope.search's SQL and key_scope.state agree, on SQLite and Postgres."""
    from gateway.services.accounting import key_scope
    now = utcnow()
    with app.app_context():
        made = {name: keys.create_key(name, **kw)[0] for name, kw in {
            "active": {}, "ends-later": {"expires_at": now + timedelta(days=1)},
            "started": {"valid_from": now - timedelta(days=1)}, "disabled": {"enabled": False},
            "future": {"valid_from": now + timedelta(days=1)}, "revoked": {}, "expired": {}}.items()}
        keys.revoke_key(made["revoked"])
        made["expired"].expires_at = now - timedelta(seconds=1)
        db.session.commit()
        for state in key_scope.STATES:
            rows, _ = key_scope.search(None, state=state)
            assert {k.name for k in rows} == {n for n, k in made.items() if key_scope.state(k) == state}, state
        assert {key_scope.state(made[n]) for n in ("active", "ends-later", "started")} == {"active"}
        assert [key_scope.state(made[n]) for n in ("disabled", "future", "revoked", "expired")] == [
            "disabled", "not-yet-valid", "revoked", "expired"]
