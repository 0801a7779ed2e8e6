"""The keys list in the console: batch actions (who may run which, on which keys, audited with
the prefixes they hit), state/team/plan filters, the valid-from date and the limits that apply."""
from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from console_client import Console, make_user
from sqlalchemy import select

from gateway.extensions import db
from gateway.models import ApiKey, AuditLog, utcnow
from gateway.services.accounting import keys, teams
from gateway.services.admin import catalog_admin
from tests.helpers import add_provider

EVIL = "<script>alert(1)</script>"
ESC = "&lt;script&gt;alert(1)&lt;/script&gt;"
ADMIN, MEMBER, VIEWER, MATE = "admin@example.com", "member@example.com", "viewer@example.com", "mate@example.com"


@pytest.fixture
def world(sqlite_app):
    """A plan-restricted team with a member and a teammate, an admin, a viewer, and keys of each."""
    app = sqlite_app
    add_provider(app, "mockp", "mock", None, ["demo-chat", "other-chat"])
    with app.app_context():
        plan = teams.save_plan("starter", models=["demo-chat"], rpm=100)
        team = teams.save_team("red", plan_id=plan.id)
        blue = teams.save_team("blue")
        catalog_admin.save_policy("cheap", strategy="cost")
        ids = {"plan": plan.id, "team": team.id, "blue": blue.id}
    ids["admin"] = make_user(app, ADMIN, "admin")
    ids["member"] = make_user(app, MEMBER, "member", ids["team"])
    ids["mate"] = make_user(app, MATE, "member", ids["team"])
    make_user(app, VIEWER, "viewer")
    soon = utcnow() + timedelta(days=10)
    with app.app_context():
        def key(name, **kw):
            return keys.create_key(name, **kw)[0].id
        ids["mine"] = key("mine", user_id=ids["member"], team_id=ids["team"], plan_id=ids["plan"],
                          expires_at=soon, token_quota=1000)
        ids["mine2"] = key(EVIL, user_id=ids["member"], team_id=ids["team"], expires_at=soon)
        ids["mates"] = key("mates", user_id=ids["mate"], team_id=ids["team"], expires_at=soon)
        ids["admins"] = key("admins", user_id=ids["admin"], expires_at=soon)
        ids["never"] = key("never", user_id=ids["admin"])
    app.ids = ids
    return app


def stored(app, key_id: int) -> ApiKey | None:
    with app.app_context():
        key = db.session.get(ApiKey, key_id)
        if key is not None:
            db.session.expunge(key)
        return key


def prefix(app, key_id: int) -> str:
    return stored(app, key_id).prefix


def last_audit(app) -> AuditLog:
    with app.app_context():
        row = db.session.scalars(select(AuditLog).order_by(AuditLog.id.desc())).first()
        db.session.expunge(row)
        return row


def batch(c: Console, ids: list[int], action: str, **fields):
    return c.post("/keys/batch", {"ids": [str(i) for i in ids], "action": action, **fields})


def test_admin_extends_expiry_by_days_and_to_a_date_and_the_audit_names_the_prefixes(world):
    ids, c = world.ids, Console(world, ADMIN)
    before = {k: stored(world, ids[k]).expires_at for k in ("mine", "admins")}
    r = batch(c, [ids["mine"], ids["admins"], ids["never"]], "extend", days="30")
    assert r.status_code == 303
    for k in ("mine", "admins"):
        assert stored(world, ids[k]).expires_at == before[k] + timedelta(days=30)
    assert stored(world, ids["never"]).expires_at is None        # extending "never" would shorten it
    row = last_audit(world)
    assert row.action == "key.batch_extend" and row.target == "2 keys" and row.details["days"] == 30
    assert sorted(row.details["prefixes"]) == sorted([prefix(world, ids["mine"]), prefix(world, ids["admins"])])
    assert row.details["skipped"] == {prefix(world, ids["never"]): "it never expires"}
    page = c.get("/audit").text
    assert prefix(world, ids["mine"]) in page and "[redacted]" not in page
    assert batch(c, [ids["admins"]], "extend", until="2040-06-30").status_code == 303
    assert stored(world, ids["admins"]).expires_at == datetime(2040, 6, 30)
    assert last_audit(world).details["until"] == "2040-06-30T00:00:00"


def test_batch_quota_enable_policy_and_team(world):
    ids, c = world.ids, Console(world, ADMIN)
    assert batch(c, [ids["admins"], ids["never"]], "quota", token_quota="5000", budget_usd="2.5").status_code == 303
    for k in ("admins", "never"):
        key = stored(world, ids[k])
        assert (key.token_quota, key.budget_usd) == (5000, 2.5)
    row = last_audit(world)
    assert row.action == "key.batch_quota" and row.details["token_quota"] == 5000 and row.details["budget_usd"] == 2.5
    assert batch(c, [ids["admins"]], "disable").status_code == 303 and stored(world, ids["admins"]).enabled is False
    assert batch(c, [ids["admins"]], "enable").status_code == 303 and stored(world, ids["admins"]).enabled is True
    assert batch(c, [ids["admins"], ids["never"]], "policy", policy="cheap").status_code == 303
    assert stored(world, ids["never"]).policy == "cheap" and last_audit(world).details["policy"] == "cheap"
    assert batch(c, [ids["never"]], "team", team_id=str(ids["blue"])).status_code == 303
    assert stored(world, ids["never"]).team_id == ids["blue"] and last_audit(world).details["team_id"] == ids["blue"]
    assert batch(c, [ids["never"]], "team", team_id="").status_code == 303
    assert stored(world, ids["never"]).team_id is None
    assert batch(c, [ids["never"]], "delete").status_code == 303 and stored(world, ids["never"]) is None


@pytest.mark.parametrize("action, fields, message", [
    ("extend", {"days": "0"}, "Extend by 1 to 3650 days"),
    ("extend", {}, "one of them"),
    ("extend", {"until": "2001-01-01"}, "in the past"),
    ("quota", {}, "Give a token quota, a budget, or both"),
    ("quota", {"token_quota": "lots"}, "Enter a number"),
    ("policy", {"policy": "nope"}, "no policy named"),
    ("bogus", {}, "Unknown batch action"),
])
def test_bad_batch_input_changes_nothing_and_says_why(world, action, fields, message):
    ids, c = world.ids, Console(world, ADMIN)
    before = stored(world, ids["admins"])
    r = batch(c, [ids["admins"]], action, **fields)
    assert r.status_code == 303
    assert message in c.get("/keys").text
    after = stored(world, ids["admins"])
    assert (after.expires_at, after.token_quota, after.policy) == (before.expires_at, before.token_quota, before.policy)
    with world.app_context():
        assert not db.session.scalar(select(AuditLog).where(AuditLog.action.startswith("key.batch")))


def test_a_member_batches_only_their_own_keys_within_their_ceiling(world):
    ids, c = world.ids, Console(world, MEMBER)
    mine_before = stored(world, ids["mine"])
    r = batch(c, [ids["mine"], ids["mates"], ids["admins"]], "quota", token_quota="500")
    assert r.status_code == 303
    assert stored(world, ids["mine"]).token_quota == 500                 # narrowed: allowed
    assert stored(world, ids["mates"]).token_quota is None               # a teammate's key: skipped
    assert stored(world, ids["admins"]).token_quota is None              # not even visible
    row = last_audit(world)
    assert row.actor == MEMBER and row.details["prefixes"] == [mine_before.prefix]
    assert row.details["skipped"] == {prefix(world, ids["mates"]): "a member may batch only their own keys"}
    assert prefix(world, ids["admins"]) not in str(row.details)        # nothing said about keys out of reach
    # widening past the admin-set ceiling: skipped with the ceiling's reason
    assert batch(c, [ids["mine"]], "quota", token_quota="5000").status_code == 303
    assert stored(world, ids["mine"]).token_quota == 500
    assert "At most 1,000 tokens" in last_audit(world).details["skipped"][mine_before.prefix]
    assert batch(c, [ids["mine"]], "extend", days="30").status_code == 303
    assert stored(world, ids["mine"]).expires_at == mine_before.expires_at      # past the admin-set expiry
    assert "choose that day or an earlier one" in str(last_audit(world).details["skipped"])
    # policy and team are admin-only, here as in the key form
    for action, fields in (("policy", {"policy": "cheap"}), ("team", {"team_id": str(ids["blue"])})):
        assert batch(c, [ids["mine2"]], action, **fields).status_code == 303
        assert "Only an admin" in c.get("/keys").text
    key = stored(world, ids["mine2"])
    assert key.policy is None and key.team_id == ids["team"]
    page = c.get("/keys").text
    assert 'value="policy"' not in page and 'value="team"' not in page and 'value="extend"' in page


def test_viewers_anonymous_and_forged_posts_cannot_batch(world):
    ids = world.ids
    assert batch(Console(world, VIEWER), [ids["admins"]], "disable").status_code == 403
    assert 'name="action"' not in Console(world, VIEWER).get("/keys").text
    anon = world.test_client().post("/keys/batch", data={"ids": [str(ids["admins"])], "action": "disable"})
    assert anon.status_code in (302, 401, 403)
    c = Console(world, ADMIN)
    assert c.post("/keys/batch", {"ids": [str(ids["admins"])], "action": "disable"}, csrf=False).status_code == 403
    assert stored(world, ids["admins"]).enabled is True


def test_state_filters_match_what_the_gateway_refuses(world):
    ids, c = world.ids, Console(world, ADMIN)
    with world.app_context():
        keys.update_key(db.session.get(ApiKey, ids["admins"]), enabled=False)
        keys.update_key(db.session.get(ApiKey, ids["mates"]), valid_from=utcnow() + timedelta(days=1))
        expired = db.session.get(ApiKey, ids["never"])
        expired.expires_at = utcnow() - timedelta(days=1)
        keys.revoke_key(db.session.get(ApiKey, ids["mine2"]))
        db.session.commit()

    def names(query: str) -> set[str]:
        html = c.get(f"/keys?{query}", headers={"HX-Request": "true"}).text
        return {n for n in ("mine", "mates", "admins", "never", ESC) if f">{n}</a>" in html}

    assert names("state=active") == {"mine"}                    # not the disabled one any more
    assert names("state=disabled") == {"admins"}
    assert names("state=expired") == {"never"}
    assert names("state=not-yet-valid") == {"mates"}
    assert names("state=revoked") == {ESC}
    assert names("state=bogus") == names("") == {"mine", "mates", "admins", "never", ESC}
    assert names(f"team_id={ids['team']}") == {"mine", "mates", ESC}
    assert names(f"plan_id={ids['plan']}") == {"mine"}
    assert names(f"state=active&team_id={ids['blue']}") == set()
    page = c.get("/keys?state=not-yet-valid").text
    assert 'state-not-yet-valid' in page and "not yet valid" in page


def test_list_and_detail_show_the_limits_that_apply(world):
    ids, c = world.ids, Console(world, ADMIN)
    page = c.get("/keys").text
    assert "models: demo-chat (plan starter) · 1,000 tok · rpm 100 (plan starter)" in page
    detail = c.get(f"/keys/{ids['mine']}").text
    assert 'id="effective-limits"' in detail
    section = detail.split('id="effective-limits"')[1].split("</section>")[0]
    assert "demo-chat" in section and "plan starter" in section and ">all<" not in section
    assert "1,000 tokens in total" in section and "100 requests a minute" in section
    assert EVIL not in c.get(f"/keys/{ids['mine2']}").text and EVIL not in page


def test_the_form_sets_valid_from_and_refuses_past_expiries(world):
    ids, c = world.ids, Console(world, ADMIN)
    base = {"name": "dated", "quota_period": "total"}
    r = c.post("/keys", {**base, "expires_at": "2001-01-01"})
    assert r.status_code == 422 and 'id="expires_at-error"' in r.text and "in the past" in r.text
    r = c.post("/keys", {**base, "valid_from": "2040-02-01", "expires_at": "2040-01-01"})
    assert r.status_code == 422 and 'id="valid_from-error"' in r.text
    r = c.post("/keys", {**base, "valid_from": "someday"})
    assert r.status_code == 422 and "Use a date like" in r.text
    r = c.post("/keys", {**base, "valid_from": "2039-01-01", "expires_at": "2040-01-01"})
    assert r.status_code == 200
    with world.app_context():
        key = db.session.scalar(select(ApiKey).where(ApiKey.name == "dated"))
        assert key.valid_from == datetime(2039, 1, 1)
        key_id = key.id
    assert last_audit(world).details["valid_from"] == "2039-01-01T00:00:00"
    assert 'value="2039-01-01"' in c.get(f"/keys/{key_id}/edit").text
    assert "2039-01-01" in c.get(f"/keys/{key_id}").text and "not-yet-valid" in c.get(f"/keys/{key_id}").text
    assert "2039-01-01 → 2040-01-01" in c.get("/keys").text
    # an expired key can still be renamed: its stored expiry is not "a new past date"
    with world.app_context():
        db.session.get(ApiKey, ids["never"]).expires_at = datetime(2020, 1, 1)
        db.session.commit()
    form = {"name": "renamed", "expires_at": "2020-01-01", "quota_period": "total", "enabled": "on"}
    assert c.post(f"/keys/{ids['never']}", form).status_code == 303
    assert stored(world, ids["never"]).name == "renamed"


def test_the_detail_writes_a_key_budget_as_money(world):
    ids, c = world.ids, Console(world, ADMIN)
    with world.app_context():
        keys.update_key(db.session.get(ApiKey, ids["admins"]), budget_usd=0.00002, token_quota=1_500_000)
    settings = c.get(f"/keys/{ids['admins']}").text.split("<h2>Settings</h2>")[1].split("</section>")[0]
    assert "$0.00002" in settings and "1,500,000" in settings and "2e-05" not in settings


def test_the_keys_page_does_not_query_per_row(world):
    from sqlalchemy import event
    c = Console(world, ADMIN)
    with world.app_context():
        for i in range(30):         # each on its own team and plan, so nothing is loaded once for all
            plan = teams.save_plan(f"plan {i}", rpm=i + 1)
            keys.create_key(f"bulk {i}", team_id=teams.save_team(f"team {i}", plan_id=plan.id).id, plan_id=plan.id)
        engine = db.engine
    statements = []

    def listener(*args):
        statements.append(args[2])
    event.listen(engine, "before_cursor_execute", listener)
    try:
        assert c.get("/keys").status_code == 200
    finally:
        event.remove(engine, "before_cursor_execute", listener)
    assert len(statements) < 20, len(statements)


def test_the_owner_column_names_a_team_key_without_an_owner(world):
    """A team's key with no owner read "— · blue": a dash for the owner, then the team's bare name."""
    with world.app_context():
        keys.create_key("service", team_id=world.ids["blue"])
    rows = Console(world, ADMIN).get("/keys").text
    service = rows[rows.index(">service<"):].split("</tr>")[0]
    assert '<span class="muted">team blue</span>' in service and "—" not in service.split("<td>")[1]
    mine = rows[rows.index(">mine<"):].split("</tr>")[0]
    assert f"{MEMBER}<br><span class=\"muted\">team red</span>" in mine
