"""Console sessions: revoked by logout, a new password, a role change or deactivation; a new
CSRF token at login; writes from foreign origins refused with 403; the CSP on every page."""
from __future__ import annotations

import pytest
from sqlalchemy import select

from console_client import PASSWORD, Console, csrf_from, make_user
from gateway.extensions import db
from gateway.models import ApiKey, AuditLog, User
from gateway.services.admin import users
from tests.helpers import make_app

ADMIN, MEMBER = "admin@example.com", "member@example.com"


def cookie(c: Console) -> str:
    return c.client.get_cookie("session").value


def browser_with(app, session_cookie: str):
    """Another browser holding a copy of a session cookie."""
    client = app.test_client()
    client.set_cookie("session", session_cookie)
    return client


def logged_out(client) -> bool:
    r = client.get("/keys")
    return r.status_code == 302 and "/login" in r.headers["Location"]


def test_a_cookie_saved_before_logout_is_dead_after_it(app):
    make_user(app, ADMIN, "admin")
    c = Console(app, ADMIN)
    saved = cookie(c)
    assert not logged_out(browser_with(app, saved))
    assert c.post("/logout").status_code == 302
    assert logged_out(browser_with(app, saved))
    assert logged_out(c.client)


def test_logout_ends_the_users_other_sessions_too(sqlite_app):
    make_user(sqlite_app, ADMIN, "admin")
    laptop, phone = Console(sqlite_app, ADMIN), Console(sqlite_app, ADMIN)
    laptop.post("/logout")
    assert logged_out(phone.client)


def test_a_new_password_ends_every_session(sqlite_app):
    make_user(sqlite_app, ADMIN, "admin")
    c = Console(sqlite_app, ADMIN)
    out = sqlite_app.test_cli_runner().invoke(args=["users", "create", "--email", ADMIN, "--password",
                                                    "another-password", "--role", "admin"])
    assert out.exit_code == 0, out.output
    assert logged_out(c.client)
    Console(sqlite_app, ADMIN, password="another-password")      # the new one works


def test_changing_ones_own_password_ends_the_other_sessions_only(sqlite_app):
    make_user(sqlite_app, MEMBER, "member")
    here, elsewhere = Console(sqlite_app, MEMBER), Console(sqlite_app, MEMBER)
    r = here.post("/account", {"current_password": PASSWORD, "password": "brand-new-pass", "confirm": "brand-new-pass"})
    assert r.status_code == 200 and "Password changed" in r.text
    assert logged_out(elsewhere.client)
    assert not logged_out(here.client)
    Console(sqlite_app, MEMBER, password="brand-new-pass")
    with sqlite_app.app_context():
        assert db.session.scalar(select(AuditLog.action).where(AuditLog.action == "user.password"))


def test_the_password_form_shows_errors_next_to_fields_and_throttles_guesses(sqlite_app):
    make_user(sqlite_app, MEMBER, "member")
    c = Console(sqlite_app, MEMBER)
    r = c.post("/account", {"current_password": "wrong-one", "password": "brand-new-pass", "confirm": "brand-new-pass"})
    assert r.status_code == 422 and 'id="current_password-error"' in r.text
    r = c.post("/account", {"current_password": PASSWORD, "password": "short", "confirm": "short"})
    assert r.status_code == 422 and 'id="password-error"' in r.text
    r = c.post("/account", {"current_password": PASSWORD, "password": "brand-new-pass", "confirm": "other-new-pass"})
    assert r.status_code == 422 and 'id="confirm-error"' in r.text
    for _ in range(4):
        c.post("/account", {"current_password": "wrong-one", "password": "brand-new-pass", "confirm": "brand-new-pass"})
    r = c.post("/account", {"current_password": PASSWORD, "password": "brand-new-pass", "confirm": "brand-new-pass"})
    assert r.status_code == 429 and int(r.headers["Retry-After"]) > 0


def test_role_change_and_deactivation_end_the_users_sessions(sqlite_app):
    make_user(sqlite_app, ADMIN, "admin")
    uid = make_user(sqlite_app, MEMBER, "member")
    admin = Console(sqlite_app, ADMIN)
    member = Console(sqlite_app, MEMBER)
    admin.post(f"/users/{uid}", {"role": "viewer"})
    assert logged_out(member.client)
    member = Console(sqlite_app, MEMBER)
    admin.post(f"/users/{uid}", {"active": "0"})
    assert logged_out(member.client)
    assert not logged_out(admin.client)        # the admin's own session is untouched
    with sqlite_app.app_context():
        u = db.session.get(User, uid)
        assert u.role == "viewer" and not u.active


def test_a_team_change_keeps_the_session(sqlite_app):
    make_user(sqlite_app, ADMIN, "admin")
    uid = make_user(sqlite_app, MEMBER, "member")
    member = Console(sqlite_app, MEMBER)
    with sqlite_app.app_context():
        users.set_team(db.session.get(User, uid), None)
    assert not logged_out(member.client)


def test_a_session_without_a_version_is_refused(sqlite_app):
    """Cookies from before session versions, and forged ids, must log in again."""
    uid = make_user(sqlite_app, ADMIN, "admin")
    client = sqlite_app.test_client()
    with client.session_transaction() as s:
        s["_user_id"] = str(uid)
        s["_fresh"] = True
    assert logged_out(client)


def test_login_starts_a_new_csrf_token(sqlite_app):
    make_user(sqlite_app, ADMIN, "admin")
    c = Console(sqlite_app)
    before = c.token
    r = c.client.post("/login", data={"email": ADMIN, "password": PASSWORD, "csrf_token": before})
    assert r.status_code == 302
    after = csrf_from(c.client.get("/").text)
    assert after != before
    assert c.client.post("/keys", data={"name": "x", "csrf_token": before}).status_code == 403
    assert c.client.post("/keys", data={"name": "x", "csrf_token": after}).status_code == 200


def test_csrf_failures_answer_403(sqlite_app):
    make_user(sqlite_app, ADMIN, "admin")
    c = Console(sqlite_app, ADMIN)
    assert c.post("/keys", {"name": "x"}, csrf=False).status_code == 403
    r = c.client.post("/keys", data={"name": "x"}, headers={"HX-Request": "true", "X-CSRFToken": "forged"})
    assert r.status_code == 403 and "reload the page" in r.text


@pytest.mark.parametrize("headers", [
    {"Origin": "https://evil.example"},
    {"Origin": "null"},
    {"Origin": "http://localhost:8080"},        # another port is another origin
    {"Origin": "https://localhost"},            # and another scheme
    {"Referer": "https://evil.example/form"},   # no Origin: the Referer decides
])
def test_writes_from_a_foreign_origin_are_refused_even_with_a_valid_token(sqlite_app, headers):
    make_user(sqlite_app, ADMIN, "admin")
    c = Console(sqlite_app, ADMIN)
    r = c.post("/keys", {"name": "from elsewhere"}, headers=headers)
    assert r.status_code == 403
    r = c.post("/keys", {"name": "from elsewhere"}, headers={**headers, "HX-Request": "true"})
    assert r.status_code == 403 and "another site" in r.text
    with sqlite_app.app_context():
        assert db.session.scalar(select(ApiKey)) is None


@pytest.mark.parametrize("headers", [
    {"Origin": "http://localhost"}, {"Referer": "http://localhost/keys/new"}, {},
])
def test_writes_from_the_same_origin_pass(sqlite_app, headers):
    make_user(sqlite_app, ADMIN, "admin")
    c = Console(sqlite_app, ADMIN)
    assert c.post("/keys", {"name": "here"}, headers=headers).status_code == 200


def test_same_origin_follows_the_trusted_proxy(tmp_path):
    app = make_app(f"sqlite:///{tmp_path}/p.db", instance_path=str(tmp_path / "i"), TRUST_PROXY=True)
    make_user(app, ADMIN, "admin")
    fwd = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "gw.example.com"}
    c = Console(app)
    c.client.post("/login", data={"email": ADMIN, "password": PASSWORD, "csrf_token": c.token},
                  headers={**fwd, "Referer": "https://gw.example.com/login"})
    token = csrf_from(c.client.get("/", headers=fwd).text)
    ok = c.client.post("/keys", data={"name": "k", "csrf_token": token},
                       headers={**fwd, "Origin": "https://gw.example.com"})
    assert ok.status_code == 200
    bad = c.client.post("/keys", data={"name": "k", "csrf_token": token},
                        headers={**fwd, "Origin": "http://gw.example.com"})
    assert bad.status_code == 403
    # over https a browser always names where the request came from
    bare = c.client.post("/keys", data={"name": "k", "csrf_token": token}, headers=fwd)
    assert bare.status_code == 403
    via_referer = c.client.post("/keys", data={"name": "k", "csrf_token": token},
                                headers={**fwd, "Referer": "https://gw.example.com/keys/new"})
    assert via_referer.status_code == 200


def test_trusted_origins_setting(tmp_path):
    app = make_app(f"sqlite:///{tmp_path}/p.db", instance_path=str(tmp_path / "i"),
                   TRUSTED_ORIGINS="https://console.example.com, https://other.example.com:8443")
    make_user(app, ADMIN, "admin")
    c = Console(app, ADMIN)
    assert c.post("/keys", {"name": "k"}, headers={"Origin": "https://console.example.com"}).status_code == 200
    assert c.post("/keys", {"name": "k"}, headers={"Origin": "https://other.example.com:8443"}).status_code == 200
    assert c.post("/keys", {"name": "k"}, headers={"Origin": "https://evil.example.com"}).status_code == 403


def test_v1_is_not_origin_checked(sqlite_app):
    r = sqlite_app.test_client().post("/v1/chat/completions", headers={"Origin": "https://evil.example"},
                                      json={"model": "m", "messages": []})
    assert r.status_code == 401 and r.json["error"]["code"] == "invalid_api_key"

