"""Console login: hashing, throttling, CSRF, cookies, redirects."""
from __future__ import annotations

from sqlalchemy import select

from console_client import PASSWORD, Console, csrf_from, make_user
from gateway.extensions import db
from gateway.models import AuditLog, User
from gateway.services.admin import users


def test_login_and_logout(app):
    make_user(app, "a@example.com", "admin")
    c = Console(app, "a@example.com")
    assert c.get("/").status_code == 200
    assert c.post("/logout").status_code == 302
    r = c.get("/")
    assert r.status_code == 302 and "/login" in r.headers["Location"]
    with app.app_context():
        actions = [a.action for a in db.session.scalars(select(AuditLog).order_by(AuditLog.id))]
    assert actions == ["auth.login", "auth.logout"]


def test_password_is_hashed_with_a_kdf(sqlite_app):
    make_user(sqlite_app, "a@example.com", "admin")
    with sqlite_app.app_context():
        u = db.session.scalar(select(User))
        assert PASSWORD not in u.password_hash
        assert u.password_hash.startswith(("scrypt:", "pbkdf2:"))


def test_wrong_password_is_refused(sqlite_app):
    make_user(sqlite_app, "a@example.com", "admin")
    c = Console(sqlite_app)
    r = c.post("/login", data={"email": "a@example.com", "password": "nope-nope"})
    assert r.status_code == 401 and "Wrong email or password" in r.text


def test_login_throttled_per_account_after_repeated_failures(sqlite_app):
    make_user(sqlite_app, "a@example.com", "admin")
    c = Console(sqlite_app)
    for _ in range(5):
        assert c.post("/login", data={"email": "a@example.com", "password": "bad-guess"}).status_code == 401
    r = c.post("/login", data={"email": "a@example.com", "password": PASSWORD})
    assert r.status_code == 429 and "Too many failed attempts" in r.text
    # another account from the same address is not locked by these five
    make_user(sqlite_app, "b@example.com", "viewer")
    assert c.post("/login", data={"email": "b@example.com", "password": PASSWORD}).status_code == 302


def test_login_throttled_per_address_across_accounts(sqlite_app):
    make_user(sqlite_app, "a@example.com", "admin")
    c = Console(sqlite_app)
    for i in range(20):
        c.post("/login", data={"email": f"guess{i}@example.com", "password": "bad-guess"})
    assert c.post("/login", data={"email": "a@example.com", "password": PASSWORD}).status_code == 429


def test_success_clears_the_failure_count(sqlite_app):
    make_user(sqlite_app, "a@example.com", "admin")
    c = Console(sqlite_app)
    for _ in range(4):
        c.post("/login", data={"email": "a@example.com", "password": "bad-guess"})
    assert c.post("/login", data={"email": "a@example.com", "password": PASSWORD}).status_code == 302
    c2 = Console(sqlite_app)
    for _ in range(4):
        c2.post("/login", data={"email": "a@example.com", "password": "bad-guess"})
    assert c2.post("/login", data={"email": "a@example.com", "password": PASSWORD}).status_code == 302


def test_deactivated_user_cannot_log_in(sqlite_app):
    make_user(sqlite_app, "a@example.com", "admin")
    make_user(sqlite_app, "m@example.com", "member")
    with sqlite_app.app_context():
        users.set_active(db.session.scalar(select(User).where(User.email == "m@example.com")), False)
    c = Console(sqlite_app)
    assert c.post("/login", data={"email": "m@example.com", "password": PASSWORD}).status_code == 401


def test_login_and_logout_need_the_csrf_token(sqlite_app):
    make_user(sqlite_app, "a@example.com", "admin")
    c = Console(sqlite_app)
    r = c.post("/login", data={"email": "a@example.com", "password": PASSWORD}, csrf=False)
    assert r.status_code == 403
    c = Console(sqlite_app, "a@example.com")
    assert c.post("/logout", csrf=False).status_code == 403
    assert c.get("/").status_code == 200      # still logged in


def test_next_parameter_never_leaves_the_site(sqlite_app):
    make_user(sqlite_app, "a@example.com", "admin")
    c = Console(sqlite_app)
    for target, expected in (("//evil.example/x", "/"), ("https://evil.example/", "/"), ("/keys", "/keys")):
        c = Console(sqlite_app)
        r = c.client.post(f"/login?next={target}", data={"email": "a@example.com", "password": PASSWORD,
                                                       "csrf_token": c.token})
        assert r.headers["Location"] == expected


def test_session_cookie_flags(sqlite_app):
    make_user(sqlite_app, "a@example.com", "admin")
    c = Console(sqlite_app)
    r = c.post("/login", data={"email": "a@example.com", "password": PASSWORD})
    cookie = r.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Secure" not in cookie


def test_secure_cookie_behind_a_trusted_tls_proxy(tmp_path):
    from tests.helpers import make_app
    app = make_app(f"sqlite:///{tmp_path}/p.db", instance_path=str(tmp_path / "i"), TRUST_PROXY=True)
    make_user(app, "a@example.com", "admin")
    client = app.test_client()
    proto = {"X-Forwarded-Proto": "https"}
    token = csrf_from(client.get("/login", headers=proto).text)
    r = client.post("/login", data={"email": "a@example.com", "password": PASSWORD, "csrf_token": token},
                    headers=proto)
    assert "Secure" in r.headers["Set-Cookie"]


def test_forwarded_proto_ignored_without_trust(sqlite_app):
    make_user(sqlite_app, "a@example.com", "admin")
    client = sqlite_app.test_client()
    proto = {"X-Forwarded-Proto": "https"}
    token = csrf_from(client.get("/login", headers=proto).text)
    r = client.post("/login", data={"email": "a@example.com", "password": PASSWORD, "csrf_token": token},
                    headers=proto)
    assert r.status_code == 302 and "Secure" not in r.headers["Set-Cookie"]


def test_expired_session_on_htmx_gets_hx_redirect(sqlite_app):
    r = sqlite_app.test_client().get("/keys", headers={"HX-Request": "true"})
    assert r.status_code == 401 and r.headers["HX-Redirect"].startswith("/login")
