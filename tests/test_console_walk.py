"""Every console route, found in app.url_map (so pages added later are covered without editing
this file): anonymous users go to the login page, each role gets what its view's
`required_roles` allows and a refused write changes nothing, every write without its CSRF token
is refused, and no page shows a user-editable name unescaped. The walk (URL parameters, seeded
objects, the database snapshot) is tests/console_walk.py; bench/console_pages.py times it."""
from __future__ import annotations

import re
import subprocess
import sys

import pytest
from flask import url_for

from gateway.console.scope import NAV
from tests.console_client import Console
from tests.console_walk import (FIELDS, NOT_SHOWN_YET, RAW_MARKER, UnknownParameter, changed, console_rules,
                                escaped_markers, get_pages, hostile, methods, seed, snapshot, url_for_rule)
from tests.helpers import ROOT

# Query parameters the pages read (filters, search, pagination); hostile values in them must
# come back escaped too.
QUERY_ARGS = ("model", "provider", "tag", "tag_key", "status", "group", "range", "q", "action", "actor", "source",
              "state", "team", "plan", "page", "key_id", "user_id", "team_id", "start", "end", "sort", "month")


@pytest.fixture
def world(app):
    return seed(app)


def _post(console: Console, url: str, csrf: bool = True):
    """An empty write, as a form (the playground's stream takes JSON)."""
    if "playground" in url:
        return console.post(url, json={}, csrf=csrf)
    return console.post(url, csrf=csrf)


def _html(response) -> bool:
    return response.mimetype == "text/html"


def test_every_console_url_parameter_is_registered(app, world):
    problems = []
    for rule in console_rules(app):
        try:
            url_for_rule(app, rule, world)
        except UnknownParameter as e:
            problems.append(str(e))
    assert not problems, "\n".join(problems)


def test_every_console_view_checks_a_role(app):
    missing = [r.endpoint for r in console_rules(app)
               if not getattr(app.view_functions[r.endpoint], "required_roles", None)]
    assert not missing, f"console views without @require_role(...) from gateway/auth/rbac.py: {missing}"


def test_anonymous_users_are_sent_to_login_and_change_nothing(app, world):
    c = Console(app)        # holds a CSRF token, so the login check is what refuses
    before = snapshot(app)
    for rule in console_rules(app):
        url = url_for_rule(app, rule, world)
        for method in methods(rule):
            if method == "GET":
                r = c.get(url)
                assert r.status_code == 302 and "/login" in r.headers["Location"], (url, r.status_code)
                r = c.get(url, headers={"HX-Request": "true"})
                assert r.status_code == 401 and "/login" in r.headers["HX-Redirect"], (url, r.status_code)
            else:
                r = _post(c, url)
                assert r.status_code in (302, 401), (url, r.status_code)
                if r.status_code == 302:
                    assert "/login" in r.headers["Location"], url
                assert _post(c, url, csrf=False).status_code in (400, 401, 403), url
    assert changed(before, snapshot(app)) == []


@pytest.mark.parametrize("role", ["admin", "member", "viewer"])
def test_each_role_gets_what_required_roles_allows(sqlite_app, role):
    """Allowed or 403 as the view's required_roles say (nav_links reads the same attribute);
    never a server error; a refused write, and any write by a viewer, changes nothing."""
    app = sqlite_app
    w = seed(app)
    c = Console(app, f"{role}@example.com")
    for rule in console_rules(app):
        allowed = role in app.view_functions[rule.endpoint].required_roles
        url = url_for_rule(app, rule, w)
        for method in methods(rule):
            before = snapshot(app) if method == "POST" and (role == "viewer" or not allowed) else None
            r = c.get(url) if method == "GET" else _post(c, url)
            assert r.status_code < 500, (role, method, url, r.status_code, r.get_data(as_text=True)[:300])
            if allowed:
                assert r.status_code != 403, (role, method, url)
            else:
                assert r.status_code == 403, (role, method, url, r.status_code)
            if before is not None:
                assert changed(before, snapshot(app)) == [], (role, method, url)


@pytest.mark.parametrize("role", ["admin", "member", "viewer"])
def test_navigation_shows_each_role_the_pages_it_may_open(sqlite_app, role):
    """scope.NAV links appear exactly for the roles their page's view allows, and each opens."""
    app = sqlite_app
    seed(app)
    c = Console(app, f"{role}@example.com")
    page = c.get("/").get_data(as_text=True)
    nav = page[page.index('<nav aria-label="Main">'):page.index("</nav>")]
    with app.test_request_context():
        for link in NAV:
            allowed = role in app.view_functions[link.endpoint].required_roles
            href = f'href="{url_for(link.endpoint)}"'
            assert (href in nav) == allowed, (role, link.endpoint)
            if allowed:
                assert c.get(url_for(link.endpoint)).status_code == 200, (role, link.endpoint)


def test_every_write_without_its_csrf_token_is_refused_and_changes_nothing(app, world):
    c = Console(app, "admin@example.com")
    before = snapshot(app)
    for rule in console_rules(app):
        if "POST" not in rule.methods:
            continue
        url = url_for_rule(app, rule, world)
        for r in (_post(c, url, csrf=False),
                  c.client.post(url, data={"csrf_token": "forged"}),
                  c.client.post(url, headers={"HX-Request": "true", "X-CSRFToken": "forged"})):
            # flask-wtf's CSRFError, answered by auth/security.py's handler as 403 "Form expired"
            assert r.status_code in (400, 403), (url, r.status_code)
            assert "stale" in r.get_data(as_text=True), url     # not the role check's 403
    assert changed(before, snapshot(app)) == []


def test_no_page_shows_a_user_string_unescaped(app):
    """Every user-editable name is hostile; every GET page, full and as its htmx partial, with
    hostile filter arguments too, escapes them all, and each name is shown somewhere."""
    w = seed(app, bad_names=True)
    c = Console(app, "admin@example.com")
    seen = {field: [] for field in FIELDS}
    args = {name: hostile("query") for name in QUERY_ARGS}
    for endpoint, url in get_pages(app, w):
        for headers, query in (({}, None), ({"HX-Request": "true"}, None), ({}, args)):
            r = c.get(url, headers=headers, query_string=query)
            assert r.status_code < 500, (endpoint, url, query is not None, r.status_code)
            if not _html(r):
                continue        # downloads (csv, xlsx) are no HTML
            body = r.get_data(as_text=True)
            assert RAW_MARKER not in body, (endpoint, url, headers, query is not None,
                                            body[max(0, body.find(RAW_MARKER) - 200):body.find(RAW_MARKER) + 100])
            for field in FIELDS:
                if any(m in body for m in escaped_markers(field)):
                    seen[field].append(endpoint)
    unseen = [f for f, pages in seen.items() if not pages and f not in NOT_SHOWN_YET]
    assert not unseen, f"seeded names no page shows (the check would prove nothing): {unseen}"


def test_the_console_page_benchmark_runs_on_a_small_seed(tmp_path):
    out = subprocess.run([sys.executable, "bench/console_pages.py", "--records", "500", "--runs", "1",
                          "--dir", str(tmp_path)], check=False, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "| console.usage |" in out.stdout and "statements" in out.stdout and "slowest:" in out.stdout


@pytest.mark.parametrize("role, menus, plain", [
    ("admin", {"Configure": ["Providers", "Routing", "Teams"], "Admin": ["Users", "Audit", "Settings"]}, []),
    ("viewer", {"Configure": ["Providers", "Routing", "Teams"]}, []),
    ("member", {}, ["Teams"]),                 # a menu of one link stays a plain link
])
def test_the_top_bar_gathers_setup_and_admin_pages_into_menus(sqlite_app, role, menus, plain):
    """Thirteen links wrapped the top bar at 1360 px: the setup and admin pages sit in two menus,
    each holding only the links the role may open."""
    app = sqlite_app
    seed(app)
    page = Console(app, f"{role}@example.com").get("/routing/deployments" if role != "member" else "/keys")
    html = page.get_data(as_text=True)
    nav = html[html.index('<nav aria-label="Main">'):html.index("</nav>")]
    found = {m.group(1): re.findall(r">([^<]+)</a>", m.group(2))
             for m in re.finditer(r"<summary>([^<]+)</summary>(.*?)</details>", nav, re.DOTALL)}
    assert found == menus
    outside = re.sub(r"<details.*?</details>", "", nav, flags=re.DOTALL)
    for label in plain:
        assert f">{label}</a>" in outside
    if role != "member":
        assert 'class="nav-menu current"><summary>Configure' in nav     # the menu of the page shown is marked
