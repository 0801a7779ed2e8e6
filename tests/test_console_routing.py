"""Routing pages: deployments, aliases with their history and rollback, policies. RBAC for
admin, member and viewer, CSRF, escaping, validation next to the field, audit rows."""
from __future__ import annotations

import re

import pytest
from console_client import Console, make_user
from sqlalchemy import select

from gateway.extensions import db
from gateway.models import Alias, AliasVersion, AuditLog, Deployment, Policy
from gateway.services.admin import catalog_admin, declarative
from tests.helpers import add_provider

EVIL = "<script>alert(1)</script>"
PAGES = ("/routing/deployments", "/routing/aliases", "/routing/policies")


@pytest.fixture
def site(app):
    """Admin, member and viewer; a mock provider serving m1 and m2; an alias and a policy."""
    for role in ("admin", "member", "viewer"):
        make_user(app, f"{role}@example.com", role)
    add_provider(app, "mockp", "mock", None, ["m1=echo", "m2=echo"])
    with app.app_context():
        catalog_admin.set_alias("stable", "m1", actor="setup")
        catalog_admin.save_policy("split", candidates=["m1"])
        catalog_admin.set_alias("smart", "policy:split")
        app.ids = {"deployment": db.session.scalar(select(Deployment.id).where(Deployment.model == "m1")),
                   "policy": db.session.scalar(select(Policy.id))}
    return app


def admin(app) -> Console:
    return Console(app, "admin@example.com")


def audit_rows(app, action: str) -> list[AuditLog]:
    with app.app_context():
        rows = db.session.scalars(select(AuditLog).where(AuditLog.action == action).order_by(AuditLog.id)).all()
        db.session.expunge_all()
        return rows


def deployment_form(**over) -> dict:
    form = {"provider": "mockp", "model": "fresh", "upstream_model": "echo", "mode": "chat", "weight": "2",
            "region": "eu-west-1", "input_per_1k": "0.00015", "output_per_1k": "0.0006", "context_window": "8000",
            "rpm_limit": "60", "tpm_limit": "", "capabilities": ["tools", "json"], "enabled": "on"}
    return {**form, **over}


def writes(app) -> list[tuple[str, dict]]:
    d, p = app.ids["deployment"], app.ids["policy"]
    return [("/routing/deployments", deployment_form()), (f"/routing/deployments/{d}", deployment_form(model="m1")),
            (f"/routing/deployments/{d}/enabled", {}), ("/routing/aliases", {"name": "x", "target": "m2"}),
            ("/routing/aliases/rollback", {"name": "stable"}), ("/routing/policies", {"name": "p2"}),
            (f"/routing/policies/{p}", {"strategy": "cost"}), ("/routing/aliases/delete", {"name": "stable"}),
            (f"/routing/policies/{p}/delete", {}), (f"/routing/deployments/{d}/delete", {})]


def test_anonymous_users_go_to_the_login_page(site):
    c = Console(site)
    for url in (*PAGES, "/routing/deployments/new", "/routing/aliases/history?name=stable", "/routing/policies/new"):
        r = c.get(url)
        assert r.status_code == 302 and "/login" in r.headers["Location"], url
    for url, data in writes(site):
        r = c.post(url, data)
        assert r.status_code == 302 and "/login" in r.headers["Location"], url


def test_members_see_no_routing_pages_and_change_nothing(site):
    c = Console(site, "member@example.com")
    assert ">Routing<" not in c.get("/").text
    for url in (*PAGES, "/routing/deployments/new", "/routing/aliases/history?name=stable",
                f"/routing/deployments/{site.ids['deployment']}/edit", "/routing/policies/new"):
        assert c.get(url).status_code == 403, url
    for url, data in writes(site):
        assert c.post(url, data).status_code == 403, url


def test_viewers_read_every_page_but_change_nothing(site):
    c = Console(site, "viewer@example.com")
    assert ">Routing<" in c.get("/").text
    for url in PAGES:
        page = c.get(url)
        assert page.status_code == 200 and "<html" in page.text, url
        assert "Add deployment" not in page.text and "Roll back" not in page.text and ">Edit<" not in page.text
    assert "m1" in c.get("/routing/aliases/history?name=stable").text
    for url in ("/routing/deployments/new", f"/routing/deployments/{site.ids['deployment']}/edit",
                "/routing/policies/new", f"/routing/policies/{site.ids['policy']}/edit"):
        assert c.get(url).status_code == 403, url
    for url, data in writes(site):
        assert c.post(url, data).status_code == 403, url
    with site.app_context():
        assert db.session.scalar(select(Alias.target).where(Alias.name == "stable")) == "m1"


def test_every_routing_write_needs_the_csrf_token(site):
    c = admin(site)
    for url, data in writes(site):
        assert c.post(url, data, csrf=False).status_code == 403, url
        assert c.client.post(url, data={**data, "csrf_token": "forged"}).status_code == 403, url
    with site.app_context():
        assert db.session.scalar(select(Alias.target).where(Alias.name == "stable")) == "m1"
        assert db.session.scalar(select(Policy.strategy)) == "weighted"


def test_admin_adds_edits_disables_and_deletes_a_deployment(site):
    c = admin(site)
    assert c.get("/routing/deployments/new").status_code == 200
    r = c.post("/routing/deployments", deployment_form())
    assert r.status_code == 303 and r.headers["Location"].endswith("/routing/deployments")
    with site.app_context():
        d = db.session.scalar(select(Deployment).where(Deployment.model == "fresh"))
        assert (d.upstream_model, d.weight, d.region, d.input_per_1k, d.context_window, d.rpm_limit, d.tpm_limit,
                d.capabilities, d.enabled, d.source) == ("echo", 2, "eu-west-1", 0.00015, 8000, 60, None,
                                                         ["json", "tools"], True, "console")
        dep_id = d.id
    page = c.get("/routing/deployments").text
    assert "$0.00015 in" in page and "$0.0006 out" in page and "1.5e-04" not in page and "8,000" in page
    assert "state-unknown" in page          # the live status, no traffic yet
    assert "alias stable" in page and "The alias(es) stable point at m1." in page
    [row] = audit_rows(site, "deployment.create")
    assert row.target == "mockp/fresh" and row.details["weight"] == 2 and row.details["deployment_id"] == dep_id
    edit = c.get(f"/routing/deployments/{dep_id}/edit").text
    assert 'value="0.00015"' in edit and 'value="8000"' in edit
    r = c.post(f"/routing/deployments/{dep_id}", deployment_form(upstream_model="echo+latency=1", weight="5",
                                                                 capabilities=[], enabled=""))
    assert r.status_code == 303
    with site.app_context():
        d = db.session.get(Deployment, dep_id)
        assert (d.upstream_model, d.weight, d.enabled) == ("echo+latency=1", 5, False)
    [row] = audit_rows(site, "deployment.update")
    assert row.details["weight"] == [2, 5] and row.details["upstream_model"] == ["echo", "echo+latency=1"]
    assert "model" not in row.details       # unchanged fields are not repeated
    assert c.post(f"/routing/deployments/{dep_id}/enabled").status_code == 303
    assert [r.target for r in audit_rows(site, "deployment.enable")] == ["mockp/fresh"]
    r = c.post(f"/routing/deployments/{dep_id}/delete", htmx=True)
    assert r.status_code == 204 and r.headers["HX-Redirect"].endswith("/routing/deployments")
    with site.app_context():
        assert db.session.get(Deployment, dep_id) is None
    assert audit_rows(site, "deployment.delete")[0].details["upstream_model"] == "echo+latency=1"


@pytest.mark.parametrize("field, value, message", [
    ("weight", "-1", "0 or more"), ("weight", "1.5", "whole number"), ("rpm_limit", "abc", "whole number"),
    ("tpm_limit", "0", "at least 1"), ("context_window", "nan", "whole number"), ("input_per_1k", "-0.1", "0 or more"),
    ("output_per_1k", "cheap", "a number"), ("provider", "nowhere", "no provider"), ("model", "two words", "no spaces"),
    ("mode", "telepathy", "mode must be one of"), ("upstream_model", "echo", "already serves"),
    ("price_unit", "", "per"), ("unit_price", "-2", "0 or more")])
def test_deployment_errors_show_next_to_the_field(site, field, value, message):
    c = admin(site)
    form = deployment_form(**{field: value})
    if field == "upstream_model":
        form["model"] = "m1"            # mockp serves m1 as echo already
    if field in ("price_unit", "unit_price"):
        form.update(unit_price=form.get("unit_price") if field == "unit_price" else "0.04",
                    price_unit="image" if field == "unit_price" else "")
    r = c.post("/routing/deployments", form)
    assert r.status_code == 422, (field, r.text[:300])
    assert f'id="{field}-error"' in r.text and message in r.text, (field, r.text)
    assert f'aria-describedby="{field}-error"' in r.text
    with site.app_context():
        assert db.session.scalar(select(Deployment).where(Deployment.model == "fresh")) is None
    assert not audit_rows(site, "deployment.create")


def test_alias_switch_history_and_one_click_rollback(site):
    c = admin(site)
    r = c.post("/routing/aliases", {"name": "stable", "target": "m2", "back": "history"})
    assert r.status_code == 303 and "/routing/aliases/history?name=stable" in r.headers["Location"]
    page = c.get("/routing/aliases/history?name=stable").text
    assert "Roll back to m1" in page
    assert c.post("/routing/aliases/rollback", {"name": "stable"}).status_code == 303
    with site.app_context():
        assert db.session.scalar(select(Alias.target).where(Alias.name == "stable")) == "m1"
        history = [(v.change, v.target, v.previous_target, v.actor, v.source) for v in catalog_admin.alias_history("stable")]
    assert history == [("rollback", "m1", "m2", "admin@example.com", "console"),
                       ("set", "m2", "m1", "admin@example.com", "console"), ("set", "m1", None, "setup", "cli")]
    page = c.get("/routing/aliases/history?name=stable").text
    assert page.count("<tr>") == 1 + 3 and "rollback" in page and "Roll back to m2" in page
    assert "Use m2 again" in page and "Use m1 again" not in page        # any earlier version, in one click
    assert c.post("/routing/aliases", {"name": "stable", "target": "m2", "back": "history"}).status_code == 303
    assert c.post("/routing/aliases/rollback", {"name": "stable"}).status_code == 303
    [switch, _] = audit_rows(site, "alias.set")
    assert (switch.target, switch.details) == ("stable", {"target": "m2", "previous_target": "m1"})
    back = audit_rows(site, "alias.rollback")
    assert [b.details for b in back] == [{"target": "m1", "previous_target": "m2"}] * 2


def test_alias_targets_must_exist_and_not_loop(site):
    c = admin(site)
    assert c.post("/routing/aliases", {"name": "other", "target": "stable"}).status_code == 303   # alias of an alias
    for data, field, message in [
            ({"name": "new", "target": "nope"}, "target", "No deployment serves"),
            ({"name": "new", "target": "policy:nope"}, "target", "no routing policy"),
            ({"name": "stable", "target": "other"}, "target", "loop"),
            ({"name": "new", "target": ""}, "target", "target"),
            ({"name": "", "target": "m1"}, "name", "needs a name"),
            ({"name": "two words", "target": "m1"}, "name", "no spaces")]:
        r = c.post("/routing/aliases", data)
        assert r.status_code == 422 and f'id="{field}-error"' in r.text and message in r.text, (data, r.text)
    r = c.post("/routing/aliases", {"name": "stable", "target": "nope", "back": "history"})
    assert r.status_code == 422 and 'id="target-error"' in r.text and "History" in r.text
    assert c.post("/routing/aliases", {"name": "smarter", "target": "policy:split"}).status_code == 303
    assert c.post("/routing/aliases", {"name": "fast", "target": "policy:latency-optimized"}).status_code == 303
    with site.app_context():
        assert db.session.scalar(select(Alias.target).where(Alias.name == "stable")) == "m1"


def test_rollback_without_an_earlier_target_and_delete(site):
    c = admin(site)
    r = c.post("/routing/aliases/rollback", {"name": "stable"})
    assert r.status_code == 422 and 'id="rollback-error"' in r.text and "no earlier target" in r.text
    assert c.post("/routing/aliases/delete", {"name": "stable"}).status_code == 303
    assert c.post("/routing/aliases/delete", {"name": "stable"}).status_code == 404
    assert audit_rows(site, "alias.delete")[0].details == {"previous_target": "m1"}
    page = c.get("/routing/aliases").text
    assert "Deleted, with a history" in page and "history?name=stable" in page
    assert "Deleted." in c.get("/routing/aliases/history?name=stable").text
    assert c.post("/routing/aliases/rollback", {"name": "stable"}).status_code == 303     # it comes back
    with site.app_context():
        assert db.session.scalar(select(Alias.target).where(Alias.name == "stable")) == "m1"
    assert c.get("/routing/aliases/history?name=never").status_code == 404


def test_every_source_writes_the_alias_history(site):
    with site.app_context():
        declarative.apply({"aliases": {"stable": {"target": "m2"}}}, out=lambda *_: None)
    assert site.test_cli_runner().invoke(args=["aliases", "set", "stable", "m1"]).exit_code == 0
    with site.app_context():
        declarative.apply({}, out=lambda *_: None)      # the file no longer names it: the CLI's row stays
        rows = db.session.scalars(select(AliasVersion).where(AliasVersion.alias == "stable")
                                  .order_by(AliasVersion.id)).all()
        assert [(v.target, v.source) for v in rows] == [("m1", "cli"), ("m2", "config"), ("m1", "cli")]
        declarative.apply({"aliases": {"gone": {"target": "m2"}}}, out=lambda *_: None)
        declarative.apply({}, out=lambda *_: None)
        gone = catalog_admin.alias_history("gone")
        assert [(v.change, v.target, v.previous_target, v.source) for v in gone] == [
            ("delete", None, "m2", "config"), ("set", "m2", None, "config")]
    page = admin(site).get("/routing/aliases/history?name=stable").text
    assert "config" in page and "cli:" in page


def test_gateway_yaml_aliases_and_policies_may_name_each_other_in_any_order(site):
    with site.app_context():
        declarative.apply({"aliases": {"front": {"target": "policy:later"}, "nick": {"target": "m2"}},
                           "policies": {"later": {"candidates": ["nick"], "strategy": "cost"}}}, out=lambda *_: None)
        assert db.session.scalar(select(Alias.target).where(Alias.name == "front")) == "policy:later"
        with pytest.raises(declarative.ConfigError, match="aliases.bad: No deployment serves 'nope'"):
            declarative.apply({"aliases": {"bad": {"target": "nope"}}}, out=lambda *_: None)


def policy_form(**over) -> dict:
    form = {"name": "exp", "strategy": "cost", "candidates": ["m1", "stable"], "weight_m1": "3", "weight_stable": "",
            "regions": "eu, us-east", "capabilities": ["tools"], "sticky": "user", "ab_model": "m2",
            "ab_percent": "25", "shadow_model": "m2", "shadow_percent": "5", "redact": "store", "cache_ttl": "60",
            "enabled": "on"}
    return {**form, **over}


def test_admin_creates_edits_and_deletes_a_policy(site):
    c = admin(site)
    new = c.get("/routing/policies/new").text
    assert 'value="m1"' in new and 'value="stable"' in new      # models and aliases as candidates
    r = c.post("/routing/policies", policy_form())
    assert r.status_code == 303, r.text
    with site.app_context():
        p = db.session.scalar(select(Policy).where(Policy.name == "exp"))
        assert (p.strategy, p.candidates, p.weights, p.regions, p.capabilities, p.sticky, p.ab, p.shadow, p.redact,
                p.cache_ttl, p.enabled, p.source) == (
            "cost", ["m1", "stable"], {"m1": 3}, ["eu", "us-east"], ["tools"], "user", {"model": "m2", "percent": 25.0},
            {"model": "m2", "percent": 5.0}, "store", 60, True, "console")
        pid = p.id
    [row] = audit_rows(site, "policy.create")
    assert row.target == "exp" and row.details["ab"] == {"model": "m2", "percent": 25.0}
    page = c.get("/routing/policies").text
    assert "m2 · 25.0%" in page and "m1 ×3" in page and "policy:latency-optimized" in page
    edit = c.get(f"/routing/policies/{pid}/edit").text
    assert 'value="25"' in edit and 'name="weight_m1" value="3"' in edit
    r = c.post(f"/routing/policies/{pid}", policy_form(name="ignored", ab_model="", ab_percent="", strategy="latency"))
    assert r.status_code == 303
    with site.app_context():
        p = db.session.get(Policy, pid)
        assert (p.name, p.strategy, p.ab) == ("exp", "latency", None)
    [row] = audit_rows(site, "policy.update")
    assert row.details["strategy"] == ["cost", "latency"] and row.details["ab"] == [{"model": "m2", "percent": 25.0}, None]
    assert c.post("/routing/aliases", {"name": "uses", "target": "policy:exp"}).status_code == 303
    r = c.post(f"/routing/policies/{pid}/delete")
    assert r.status_code == 422 and "uses" in r.text and 'id="policy-error"' in r.text
    assert c.post("/routing/aliases/delete", {"name": "uses"}).status_code == 303
    assert c.post(f"/routing/policies/{pid}/delete").status_code == 303
    assert [r.target for r in audit_rows(site, "policy.delete")] == ["exp"]


@pytest.mark.parametrize("over, field, message", [
    ({"candidates": ["m1", "ghost"]}, "candidates", "no deployment serves &#39;ghost&#39;"),
    ({"ab_percent": "150"}, "ab_percent", "from 0 to 100"),
    ({"ab_percent": "lots"}, "ab_percent", "from 0 to 100"),
    ({"shadow_percent": "-1"}, "shadow_percent", "from 0 to 100"),
    ({"ab_model": "ghost"}, "ab_model", "no deployment serves &#39;ghost&#39;"),
    ({"ab_model": "", "ab_percent": "10"}, "ab_model", "needs a model"),
    ({"shadow_model": "smart"}, "shadow_model", "no policies in policies"),
    ({"weight_m1": "0"}, "weights", "positive whole number"),
    ({"weight_m1": "-2"}, "weights", "positive whole number"),
    ({"weight_m1": "heavy"}, "weights", "positive whole number"),
    ({"strategy": "vibes"}, "strategy", "strategy must be one of"),
    ({"redact": "sometimes"}, "redact", "redact must be one of"),
    ({"cache_ttl": "soon"}, "cache_ttl", "whole number of seconds"),
    ({"name": "split"}, "name", "exists already"),
    ({"name": "cost-optimized"}, "name", "built in"),
    ({"name": ""}, "name", "needs a name"),
])
def test_policy_errors_show_next_to_the_field(site, over, field, message):
    r = admin(site).post("/routing/policies", policy_form(**over))
    assert r.status_code == 422, (over, r.text[:200])
    assert f'id="{field}-error"' in r.text and message in r.text, (over, r.text)
    with site.app_context():
        assert db.session.scalar(select(Policy).where(Policy.name == "exp")) is None
    assert not audit_rows(site, "policy.create")


def test_user_strings_are_escaped_on_every_page(site):
    add_provider(site, EVIL, "mock", None, [f"{EVIL}=echo"])
    c = admin(site)
    assert c.post("/routing/aliases", {"name": EVIL, "target": "m1"}).status_code == 303
    assert c.post("/routing/aliases", {"name": "to-evil", "target": EVIL}).status_code == 303
    assert c.post("/routing/policies", policy_form(name=EVIL, candidates=[EVIL], sticky=EVIL, regions=EVIL,
                                                   ab_model=EVIL, shadow_model=EVIL)).status_code == 303
    with site.app_context():
        ids = (db.session.scalar(select(Deployment.id).where(Deployment.model == EVIL)),
               db.session.scalar(select(Policy.id).where(Policy.name == EVIL)))
    for url in (*PAGES, f"/routing/deployments/{ids[0]}/edit", f"/routing/policies/{ids[1]}/edit",
                "/routing/policies/new", f"/routing/aliases/history?name={EVIL}", "/routing/deployments/new"):
        page = c.get(url).text
        assert EVIL not in page and "&lt;script&gt;" in page, url
    r = c.post("/routing/aliases", {"name": EVIL, "target": "<b>nope</b>"})
    assert r.status_code == 422 and "<b>nope</b>" not in r.text and "&lt;b&gt;nope&lt;/b&gt;" in r.text


def test_routing_pages_carry_the_csp_and_no_inline_script_or_style(site):
    c = admin(site)
    for url in (*PAGES, "/routing/deployments/new", f"/routing/deployments/{site.ids['deployment']}/edit",
                "/routing/aliases/history?name=stable", "/routing/policies/new",
                f"/routing/policies/{site.ids['policy']}/edit"):
        r = c.get(url)
        assert r.status_code == 200 and "script-src 'self'" in r.headers["Content-Security-Policy"], url
        for tag in re.findall(r"<script\b[^>]*>", r.text):
            assert "src=" in tag, (url, tag)
        assert not re.search(r"\sstyle=|\son[a-z]+=", r.text), url
