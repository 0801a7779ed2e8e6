"""Helpers for console tests: users per role, logged-in test clients with their CSRF token."""
from __future__ import annotations

import re

from gateway.extensions import db
from gateway.services.admin import users

PASSWORD = "correct-horse-1"
_TOKEN = re.compile(r'name="csrf-token" content="([^"]+)"|name="csrf_token" value="([^"]+)"')


def csrf_from(html: str) -> str:
    m = _TOKEN.search(html)
    assert m, "no CSRF token in the page"
    return m.group(1) or m.group(2)


def make_user(app, email: str, role: str, team_id: int | None = None) -> int:
    with app.app_context():
        u = users.create_user(email, PASSWORD, role)
        if team_id is not None:
            u.team_id = team_id
            db.session.commit()
        return u.id


class Console:
    """A test client logged in as one user; post() adds the CSRF token like the pages do."""

    def __init__(self, app, email: str | None = None, password: str = PASSWORD):
        self.client = app.test_client()
        self.token = csrf_from(self.client.get("/login").text)
        if email:
            r = self.client.post("/login", data={"email": email, "password": password, "csrf_token": self.token})
            assert r.status_code == 302, r.text[:500]
            self.token = csrf_from(self.client.get("/").text)     # a login starts a new CSRF token

    def get(self, url: str, **kw):
        return self.client.get(url, **kw)

    def post(self, url: str, data=None, htmx: bool = False, csrf: bool = True, **kw):
        headers = dict(kw.pop("headers", {}))
        if htmx:
            headers["HX-Request"] = "true"
        if csrf and "json" in kw:
            headers["X-CSRFToken"] = self.token
        elif csrf:
            data = dict(data or {}, csrf_token=self.token)
        return self.client.post(url, data=data, headers=headers, **kw)
