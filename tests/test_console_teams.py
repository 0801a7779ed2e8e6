"""Teams, plans and tag budgets in the console: RBAC, CSRF, escaping, field errors, audit, the
key form's Team and Plan lists, and the plan-wide budget enforced over HTTP."""
from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import select

from gateway.extensions import db
from gateway.models import ApiKey, AuditLog, Plan, QuotaCounter, TagBudget, Team, User
from gateway.services.accounting import keys, teams
from gateway.services.admin import catalog_admin
from tests.console_client import Console, make_user
from tests.helpers import LiveServer, add_provider, fire, make_app, make_key, redis_or_skip, usage_records

XSS = "<script>alert(1)</script>"
CHAT = {"model": "echo", "max_tokens": 16, "messages": [{"role": "user", "content": "hello there friend"}]}


@pytest.fixture
def roles(app):
    """An admin, a member of team red, a member of no team and a viewer; logged-in consoles."""
    with app.app_context():
        red, blue = teams.save_team("red").id, teams.save_team("blue").id
    make_user(app, "admin@example.com", "admin")
    make_user(app, "member@example.com", "member", team_id=red)
    make_user(app, "loner@example.com", "member")
    make_user(app, "viewer@example.com", "viewer")
    return {"red": red, "blue": blue, "admin": Console(app, "admin@example.com"),
            "member": Console(app, "member@example.com"), "loner": Console(app, "loner@example.com"),
            "viewer": Console(app, "viewer@example.com")}


def audit(app, action: str) -> list[AuditLog]:
    with app.app_context():
        rows = db.session.scalars(select(AuditLog).where(AuditLog.action == action).order_by(AuditLog.id)).all()
        db.session.expunge_all()
        return rows


def team_named(app, name: str) -> Team | None:
    with app.app_context():
        t = db.session.scalar(select(Team).where(Team.name == name))
        if t is not None:
            db.session.expunge(t)
        return t


TEAM = {"name": "search", "budget_usd": "250", "budget_period": "month", "timezone": "Europe/Paris",
        "alert_thresholds": "50, 80,95", "webhook_url": "https://hooks.example.com/T0/B1/xyz",
        "webhook_secret": "whsec-very-secret-1", "plan_id": ""}


def test_admin_creates_a_team_with_budget_and_webhook(app, roles):
    admin = roles["admin"]
    r = admin.post("/teams", TEAM)
    assert r.status_code == 303
    t = team_named(app, "search")
    assert (t.budget_usd, t.budget_period, t.timezone, t.alert_thresholds) == (250.0, "month", "Europe/Paris",
                                                                               [50, 80, 95])
    assert t.webhook_url == TEAM["webhook_url"] and t.webhook_secret_enc
    assert "whsec-very-secret-1" not in t.webhook_secret_enc
    assert r.headers["Location"].endswith(f"/teams/{t.id}")
    page = admin.get(f"/teams/{t.id}").text
    assert "$250.00" in page and "per month (Europe/Paris)" in page and "signed" in page
    edit = admin.get(f"/teams/{t.id}/edit").text
    assert "whsec-very-secret-1" not in edit and "A secret is set" in edit
    (row,) = audit(app, "team.create")
    assert row.actor == "admin@example.com" and row.target == "search"
    assert row.details["webhook_host"] == "hooks.example.com" and row.details["webhook_signing"] == "changed"
    assert "whsec-very-secret-1" not in str(row.details) and "xyz" not in str(row.details)
    listing = admin.get("/teams").text
    assert "search" in listing and "$250.00" in listing and "<meter" in listing


def test_editing_keeps_or_clears_the_webhook_secret(app, roles):
    admin = roles["admin"]
    admin.post("/teams", TEAM)
    t = team_named(app, "search")
    stored = t.webhook_secret_enc
    r = admin.post(f"/teams/{t.id}", {**TEAM, "webhook_secret": "", "budget_usd": "300"})
    assert r.status_code == 303
    t = team_named(app, "search")
    assert t.budget_usd == 300.0 and t.webhook_secret_enc == stored
    admin.post(f"/teams/{t.id}", {**TEAM, "webhook_secret": "", "clear_webhook_secret": "on"})
    assert team_named(app, "search").webhook_secret_enc == ""
    assert audit(app, "team.update")[-1].details["webhook_signing"] == "cleared"


@pytest.mark.parametrize("field,value,message", [
    ("alert_thresholds", "0, 50", "between 1 and 100"),
    ("alert_thresholds", "50, 150", "between 1 and 100"),
    ("alert_thresholds", "half", "percentages"),
    ("budget_usd", "lots", "amount in USD"),
    ("budget_usd", "-5", "negative"),
    ("timezone", "Mars/Base", "Unknown time zone"),
    ("webhook_url", "http://169.254.169.254/latest/meta-data", "Webhook URL"),
    ("webhook_url", "ftp://hooks.example.com/x", "Webhook URL"),
    ("name", "  ", "needs a name"),
    ("name", "red", "already a team"),
])
def test_team_form_errors_show_next_to_the_field(app, roles, field, value, message):
    r = roles["admin"].post("/teams", {**TEAM, field: value})
    assert r.status_code == 422
    assert f'id="{field}-error"' in r.text and message in r.text
    assert "whsec-very-secret-1" not in r.text      # the secret is never put back in the form
    assert team_named(app, "search") is None
    assert audit(app, "team.create") == []


def test_members_are_added_and_removed(app, roles):
    admin = roles["admin"]
    with app.app_context():
        uid = db.session.scalar(select(User.id).where(User.email == "loner@example.com"))
    r = admin.post(f"/teams/{roles['red']}/members", {"user_id": str(uid)})
    assert r.status_code == 303
    with app.app_context():
        assert db.session.get(User, uid).team_id == roles["red"]
    page = admin.get(f"/teams/{roles['red']}").text
    assert "loner@example.com" in page and "member@example.com" in page
    assert audit(app, "team.member_add")[0].details["user"] == "loner@example.com"
    assert admin.post(f"/teams/{roles['red']}/members", {"user_id": ""}).status_code == 422
    r = admin.post(f"/teams/{roles['red']}/members/{uid}/remove")
    assert r.status_code == 303
    with app.app_context():
        assert db.session.get(User, uid).team_id is None
    assert audit(app, "team.member_remove")[0].target == "red"
    assert admin.post(f"/teams/{roles['blue']}/members/{uid}/remove").status_code == 404


def test_deleting_a_team_keeps_its_keys_and_users_working(app, roles):
    add_provider(app, "demo", "mock", None, ["demo-chat"])
    secret = make_key(app, "red-svc", team_id=roles["red"])
    assert "red-svc" in roles["member"].get(f"/teams/{roles['red']}").text     # its keys are listed
    r = roles["admin"].post(f"/teams/{roles['red']}/delete")
    assert r.status_code == 303 and r.headers["Location"].endswith("/teams")
    with app.app_context():
        assert db.session.get(Team, roles["red"]) is None
        assert db.session.scalar(select(User).where(User.email == "member@example.com")).team_id is None
        assert db.session.scalar(select(ApiKey)).team_id is None
    r = app.test_client().post("/v1/chat/completions", headers={"Authorization": f"Bearer {secret}"},
                               json={"model": "demo-chat", "messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 200
    (row,) = audit(app, "team.delete")
    assert row.target == "red" and row.details["keys"] == 1 and row.details["users"] == 1


def test_the_key_form_lists_teams_and_plans_made_here(app, roles):
    admin = roles["admin"]
    add_provider(app, "demo", "mock", None, ["demo-chat"])
    admin.post("/teams", TEAM)
    admin.post("/plans", {"name": "starter", "models": ["demo-chat"], "quota_period": "month",
                          "pool_budget_usd": "20", "pool_period": "month"})
    t, plan_id = team_named(app, "search"), _plan_id(app, "starter")
    form = admin.get("/keys/new").text
    assert f'<option value="{t.id}" >search</option>' in form.replace("  ", " ")
    assert f'<option value="{plan_id}" >starter</option>' in form.replace("  ", " ")
    r = admin.post("/keys", {"name": "svc", "team_id": str(t.id), "plan_id": str(plan_id), "quota_period": "total"})
    assert r.status_code == 200 and "sk-gw-" in r.text
    with app.app_context():
        key = db.session.scalar(select(ApiKey).where(ApiKey.name == "svc"))
        assert (key.team_id, key.plan_id) == (t.id, plan_id)
        info = keys.info(key)
        assert info.models == frozenset({"demo-chat"}) and info.plan_budget_usd == 20.0
    edit = admin.get(f"/keys/{key.id}/edit").text
    assert f'<option value="{plan_id}" selected>starter</option>' in edit


def _plan_id(app, name: str) -> int:
    with app.app_context():
        return db.session.scalar(select(Plan.id).where(Plan.name == name))


def test_member_sees_their_own_team_read_only(app, roles):
    member = roles["member"]
    page = member.get("/teams").text
    assert ">red<" in page and ">blue<" not in page and "Create team" not in page
    assert 'href="/plans"' not in page
    detail = member.get(f"/teams/{roles['red']}")
    assert detail.status_code == 200 and "Edit" not in detail.text and "Add member" not in detail.text
    assert member.get(f"/teams/{roles['blue']}").status_code == 404
    assert "not in a team" in roles["loner"].get("/teams").text
    for url in ("/teams/new", f"/teams/{roles['red']}/edit", "/plans", "/plans/new", "/tag-budgets",
                "/tag-budgets/new"):
        assert member.get(url).status_code == 403, url
    for url in ("/teams", f"/teams/{roles['red']}", f"/teams/{roles['red']}/members",
                f"/teams/{roles['red']}/delete", "/plans", "/tag-budgets"):
        assert member.post(url, {**TEAM, "name": "mine"}).status_code == 403, url
    assert team_named(app, "red") is not None and team_named(app, "mine") is None
    assert 'href="/teams"' in member.get("/keys").text       # the nav link shows to members


def test_viewer_reads_everything_and_changes_nothing(app, roles):
    viewer = roles["viewer"]
    with app.app_context():
        plan = teams.save_plan("pro", pool_budget_usd=50.0)
        b = teams.save_tag_budget("feature", "search", 5.0)
        pid, bid = plan.id, b.id
    page = viewer.get("/teams").text
    assert ">red<" in page and ">blue<" in page and "Create team" not in page
    assert "pro" in viewer.get("/plans").text and "$50.00" in viewer.get("/plans").text
    assert "feature=search" in viewer.get("/tag-budgets").text
    assert "Edit" not in viewer.get(f"/teams/{roles['red']}").text
    for url in ("/teams/new", f"/teams/{roles['red']}/edit", "/plans/new", f"/plans/{pid}/edit",
                "/tag-budgets/new", f"/tag-budgets/{bid}/edit"):
        assert viewer.get(url).status_code == 403, url
    for url in ("/teams", f"/teams/{roles['red']}", f"/teams/{roles['red']}/delete", "/plans",
                f"/plans/{pid}", f"/plans/{pid}/delete", "/tag-budgets", f"/tag-budgets/{bid}",
                f"/tag-budgets/{bid}/delete"):
        assert viewer.post(url, {"name": "x"}).status_code == 403, url
    with app.app_context():
        assert db.session.get(Plan, pid) is not None and db.session.get(TagBudget, bid) is not None


NEW_ROUTES = ("/teams", "/teams/new", "/teams/1", "/teams/1/edit", "/plans", "/plans/new", "/plans/1/edit",
              "/tag-budgets", "/tag-budgets/new", "/tag-budgets/1/edit")


def test_anonymous_users_are_sent_to_login(app, roles):
    client = app.test_client()
    for url in NEW_ROUTES:
        r = client.get(url)
        assert r.status_code == 302 and "/login" in r.headers["Location"], url
    for url in ("/teams", "/teams/1", "/teams/1/delete", "/plans", "/tag-budgets"):
        assert client.post(url, data={"name": "x"}).status_code in (302, 403), url
    assert team_named(app, "x") is None


def test_posts_without_the_csrf_token_are_refused(app, roles):
    admin = roles["admin"]
    with app.app_context():
        pid, bid = teams.save_plan("pro").id, teams.save_tag_budget("feature", "search", 5.0).id
    for url in ("/teams", f"/teams/{roles['red']}", f"/teams/{roles['red']}/members",
                f"/teams/{roles['red']}/delete", "/plans", f"/plans/{pid}", f"/plans/{pid}/delete",
                "/tag-budgets", f"/tag-budgets/{bid}", f"/tag-budgets/{bid}/delete"):
        assert admin.post(url, {**TEAM, "name": "forged"}, csrf=False).status_code == 403, url
        assert admin.client.post(url, data={**TEAM, "name": "forged", "csrf_token": "forged"}).status_code == 403
    assert team_named(app, "red") is not None and team_named(app, "forged") is None
    with app.app_context():
        assert db.session.get(Plan, pid).name == "pro" and db.session.get(TagBudget, bid) is not None


def test_user_strings_are_escaped(app, roles):
    admin = roles["admin"]
    admin.post("/teams", {**TEAM, "name": XSS})
    admin.post("/plans", {"name": XSS, "quota_period": "month", "pool_period": "month"})
    admin.post("/tag-budgets", {"tag": XSS, "value": XSS, "budget_usd": "5", "budget_period": "month"})
    t = team_named(app, XSS)
    assert t is not None
    with app.app_context():
        u = db.session.scalar(select(User).where(User.email == "loner@example.com"))
        u.email = f"{XSS}@example.com"
        db.session.commit()
    pages = [admin.get(u).text for u in ("/teams", f"/teams/{t.id}", f"/teams/{t.id}/edit", "/plans",
                                          "/tag-budgets", "/keys/new")]
    for page in pages:
        assert XSS not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in pages[0] and "&lt;script&gt;" in pages[3]
    assert "&lt;script&gt;" in pages[4] and "&lt;script&gt;" in pages[1]
    r = admin.post("/teams", {**TEAM, "name": XSS, "budget_usd": "x"})     # errors re-show the input escaped
    assert r.status_code == 422 and XSS not in r.text


def test_plans_are_created_edited_and_deleted(app, roles):
    admin = roles["admin"]
    add_provider(app, "demo", "mock", None, ["demo-chat", "demo-mini"])
    r = admin.post("/plans", {"name": "starter", "models": ["demo-chat"], "token_quota": "100000",
                              "quota_period": "month", "budget_usd": "5", "rpm": "60", "tpm": "",
                              "max_parallel": "4", "pool_budget_usd": "100", "pool_period": "week",
                              "pool_timezone": "Europe/Paris"})
    assert r.status_code == 303
    with app.app_context():
        p = db.session.scalar(select(Plan).where(Plan.name == "starter"))
        assert (p.models, p.token_quota, p.budget_usd, p.rpm, p.tpm, p.max_parallel) == (
            ["demo-chat"], 100000, 5.0, 60, None, 4)
        assert (p.pool_budget_usd, p.pool_period, p.pool_timezone) == (100.0, "week", "Europe/Paris")
        pid = p.id
    make_key(app, plan_id=pid)
    page = admin.get("/plans").text
    assert "demo-chat" in page and "$100.00 per week (Europe/Paris)" in page and "$5.00 per key" in page
    assert "$0.00 of $100.00" in page
    row = audit(app, "plan.create")[0]
    assert row.details["pool_budget_usd"] == 100.0 and row.details["models"] == ["demo-chat"]
    edit = admin.get(f"/plans/{pid}/edit").text
    assert 'value="100"' in edit and "<option selected>demo-chat</option>" in edit
    r = admin.post(f"/plans/{pid}", {"name": "starter-2", "models": [], "quota_period": "month",
                                     "pool_budget_usd": "", "pool_period": "month"})
    assert r.status_code == 303
    with app.app_context():
        p = db.session.get(Plan, pid)
        assert (p.name, p.models, p.pool_budget_usd, p.rpm) == ("starter-2", None, None, None)
    assert audit(app, "plan.update")[0].target == "starter-2"
    r = admin.post(f"/plans/{pid}/delete")
    assert r.status_code == 303
    with app.app_context():
        assert db.session.get(Plan, pid) is None and db.session.scalar(select(ApiKey)).plan_id is None
    assert audit(app, "plan.delete")[0].details["keys"] == 1


@pytest.mark.parametrize("field,value,message", [
    ("models", ["not-served"], "Not a served model"),
    ("token_quota", "1.5", "whole number"),
    ("rpm", "-1", "whole number"),
    ("pool_budget_usd", "-1", "negative"),
    ("pool_timezone", "Nowhere/Land", "Unknown time zone"),
    ("name", "", "needs a name"),
])
def test_plan_form_errors(app, roles, field, value, message):
    add_provider(app, "demo", "mock", None, ["demo-chat"])
    form = {"name": "starter", "quota_period": "month", "pool_period": "month", field: value}
    r = roles["admin"].post("/plans", form)
    assert r.status_code == 422 and f'id="{field}-error"' in r.text and message in r.text
    with app.app_context():
        assert db.session.scalar(select(Plan)) is None


def test_tag_budgets_are_created_edited_and_deleted(app, roles):
    admin = roles["admin"]
    r = admin.post("/tag-budgets", {"tag": "feature", "value": "search", "budget_usd": "12.5",
                                    "budget_period": "day", "timezone": "UTC", "alert_thresholds": "80",
                                    "webhook_url": "https://hooks.example.com/x", "webhook_secret": "s3cret-tag"})
    assert r.status_code == 303
    with app.app_context():
        b = db.session.scalar(select(TagBudget))
        assert (b.tag, b.value, b.budget_usd, b.budget_period, b.alert_thresholds) == (
            "feature", "search", 12.5, "day", [80])
        bid = b.id
    page = admin.get("/tag-budgets").text
    assert "feature=search" in page and "$12.50 per day" in page and "$0.00 of $12.50" in page
    assert "s3cret-tag" not in admin.get(f"/tag-budgets/{bid}/edit").text
    assert "s3cret-tag" not in str(audit(app, "tag_budget.create")[0].details)
    r = admin.post("/tag-budgets", {"tag": "feature", "value": "chat", "budget_usd": "", "budget_period": "day"})
    assert r.status_code == 422 and 'id="budget_usd-error"' in r.text
    r = admin.post(f"/tag-budgets/{bid}", {"tag": "feature", "value": "chat", "budget_usd": "20",
                                           "budget_period": "month", "alert_thresholds": "50,100"})
    assert r.status_code == 303
    with app.app_context():
        b = db.session.get(TagBudget, bid)
        assert (b.value, b.budget_usd, b.webhook_secret_enc != "") == ("chat", 20.0, True)
    assert audit(app, "tag_budget.update")[0].target == "feature=chat"
    assert admin.post(f"/tag-budgets/{bid}/delete").status_code == 303
    with app.app_context():
        assert db.session.get(TagBudget, bid) is None
    assert audit(app, "tag_budget.delete")[0].target == "feature=chat"


def _priced_echo(app, mock):
    """The mock upstream's echo model, priced so a request costs about $0.0001."""
    add_provider(app, "up", "openai", mock + "/v1", ["echo"])
    with app.app_context():
        catalog_admin.save_price("echo", 0.002, 0.004)


def _spend_until_refused(app, secrets: list[str], limit: int = 40) -> list[int]:
    client, statuses = app.test_client(), []
    for i in range(limit):
        r = client.post("/v1/chat/completions", json=CHAT, headers={"Authorization": f"Bearer {secrets[i % 2]}"})
        statuses.append(r.status_code)
        if r.status_code == 429:
            assert r.json["error"]["type"] == "insufficient_quota"
            assert "plan budget" in r.json["error"]["message"]
            break
    return statuses


def test_the_plan_budget_caps_every_key_on_the_plan_together(app, roles, mock):
    _priced_echo(app, mock)
    with app.app_context():
        pid = teams.save_plan("shared", pool_budget_usd=0.0008, pool_period="month").id
    on_plan = [make_key(app, "a", plan_id=pid), make_key(app, "b", plan_id=pid)]
    statuses = _spend_until_refused(app, on_plan)
    assert statuses[0] == 200 and statuses[-1] == 429 and statuses.count(200) >= 2
    with app.app_context():
        c = db.session.scalar(select(QuotaCounter).where(QuotaCounter.scope == f"plan:{pid}"))
        assert 0 < c.used_usd <= 0.0008 + 1e-12 and c.reserved_usd == pytest.approx(0, abs=1e-12)
        key_ids = db.session.scalars(select(ApiKey.id).where(ApiKey.plan_id == pid)).all()
        # both keys spent from the one cap: neither has a quota of its own
        assert db.session.scalar(select(QuotaCounter).where(QuotaCounter.scope.in_(
            [f"key:{k}" for k in key_ids]))) is None
        used = c.used_usd
    off_plan = make_key(app, "free")
    ok = app.test_client().post("/v1/chat/completions", json=CHAT, headers={"Authorization": f"Bearer {off_plan}"})
    assert ok.status_code == 200
    page = roles["admin"].get("/plans").text
    from gateway.formatting import money
    assert f"{money(used)} of $0.0008" in page


def test_the_plan_budget_holds_under_concurrency(sqlite_app, mock):
    app, cap = sqlite_app, 0.003
    _priced_echo(app, mock)
    with app.app_context():
        pid = teams.save_plan("shared", pool_budget_usd=cap, pool_period="month").id
    a, b = make_key(app, "a", plan_id=pid), make_key(app, "b", plan_id=pid)
    server = LiveServer(app)
    try:        # both keys at once, 16 requests in flight each
        with ThreadPoolExecutor(2) as pool:
            results = [r for f in [pool.submit(fire, [server.url], k, 60, 16, CHAT) for k in (a, b)]
                       for r in f.result()]
    finally:
        server.stop()
    statuses = [s for s, _, _ in results]
    assert set(statuses) <= {200, 429} and 200 in statuses and 429 in statuses
    served = {rid for s, rid, _ in results if s == 200}
    charged = sum(r.cost_usd or 0 for r in usage_records(app) if r.request_id in served)
    with app.app_context():
        c = db.session.scalar(select(QuotaCounter).where(QuotaCounter.scope == f"plan:{pid}"))
        assert c.used_usd == pytest.approx(charged) and c.used_usd <= cap + 1e-12
        assert c.reserved_usd == pytest.approx(0, abs=1e-12) and c.inflight == 0


def test_the_plan_budget_holds_with_redis_counters(tmp_path, mock):
    redis = redis_or_skip()
    prefix = f"gw:test:{uuid.uuid4().hex[:8]}:"
    app = make_app(f"sqlite:///{tmp_path}/r.db", REDIS_URL="redis://127.0.0.1:6379/0", QUOTA_REDIS_PREFIX=prefix)
    try:
        _priced_echo(app, mock)
        with app.app_context():
            pid = teams.save_plan("shared", pool_budget_usd=0.0006, pool_period="day").id
        statuses = _spend_until_refused(app, [make_key(app, "a", plan_id=pid), make_key(app, "b", plan_id=pid)])
        assert statuses[0] == 200 and statuses[-1] == 429
        (counter,) = list(redis.scan_iter(match=f"{prefix}c:plan:{pid}@*"))
        used = float(redis.hget(counter, "uu"))
        assert 0 < used <= 0.0006 + 1e-12
        with app.app_context():
            spend = teams.plan_spend(db.session.get(Plan, pid))
            assert spend.used_usd == pytest.approx(used)
    finally:
        for k in redis.scan_iter(match=prefix + "*"):
            redis.delete(k)


def test_team_spend_is_shown_from_the_counters(app, roles):
    add_provider(app, "demo", "mock", None, ["demo-chat"])
    with app.app_context():
        teams.save_team("red", budget_usd=1.0, budget_period="month")
    secret = make_key(app, team_id=roles["red"])
    r = app.test_client().post("/v1/chat/completions", headers={"Authorization": f"Bearer {secret}"},
                               json={"model": "demo-chat", "messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 200
    with app.app_context():
        c = db.session.scalar(select(QuotaCounter).where(QuotaCounter.scope == f"team:{roles['red']}"))
        assert c is not None
        used = c.used_usd
    from gateway.formatting import money
    assert f"{money(used)} of $1.00" in roles["member"].get("/teams").text


def test_cli_deletes_teams_manages_members_and_plan_budgets(app, roles):
    runner = app.test_cli_runner()
    out = runner.invoke(args=["teams", "members", "add", "blue", "loner@example.com", "viewer@example.com"])
    assert out.exit_code == 0, out.output
    with app.app_context():
        assert {u.email for u in teams.members(db.session.get(Team, roles["blue"]))} == {
            "loner@example.com", "viewer@example.com"}
    out = runner.invoke(args=["teams", "members", "remove", "blue", "viewer@example.com"])
    assert out.exit_code == 0 and "removed from team blue" in out.output
    out = runner.invoke(args=["teams", "plan", "--name", "pro", "--plan-budget", "75", "--plan-period", "week"])
    assert out.exit_code == 0 and "plan budget $75.00/week" in out.output
    with app.app_context():
        p = teams.find_plan("pro")
        assert (p.pool_budget_usd, p.pool_period) == (75.0, "week")
    out = runner.invoke(args=["teams", "plan", "--name", "pro", "--plan-budget", "none"])
    assert out.exit_code == 0
    with app.app_context():
        assert teams.find_plan("pro").pool_budget_usd is None
    assert runner.invoke(args=["teams", "plan", "--name", "pro", "--plan-budget", "lots"]).exit_code == 2
    out = runner.invoke(args=["teams", "delete", "blue", "--yes"])
    assert out.exit_code == 0, out.output
    with app.app_context():
        assert db.session.get(Team, roles["blue"]) is None
        assert db.session.scalar(select(User).where(User.email == "loner@example.com")).team_id is None
    out = runner.invoke(args=["teams", "plan-delete", "pro", "--yes"])
    assert out.exit_code == 0
    actions = {r.action for r in audit(app, "team.delete") + audit(app, "team.member_add") +
               audit(app, "team.member_remove") + audit(app, "plan.delete")}
    assert actions == {"team.delete", "team.member_add", "team.member_remove", "plan.delete"}
    assert runner.invoke(args=["teams", "delete", "nope", "--yes"]).exit_code == 1
