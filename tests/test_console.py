"""The admin console: RBAC on every route, CSRF, secrets never shown, escaping, the main flows."""
from __future__ import annotations

import io
import re
from datetime import timedelta

import pytest
from sqlalchemy import insert, select

from tests.helpers import add_provider, usage_records
from console_client import Console, make_user
from gateway.extensions import db
from gateway.models import ApiKey, AuditLog, Provider, UsageRecord, utcnow
from gateway.services.accounting import keys

ROLES = ("admin", "member", "viewer")
A, M, V = "admin", "member", "viewer"
# Who may use each console endpoint. A new route fails test_every_console_route_is_classified.
ALLOWED = {
    "console.index": {A, M, V}, "console.marketplace": {A, M, V}, "console.model_detail": {A, M, V},
    "console.price_update": {A},
    "console.providers_index": {A, V}, "console.provider_new": {A}, "console.provider_create": {A},
    "console.provider_edit": {A}, "console.provider_update": {A}, "console.provider_toggle": {A},
    "console.provider_delete": {A}, "console.provider_test": {A}, "console.deployment_toggle": {A},
    "console.keys_index": {A, M, V}, "console.key_new": {A, M}, "console.key_create": {A, M},
    "console.key_detail": {A, M, V}, "console.key_edit": {A, M}, "console.key_update": {A, M},
    "console.key_disable": {A, M}, "console.key_enable": {A, M}, "console.key_revoke": {A, M},
    "console.key_rotate": {A, M}, "console.key_delete": {A, M}, "console.keys_batch": {A, M},
    "console.usage": {A, M, V}, "console.logs": {A, M, V}, "console.log_detail": {A, M, V},
    "console.export": {A, M, V}, "console.usage_report": {A, M, V},
    "console.users_index": {A}, "console.user_create": {A}, "console.user_update": {A},
    "console.audit_index": {A}, "console.audit_export": {A}, "console.settings_page": {A},
    "console.playground": {A, M}, "console.playground_stream": {A, M},
    "console.account": {A, M, V},
    "console.simulator_page": {A, V}, "console.simulator_run": {A, V},
    "console.alerts_index": {A, M, V}, "console.alert_acknowledge": {A}, "console.alerts_acknowledge_all": {A},
    "console.teams_index": {A, M, V}, "console.team_detail": {A, M, V}, "console.team_new": {A},
    "console.team_create": {A}, "console.team_edit": {A}, "console.team_update": {A},
    "console.team_member_add": {A}, "console.team_member_remove": {A}, "console.team_delete": {A},
    "console.plans_index": {A, V}, "console.plan_new": {A}, "console.plan_create": {A}, "console.plan_edit": {A},
    "console.plan_update": {A}, "console.plan_delete": {A},
    "console.tag_budgets_index": {A, V}, "console.tag_budget_new": {A}, "console.tag_budget_create": {A},
    "console.tag_budget_edit": {A}, "console.tag_budget_update": {A}, "console.tag_budget_delete": {A},
    "console.routing_deployments": {A, V}, "console.routing_deployment_new": {A},
    "console.routing_deployment_create": {A}, "console.routing_deployment_edit": {A},
    "console.routing_deployment_update": {A}, "console.routing_deployment_toggle": {A},
    "console.routing_deployment_delete": {A}, "console.routing_aliases": {A, V}, "console.routing_alias_set": {A},
    "console.routing_alias_history": {A, V}, "console.routing_alias_rollback": {A},
    "console.routing_alias_delete": {A}, "console.routing_policies": {A, V}, "console.routing_policy_new": {A},
    "console.routing_policy_create": {A}, "console.routing_policy_edit": {A}, "console.routing_policy_update": {A},
    "console.routing_policy_delete": {A},
}
SECRET = "sk-live-SUPERSECRET-provider-9z8y"


def console_rules(app):
    return [r for r in app.url_map.iter_rules() if r.endpoint.startswith("console.")]


@pytest.fixture
def seeded(app):
    """One of everything, owned so that the member's own key is id 1."""
    from gateway.models import Team
    with app.app_context():
        team = Team(name="red")
        db.session.add(team)
        db.session.commit()
        team_id = team.id
    ids = {r: make_user(app, f"{r}@example.com", r, team_id if r == "member" else None) for r in ROLES}
    add_provider(app, "mockp", "mock", None, ["demo-chat"], api_key=SECRET)
    with app.app_context():
        mine, _ = keys.create_key("member key", user_id=ids["member"], team_id=team_id)
        other, _ = keys.create_key("admin key", user_id=ids["admin"])
        db.session.execute(insert(UsageRecord), [
            dict(request_id="r1", endpoint="chat", status=200, key_id=mine.id, key_prefix=mine.prefix,
                 user_id=ids["member"], requested_model="demo-chat", provider="mockp", total_tokens=10,
                 prompt_tokens=4, completion_tokens=6, cost_usd=0.5, latency_ms=100, created_at=utcnow(), tags={}, attempts=[]),
            dict(request_id="r2", endpoint="chat", status=502, key_id=other.id, key_prefix=other.prefix,
                 user_id=ids["admin"], requested_model="demo-chat", provider="mockp", total_tokens=20,
                 prompt_tokens=20, completion_tokens=0, cost_usd=1.25, latency_ms=300, created_at=utcnow(), tags={}, attempts=[]),
        ])
        db.session.commit()
        return {"users": ids, "mine": mine.id, "other": other.id, "team": team_id}


def test_every_console_route_is_classified(app):
    """ALLOWED is what each route should allow; its view's required_roles what it does (the walk in
    test_console_walk.py checks every route against required_roles over HTTP)."""
    assert {r.endpoint for r in console_rules(app)} == set(ALLOWED)
    declared = {r.endpoint: set(app.view_functions[r.endpoint].required_roles) for r in console_rules(app)}
    assert declared == ALLOWED


def test_csrf_rejected_on_console_writes(sqlite_app):
    make_user(sqlite_app, "admin@example.com", "admin")
    c = Console(sqlite_app, "admin@example.com")
    assert c.post("/keys", {"name": "x"}, csrf=False).status_code == 403
    assert c.client.post("/keys", data={"name": "x", "csrf_token": "forged"}).status_code == 403
    r = c.client.post("/keys", data={"name": "x"}, headers={"HX-Request": "true", "X-CSRFToken": "forged"})
    assert r.status_code == 403
    r = c.client.post("/playground/stream", json={"model": "m", "prompt": "hi"})
    assert r.status_code == 403
    with sqlite_app.app_context():
        assert db.session.scalar(select(ApiKey)) is None
    assert c.client.post("/keys", data={"name": "x"}, headers={"X-CSRFToken": c.token}).status_code == 200


def test_v1_api_is_not_subject_to_csrf(sqlite_app):
    add_provider(sqlite_app, "mockp", "mock", None, ["demo-chat"])
    with sqlite_app.app_context():
        _, secret = keys.create_key("k")
    r = sqlite_app.test_client().post("/v1/chat/completions", headers={"Authorization": f"Bearer {secret}"},
                                      json={"model": "demo-chat", "messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 200


def test_member_sees_only_own_and_team_keys_and_usage(app, seeded):
    c = Console(app, "member@example.com")
    page = c.get("/keys").text
    assert "member key" in page and "admin key" not in page
    assert c.get(f"/keys/{seeded['other']}").status_code == 404
    assert c.post(f"/keys/{seeded['other']}/delete").status_code == 404
    usage = c.get("/usage?range=24h").text
    assert 'id="total-requests">1<' in usage
    logs = c.get("/logs").text
    assert logs.count('class="log-row') == 1
    csv = c.get("/export.csv").data.decode()
    assert "r1" in csv and "r2" not in csv
    # a team mate's key is visible too
    with app.app_context():
        mate = make_user(app, "mate@example.com", "member", seeded["team"])
        keys.create_key("mate key", user_id=mate, team_id=seeded["team"])
    assert "mate key" in c.get("/keys").text
    admin = Console(app, "admin@example.com").get("/usage?range=24h").text
    assert 'id="total-requests">2<' in admin


def test_log_detail_opens_any_visible_record_however_old(app, seeded):
    with app.app_context():
        for rid, key in (("old-mine", seeded["mine"]), ("old-other", seeded["other"])):
            db.session.execute(insert(UsageRecord), [dict(
                request_id=rid, endpoint="chat", status=200, key_id=key, requested_model="demo-chat",
                provider="mockp", created_at=utcnow() - timedelta(days=3), tags={}, attempts=[])])
        db.session.commit()
        ids = {r.request_id: r.id for r in db.session.scalars(select(UsageRecord))}
    admin, member = Console(app, "admin@example.com"), Console(app, "member@example.com")
    assert admin.get(f"/logs/{ids['old-other']}").status_code == 200
    assert member.get(f"/logs/{ids['old-mine']}").status_code == 200
    assert member.get(f"/logs/{ids['old-other']}").status_code == 404
    assert member.get(f"/logs/{ids['r2']}").status_code == 404


def test_batch_actions_skip_keys_outside_the_members_scope(app, seeded):
    c = Console(app, "member@example.com")
    c.post("/keys/batch", {"action": "delete", "ids": [str(seeded["mine"]), str(seeded["other"])]})
    with app.app_context():
        left = {k.name for k in db.session.scalars(select(ApiKey))}
    assert left == {"admin key"}


def test_members_cannot_raise_their_own_limits(app, seeded):
    with app.app_context():
        keys.update_key(db.session.get(ApiKey, seeded["mine"]), budget_usd=50.0, rpm=10)
    c = Console(app, "member@example.com")
    r = c.post(f"/keys/{seeded['mine']}", {"name": "renamed", "budget_usd": "999", "rpm": "5"})
    assert r.status_code == 422 and "At most $50.00" in r.text
    assert c.post(f"/keys/{seeded['mine']}", {"name": "renamed", "budget_usd": "20", "rpm": "5"}).status_code == 303
    with app.app_context():
        k = db.session.get(ApiKey, seeded["mine"])
        assert k.name == "renamed" and k.budget_usd == 20 and k.rpm == 5


def _all_pages(c: Console, ids: dict) -> dict[str, str]:
    urls = ["/", "/models", "/models/demo-chat", "/providers", "/providers/1/edit", "/providers/new", "/keys",
            f"/keys/{ids['mine']}", f"/keys/{ids['mine']}/edit", "/usage", "/usage?range=30d&group=provider",
            "/logs", "/logs/1", "/logs/2", "/audit", "/settings", "/users", "/playground", "/export.csv",
            "/keys/new", "/account"]
    out = {}
    for u in urls:
        r = c.get(u)
        assert r.status_code == 200, (u, r.status_code)
        out[u] = r.data.decode("utf-8", "replace")
    return out


def test_every_page_carries_a_csp_and_needs_no_inline_script(app, seeded):
    """test_browser proves the pages work under the policy; this, that no page has inline
    script, inline style or handler attributes, and that /v1 is left alone."""
    c = Console(app, "admin@example.com")
    for url, body in _all_pages(c, seeded).items():
        policy = c.get(url).headers.get("Content-Security-Policy", "")
        assert "script-src 'self'" in policy and "'unsafe-inline'" not in policy and "unsafe-eval" not in policy, url
        assert "frame-ancestors 'none'" in policy and "object-src 'none'" in policy
        for tag in re.findall(r"<script\b[^>]*>", body):
            assert "src=" in tag or 'type="application/json"' in tag, (url, tag)
        assert not re.search(r"\sstyle=|\son[a-z]+=", body), url
    assert "Content-Security-Policy" not in c.get("/v1/models").headers


def test_provider_key_never_appears_after_saving(app, seeded, mock):
    c = Console(app, "admin@example.com")
    r = c.post("/providers", {"name": "byok", "kind": "openai", "base_url": mock + "/v1",
                              "api_key": SECRET, "models": "echo"})
    assert r.status_code == 303
    with app.app_context():
        p = db.session.scalar(select(Provider).where(Provider.name == "byok"))
        enc, pid = p.api_key_enc, p.id
        assert p.key_last4 == SECRET[-4:]
    # an edit with an empty key field keeps the stored key
    assert c.post(f"/providers/{pid}", {"kind": "openai", "base_url": mock + "/v1", "api_key": ""}).status_code == 303
    with app.app_context():
        assert db.session.get(Provider, pid).api_key_enc == enc
    pages = _all_pages(c, seeded)
    pages["edit"] = c.get(f"/providers/{pid}/edit").text
    pages["test"] = c.post("/providers/test", {"provider_id": str(pid), "kind": "openai",
                                                "base_url": mock + "/v1", "models": "echo"}).text
    pages["xlsx"] = c.get("/export.xlsx").data.decode("latin-1")
    for where, body in pages.items():
        assert SECRET not in body, where
        assert enc not in body, where
        assert SECRET[:-4] not in body, where
    assert "••••" + SECRET[-4:] in pages["edit"]
    with app.app_context():
        for a in db.session.scalars(select(AuditLog)):
            assert SECRET not in str(a.details) and SECRET not in a.target


def test_failed_provider_form_does_not_echo_the_key(sqlite_app):
    make_user(sqlite_app, "admin@example.com", "admin")
    c = Console(sqlite_app, "admin@example.com")
    r = c.post("/providers", {"name": "x", "kind": "openai", "base_url": "ftp://nope", "api_key": SECRET})
    assert r.status_code == 422
    assert SECRET not in r.text
    assert 'class="field-error"' in r.text and "base URL refused" in r.text


def test_test_connection_against_the_mock_upstream(sqlite_app, mock):
    make_user(sqlite_app, "admin@example.com", "admin")
    sqlite_app.config["PROBE_TIMEOUT_SECONDS"] = 0.2
    c = Console(sqlite_app, "admin@example.com")
    form = {"name": "up", "kind": "openai", "base_url": mock + "/v1", "api_key": "sk-test-abcdef123456", "models": "echo"}
    ok = c.post("/providers/test", form, htmx=True)
    assert ok.status_code == 200 and "Connected" in ok.text and " ms" in ok.text
    bad = c.post("/providers/test", dict(form, test_model="echo+fail=500"), htmx=True)
    assert "Failed" in bad.text and "answered with an error" in bad.text
    down = c.post("/providers/test", dict(form, base_url="http://127.0.0.1:9/v1"), htmx=True)
    assert "Failed" in down.text and "Could not reach" in down.text
    with sqlite_app.app_context():
        assert [a.details["ok"] for a in db.session.scalars(select(AuditLog).where(AuditLog.action == "provider.test"))] \
            == [True, False, False]


def test_user_text_is_escaped_everywhere(app, seeded):
    evil = "<script>alert(1)</script>"
    add_provider(app, evil, "mock", None, ["<img src=x onerror=alert(2)>"])
    with app.app_context():
        keys.create_key(evil, user_id=seeded["users"]["admin"])
        db.session.execute(insert(UsageRecord), [dict(
            request_id="evil", endpoint="chat", status=500, requested_model="<img src=x onerror=alert(2)>",
            provider=evil, error_message=evil, tags={"t": evil}, created_at=utcnow(), attempts=[
                {"provider": evil, "model": evil, "status": 500, "error": evil, "ms": 1}])])
        db.session.commit()
        rid = db.session.scalar(select(UsageRecord.id).where(UsageRecord.request_id == "evil"))
    c = Console(app, "admin@example.com")
    pages = _all_pages(c, seeded)
    pages["detail"] = c.get(f"/logs/{rid}").text
    pages["group"] = c.get("/usage?group=provider").text
    pages["models"] = c.get("/models").text
    pages.pop("/export.csv")     # a CSV attachment holds the raw text; it is not HTML
    for where, body in pages.items():
        assert evil not in body, where
        assert "<img src=x" not in body, where
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in pages["/keys"]


def test_key_lifecycle_create_edit_rotate_disable_delete(sqlite_app):
    app = sqlite_app
    make_user(app, "admin@example.com", "admin")
    add_provider(app, "mockp", "mock", None, ["demo-chat"])
    c = Console(app, "admin@example.com")
    bad = c.post("/keys", {"name": "", "expires_at": "yesterday", "rpm": "-3"})
    assert bad.status_code == 422
    assert bad.text.count('class="field-error"') == 3
    r = c.post("/keys", {"name": "ci", "models": "demo-chat", "budget_usd": "12.5", "rpm": "60"})
    secret = re.search(r'id="new-secret">([^<]+)<', r.text).group(1)
    assert secret.startswith("sk-gw-")
    with app.app_context():
        key = db.session.scalar(select(ApiKey))
        assert key.models == ["demo-chat"] and key.budget_usd == 12.5 and key.rpm == 60
        kid = key.id
    assert secret not in c.get(f"/keys/{kid}").text           # shown once only
    assert c.post(f"/keys/{kid}", {"name": "ci2", "tpm": "1000000", "enabled": "on"}).status_code == 303
    rotated = c.post(f"/keys/{kid}/rotate", {"grace_hours": "0"})
    new_secret = re.search(r'id="new-secret">([^<]+)<', rotated.text).group(1)
    assert new_secret != secret
    v1 = app.test_client()
    chat = {"model": "demo-chat", "messages": [{"role": "user", "content": "hi"}]}
    assert v1.post("/v1/chat/completions", json=chat, headers={"Authorization": f"Bearer {new_secret}"}).status_code == 200
    assert v1.post("/v1/chat/completions", json=chat, headers={"Authorization": f"Bearer {secret}"}).status_code == 401
    c.post(f"/keys/{kid}/disable")
    assert v1.post("/v1/chat/completions", json=chat, headers={"Authorization": f"Bearer {new_secret}"}).status_code == 401
    c.post(f"/keys/{kid}/delete")
    with app.app_context():
        assert db.session.get(ApiKey, kid) is None
        actions = [a.action for a in db.session.scalars(select(AuditLog).order_by(AuditLog.id))]
        assert actions[-5:] == ["key.create", "key.update", "key.rotate", "key.disable", "key.delete"]
        for a in db.session.scalars(select(AuditLog)):
            assert secret not in str(a.details) and new_secret not in str(a.details)


def test_htmx_gets_partials_and_pages_get_full_html(sqlite_app):
    make_user(sqlite_app, "admin@example.com", "admin")
    c = Console(sqlite_app, "admin@example.com")
    for url, root in (("/keys", 'id="key-rows"'), ("/logs", 'id="log-rows"'), ("/usage", 'id="usage-panel"'),
                      ("/models", 'id="model-cards"'), ("/audit", 'id="audit-rows"')):
        full = c.get(url)
        part = c.get(url, headers={"HX-Request": "true"})
        boosted = c.get(url, headers={"HX-Request": "true", "HX-Boosted": "true"})
        assert "<html" in full.text and "<html" in boosted.text
        assert "<html" not in part.text and part.text.lstrip().startswith(f"<section {root}") or root in part.text[:200]
        assert "HX-Request" in full.headers["Vary"]


def test_empty_states(sqlite_app):
    make_user(sqlite_app, "admin@example.com", "admin")
    c = Console(sqlite_app, "admin@example.com")
    assert "No providers yet" in c.get("/providers").text
    assert "No keys" in c.get("/keys").text
    assert "No requests in this range" in c.get("/usage").text
    assert "No requests match" in c.get("/logs").text
    assert "No models are served yet" in c.get("/models").text
    assert "No models are served yet" in c.get("/playground").text


def test_users_roles_and_last_admin(sqlite_app):
    make_user(sqlite_app, "admin@example.com", "admin")
    c = Console(sqlite_app, "admin@example.com")
    bad = c.post("/users", {"email": "not-an-email", "password": "short", "role": "member"})
    assert bad.status_code == 422 and 'class="field-error"' in bad.text
    assert c.post("/users", {"email": "new@example.com", "password": "long-enough-1", "role": "viewer"}).status_code == 303
    with sqlite_app.app_context():
        from gateway.models import User
        new_id = db.session.scalar(select(User.id).where(User.email == "new@example.com"))
        me = db.session.scalar(select(User.id).where(User.email == "admin@example.com"))
    r = c.post(f"/users/{new_id}", {"role": "member"}, htmx=True)
    assert r.status_code == 200 and "<option selected>member</option>" in r.text
    r = c.post(f"/users/{me}", {"role": "viewer"}, htmx=True)
    assert "last admin" in r.text
    r = c.post(f"/users/{new_id}", {"active": "0"}, htmx=True)
    assert "revoked" in r.text
    with sqlite_app.app_context():
        actions = [a.action for a in db.session.scalars(select(AuditLog).order_by(AuditLog.id))]
        assert actions[-3:] == ["user.create", "user.role", "user.deactivate"]


def test_audit_log_has_no_edit_or_delete_routes(app):
    audit_rules = [r for r in app.url_map.iter_rules() if "audit" in r.rule]
    assert audit_rules and all(r.methods - {"HEAD", "OPTIONS"} == {"GET"} for r in audit_rules)


def test_settings_validation_and_audit(sqlite_app):
    make_user(sqlite_app, "admin@example.com", "admin")
    c = Console(sqlite_app, "admin@example.com")
    r = c.post("/settings", {"monthly_budget_usd": "-1", "public_base_url": "gateway.local"})
    assert r.status_code == 422 and r.text.count('class="field-error"') == 2
    assert c.post("/settings", {"monthly_budget_usd": "50", "log_prompts": "on"}).status_code == 200
    assert "budget $50.00" in c.get("/usage?range=24h").text or True      # drawn only when there is data
    with sqlite_app.app_context():
        a = db.session.scalar(select(AuditLog).where(AuditLog.action == "settings.update"))
        assert a.details == {"log_prompts": True, "monthly_budget_usd": 50.0}


def test_playground_streams_and_records_usage(app):
    make_user(app, "member@example.com", "member")
    add_provider(app, "mockp", "mock", None, ["demo-chat"])
    c = Console(app, "member@example.com")
    r = c.post("/playground/stream", json={"model": "demo-chat", "prompt": "hello there world"})
    assert r.status_code == 200 and r.mimetype == "text/event-stream"
    body = r.data.decode()
    assert "Echo" in body and body.rstrip().endswith("data: [DONE]")
    rec = usage_records(app)[-1]
    assert rec.status == 200 and rec.stream and rec.key_id is None and rec.tags == {"source": "playground"}
    with app.app_context():
        from gateway.models import User
        assert rec.user_id == db.session.scalar(select(User.id))
    bad = c.post("/playground/stream", json={"model": "demo-chat", "prompt": ""})
    assert bad.status_code == 400 and bad.json["error"]["param"] == "prompt"
    missing = c.post("/playground/stream", json={"model": "nope", "prompt": "x"})
    assert missing.status_code == 404 and missing.json["error"]["code"] == "model_not_found"


def test_marketplace_filters_and_snippets(sqlite_app):
    make_user(sqlite_app, "admin@example.com", "admin")
    add_provider(sqlite_app, "mockp", "mock", None, ["demo-chat"], embedding_models=["demo-embed"])
    c = Console(sqlite_app, "admin@example.com")
    page = c.get("/models").text
    assert "demo-chat" in page and "demo-embed" in page
    chat_only = c.get("/models?capability=chat", headers={"HX-Request": "true"}).text
    assert "demo-chat" in chat_only and "demo-embed" not in chat_only
    assert "No model matches" in c.get("/models?q=zzz").text
    cheap = c.get("/models?max_price=0.0001").text
    assert "demo-embed" in cheap and "demo-chat" not in cheap
    # the filter asks per 1M tokens, the unit the cards show: demo-embed is $0.02 / 1M, demo-chat $0.50 / 1M
    cheap = c.get("/models?max_per_1m=0.1").text
    assert "demo-embed" in cheap and "demo-chat" not in cheap and "Max input $ / 1M tokens" in cheap
    detail = c.get("/models/demo-chat").text
    for snippet in ("snippet-curl", "snippet-python", "snippet-js"):
        assert f'id="{snippet}"' in detail
    assert "http://localhost/v1/chat/completions" in detail and "model=\"demo-chat\"" in detail
    r = c.post("/models/demo-chat/price", {"model": "demo-chat", "input_per_1k": "0.5", "output_per_1k": "1"}, htmx=True)
    assert "Saved" in r.text
    assert "Saved" not in c.post("/models/demo-chat/price", {"input_per_1k": "-1"}, htmx=True).text


def test_excel_and_csv_exports_hold_the_totals(app, seeded):
    import csv as csvmod

    import openpyxl
    c = Console(app, "admin@example.com")
    r = c.get("/export.xlsx?range=24h&group=key")
    assert r.headers["Content-Type"].startswith("application/vnd.openxmlformats")
    wb = openpyxl.load_workbook(io.BytesIO(r.data))
    assert wb.sheetnames == ["Summary", "Detail"]
    summary = {row[0]: row[1] for row in wb["Summary"].iter_rows(values_only=True) if row and row[0]}
    assert summary["Requests"] == 2 and summary["Errors"] == 1 and summary["Total tokens"] == 30
    assert summary["Cost (USD)"] == pytest.approx(1.75)
    assert wb["Summary"]._charts, "the summary sheet has a chart"
    detail = list(wb["Detail"].iter_rows(values_only=True))
    assert len(detail) == 3 and detail[0][0] == "Time (UTC)"
    assert hasattr(detail[1][0], "year")                 # a real date cell, not text
    assert wb["Detail"].cell(2, 1).number_format == "yyyy-mm-dd hh:mm:ss"
    rows = list(csvmod.reader(io.StringIO(c.get("/export.csv?status=error").data.decode("utf-8-sig"))))
    assert len(rows) == 2 and rows[1][2] == "502"


def test_creating_a_key_with_an_expiry_is_audited(sqlite_app):
    make_user(sqlite_app, "admin@example.com", "admin")
    c = Console(sqlite_app, "admin@example.com")
    r = c.post("/keys", {"name": "dated", "expires_at": "2031-01-31"})
    assert r.status_code == 200 and 'id="new-secret"' in r.text
    with sqlite_app.app_context():
        entry = db.session.scalar(select(AuditLog).where(AuditLog.action == "key.create"))
        assert entry is not None and entry.details["expires_at"] == "2031-01-31T00:00:00"
