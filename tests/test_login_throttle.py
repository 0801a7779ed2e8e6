"""Login hardening: no timing oracle for unknown emails, Retry-After, back-off per (account,
address) and per address, the CLI's way back in, and one count across processes (database or Redis)."""
from __future__ import annotations

import uuid
from datetime import timedelta

import pytest

from console_client import PASSWORD, csrf_from, make_user
from gateway import create_app
from gateway.auth import throttle
from gateway.extensions import db
from gateway.models import utcnow
from gateway.services.admin import users
from tests.helpers import REDIS_URL, make_app, redis_or_skip

ADMIN = "admin@example.com"


def login(app, email: str, password: str, ip: str = "198.51.100.7"):
    """One login attempt from `ip`, in a fresh browser."""
    client = app.test_client()
    env = {"REMOTE_ADDR": ip}
    token = csrf_from(client.get("/login", environ_base=env).text)
    return client.post("/login", data={"email": email, "password": password, "csrf_token": token},
                       environ_base=env)


@pytest.fixture(params=["database", "redis"])
def store_app(request, tmp_path):
    """The app with failures counted in the database, and again in Redis (a prefix of its own)."""
    extra = {}
    if request.param == "redis":
        redis_or_skip()
        extra = {"REDIS_URL": REDIS_URL, "LOGIN_THROTTLE_REDIS_PREFIX": f"gw:test:login:{uuid.uuid4().hex}:"}
    app = make_app(f"sqlite:///{tmp_path}/t.db", instance_path=str(tmp_path / "i"), **extra)
    make_user(app, ADMIN, "admin")
    yield app
    with app.app_context():
        db.engine.dispose()


def test_unknown_email_costs_the_same_hash_work(sqlite_app, monkeypatch):
    make_user(sqlite_app, ADMIN, "admin")
    checked = []
    real = users.check_password_hash
    monkeypatch.setattr(users, "check_password_hash", lambda h, p: checked.append(h) or real(h, p))
    with sqlite_app.app_context():
        stored = users.check_login(ADMIN, "wrong-guess") or db.session.scalar(
            db.select(users.User.password_hash).where(users.User.email == ADMIN))
        assert users.check_login("nobody@example.com", "wrong-guess") is None
    assert len(checked) == 2
    method = lambda h: h.split("$", 1)[0]       # noqa: E731 - e.g. scrypt:32768:8:1
    assert method(checked[1]) == method(checked[0]) == method(stored)


def test_disabled_user_costs_the_same_hash_work_and_is_refused(sqlite_app, monkeypatch):
    uid = make_user(sqlite_app, "m@example.com", "member")
    make_user(sqlite_app, ADMIN, "admin")
    with sqlite_app.app_context():
        users.set_active(db.session.get(users.User, uid), False)
        checked = []
        real = users.check_password_hash
        monkeypatch.setattr(users, "check_password_hash", lambda h, p: checked.append(h) or real(h, p))
        assert users.check_login("m@example.com", PASSWORD) is None
    assert len(checked) == 1


def test_lockout_answers_429_with_retry_after(store_app):
    for _ in range(throttle.PER_PAIR.free):
        assert login(store_app, ADMIN, "bad-guess").status_code == 401
    r = login(store_app, ADMIN, PASSWORD)
    assert r.status_code == 429 and "Too many failed attempts" in r.text
    assert 1 <= int(r.headers["Retry-After"]) <= 60


def test_spraying_one_email_from_many_addresses_never_locks_out_its_owner(store_app):
    for i in range(4):
        ip = f"203.0.113.{i + 1}"
        for _ in range(throttle.PER_PAIR.free + 1):
            login(store_app, ADMIN, "bad-guess", ip)
        assert login(store_app, ADMIN, PASSWORD, ip).status_code == 429     # each attacker is locked
    assert login(store_app, ADMIN, PASSWORD, "198.51.100.7").status_code == 302


def test_one_address_trying_many_accounts_is_blocked(store_app):
    for i in range(throttle.PER_IP.free):
        login(store_app, f"guess{i}@example.com", "bad-guess", "203.0.113.9")
    assert login(store_app, ADMIN, PASSWORD, "203.0.113.9").status_code == 429
    assert login(store_app, ADMIN, PASSWORD, "198.51.100.7").status_code == 302


def test_each_failure_past_the_free_ones_doubles_the_wait(store_app):
    t = utcnow()
    with store_app.app_context():
        for _ in range(throttle.PER_PAIR.free):
            throttle.failed(ADMIN, "203.0.113.5", now=t)
        assert throttle.retry_after(ADMIN, "203.0.113.5", now=t) == 60
        waits = []
        for _ in range(6):
            t += timedelta(seconds=throttle.retry_after(ADMIN, "203.0.113.5", now=t))
            assert throttle.retry_after(ADMIN, "203.0.113.5", now=t) == 0     # the wait is over
            throttle.failed(ADMIN, "203.0.113.5", now=t)
            waits.append(throttle.retry_after(ADMIN, "203.0.113.5", now=t))
        assert waits == [120, 240, 480, 900, 900, 900]
        assert throttle.retry_after(ADMIN, "203.0.113.6", now=t) == 0           # another address
        assert throttle.retry_after(ADMIN, "203.0.113.5", now=t + throttle.LOOKBACK) == 0


def test_a_success_clears_the_pair_but_not_the_address(store_app):
    make_user(store_app, "own@example.com", "member")
    for _ in range(throttle.PER_PAIR.free - 1):
        login(store_app, ADMIN, "bad-guess", "203.0.113.7")
    assert login(store_app, "own@example.com", PASSWORD, "203.0.113.7").status_code == 302
    login(store_app, ADMIN, "bad-guess", "203.0.113.7")       # the fifth on the admin: locked now
    assert login(store_app, ADMIN, PASSWORD, "203.0.113.7").status_code == 429
    with store_app.app_context():
        assert throttle._store().recent(ADMIN, "203.0.113.7", utcnow() - throttle.LOOKBACK)[1][0] == 5


def test_cli_password_reset_and_unlock_let_a_locked_out_admin_back_in(store_app):
    for ip in ("198.51.100.7", "198.51.100.8"):
        for _ in range(throttle.PER_PAIR.free):
            login(store_app, ADMIN, "bad-guess", ip)
    assert login(store_app, ADMIN, PASSWORD).status_code == 429
    runner = store_app.test_cli_runner()
    out = runner.invoke(args=["users", "create", "--email", ADMIN, "--password", "a-new-password", "--role", "admin"])
    assert out.exit_code == 0, out.output
    assert login(store_app, ADMIN, "a-new-password").status_code == 302
    for _ in range(throttle.PER_PAIR.free):
        login(store_app, ADMIN, "bad-guess", "198.51.100.9")
    assert login(store_app, ADMIN, "a-new-password", "198.51.100.9").status_code == 429
    out = runner.invoke(args=["users", "unlock", "--email", ADMIN])
    assert out.exit_code == 0, out.output
    assert login(store_app, ADMIN, "a-new-password", "198.51.100.9").status_code == 302


def test_the_count_holds_across_instances(store_app, tmp_path):
    other = create_app(instance_path=str(tmp_path / "i2"),
                       overrides=dict(store_app.config, SQLALCHEMY_DATABASE_URI=store_app.config["SQLALCHEMY_DATABASE_URI"]))
    for n in range(throttle.PER_PAIR.free):
        login(store_app if n % 2 else other, ADMIN, "bad-guess")
    assert login(store_app, ADMIN, PASSWORD).status_code == 429
    assert login(other, ADMIN, PASSWORD).status_code == 429
    with other.app_context():
        db.engine.dispose()


def test_redis_down_counts_in_the_database(tmp_path, caplog):
    app = make_app(f"sqlite:///{tmp_path}/t.db", instance_path=str(tmp_path / "i"), REDIS_URL="redis://127.0.0.1:1/0")
    make_user(app, ADMIN, "admin")
    for _ in range(throttle.PER_PAIR.free):
        assert login(app, ADMIN, "bad-guess").status_code == 401
    assert login(app, ADMIN, PASSWORD).status_code == 429
    assert "login failures are counted in the database" in caplog.text
