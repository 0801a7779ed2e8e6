"""Members narrow keys, never widen them: the ceiling is what an admin set on the key (kept in
admin_limits), else its plan; a member's new key is on their team's plan and within it."""
from __future__ import annotations

from datetime import datetime

import pytest
from sqlalchemy import select

from console_client import Console, make_user
from gateway.errors import InvalidRequest
from gateway.extensions import db
from gateway.models import ApiKey, AuditLog, Team
from gateway.services.accounting import key_ceiling, keys, teams
from tests.helpers import add_provider

MEMBER = "member@example.com"
CHAT = {"model": "demo-chat", "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture
def team_app(sqlite_app):
    """A team on a plan, a member in it, an admin, and two models."""
    app = sqlite_app
    add_provider(app, "mockp", "mock", None, ["demo-chat", "other-chat"])
    with app.app_context():
        plan = teams.save_plan("starter", rpm=100, budget_usd=5.0, quota_period="month", models=["demo-chat"])
        team = teams.save_team("red", plan_id=plan.id)
        team_id = team.id
    make_user(app, "admin@example.com", "admin")
    app.member_id = make_user(app, MEMBER, "member", team_id)
    app.team_id = team_id
    return app


def admin_key(app, **limits) -> int:
    """A key an admin made for the member, with these limits."""
    with app.app_context():
        key, _ = keys.create_key("restricted", user_id=app.member_id, team_id=app.team_id, **limits)
        return key.id


def form(**fields) -> dict:
    """The edit form as a browser sends it: every field, empty unless given."""
    base = {"name": "restricted", "models": [], "expires_at": "", "ip_allow": "", "quota_period": "total",
            "token_quota": "", "budget_usd": "", "rpm": "", "tpm": "", "max_parallel": "", "enabled": "on"}
    return {**base, **fields}


def stored(app, key_id: int) -> ApiKey:
    with app.app_context():
        key = db.session.get(ApiKey, key_id)
        db.session.expunge(key)
        return key


def test_empty_fields_keep_the_restrictions_an_admin_set(team_app):
    kid = admin_key(team_app, models=["demo-chat"], expires_at=datetime(2031, 1, 31), ip_allow="10.0.0.0/8",
                    rpm=20, token_quota=1000, quota_period="day")
    c = Console(team_app, MEMBER)
    assert c.post(f"/keys/{kid}", form(name="mine now", quota_period="day")).status_code == 303
    k = stored(team_app, kid)
    assert k.name == "mine now" and k.models == ["demo-chat"] and k.expires_at == datetime(2031, 1, 31)
    assert k.ip_allow == ["10.0.0.0/8"] and k.rpm == 20 and k.token_quota == 1000 and k.quota_period == "day"


@pytest.mark.parametrize("field, value, message", [
    ("models", ["demo-chat", "other-chat"], "other-chat is not among them"),
    ("expires_at", "2031-02-01", "expire on 2031-01-31"),
    ("ip_allow", "0.0.0.0/0", "outside the ranges an admin allowed"),
    ("ip_allow", "10.0.0.0/8, 192.168.1.1", "192.168.1.1/32 is outside"),
    ("rpm", "21", "At most 20 requests a minute"),
    ("token_quota", "1001", "At most 1,000 tokens"),
    ("quota_period", "month", "The period is day"),
])
def test_a_member_cannot_widen_a_key(team_app, field, value, message):
    kid = admin_key(team_app, models=["demo-chat"], expires_at=datetime(2031, 1, 31), ip_allow="10.0.0.0/8",
                    rpm=20, token_quota=1000, quota_period="day")
    before = stored(team_app, kid)
    c = Console(team_app, MEMBER)
    r = c.post(f"/keys/{kid}", form(**{"quota_period": "day", field: value}))
    assert r.status_code == 422
    assert message in r.text and f'id="{field}-error"' in r.text      # next to the field
    after = stored(team_app, kid)
    assert (after.models, after.expires_at, after.ip_allow, after.rpm, after.token_quota, after.quota_period) == \
        (before.models, before.expires_at, before.ip_allow, before.rpm, before.token_quota, before.quota_period)


def test_a_member_narrows_and_widens_again_up_to_the_admin_set_ceiling(team_app):
    kid = admin_key(team_app, rpm=20, ip_allow="10.0.0.0/8", expires_at=datetime(2031, 1, 31))
    c = Console(team_app, MEMBER)
    assert c.post(f"/keys/{kid}", form(rpm="5", ip_allow="10.1.0.0/16", expires_at="2030-06-01")).status_code == 303
    k = stored(team_app, kid)
    assert (k.rpm, k.ip_allow, k.expires_at) == (5, ["10.1.0.0/16"], datetime(2030, 6, 1))
    assert c.post(f"/keys/{kid}", form(rpm="20")).status_code == 303     # back up to what the admin set
    k = stored(team_app, kid)
    assert (k.rpm, k.ip_allow, k.expires_at) == (20, ["10.0.0.0/8"], datetime(2031, 1, 31))
    assert c.post(f"/keys/{kid}", form(rpm="21")).status_code == 422


def test_an_admin_edit_moves_the_ceiling(team_app):
    kid = admin_key(team_app, rpm=20)
    admin, member = Console(team_app, "admin@example.com"), Console(team_app, MEMBER)
    assert member.post(f"/keys/{kid}", form(rpm="50")).status_code == 422
    owner = {"user_id": str(team_app.member_id), "team_id": str(team_app.team_id)}
    assert admin.post(f"/keys/{kid}", form(rpm="60", **owner)).status_code == 303
    assert member.post(f"/keys/{kid}", form(rpm="50")).status_code == 303
    assert stored(team_app, kid).rpm == 50


def test_a_members_new_key_is_on_the_team_plan_and_within_it(team_app):
    c = Console(team_app, MEMBER)
    page = c.get("/keys/new").text
    assert "at most 100 requests a minute" in page and "other-chat" not in page
    r = c.post("/keys", {"name": "too much", "rpm": "500", "budget_usd": "10", "models": ["other-chat"],
                         "quota_period": "day"})
    assert r.status_code == 422
    for field in ("rpm", "budget_usd", "models", "quota_period"):
        assert f'id="{field}-error"' in r.text, field
    assert c.post("/keys", {"name": "mine", "rpm": "50", "quota_period": "month"}).status_code == 200
    with team_app.app_context():
        key = db.session.scalar(select(ApiKey).where(ApiKey.name == "mine"))
        i = keys.info(key)
        assert key.user_id == team_app.member_id and key.team_id == team_app.team_id
        assert key.plan_id == teams.team_plan(team_app.team_id).id
        assert i.rpm == 50 and i.budget_usd == 5.0 and i.quota_period == "month" and i.models == {"demo-chat"}


def test_a_member_without_a_plan_gets_the_limits_they_ask_for(sqlite_app):
    make_user(sqlite_app, MEMBER, "member")
    c = Console(sqlite_app, MEMBER)
    assert c.post("/keys", {"name": "mine", "rpm": "30", "budget_usd": "2.5", "ip_allow": "10.0.0.1",
                            "quota_period": "week"}).status_code == 200
    with sqlite_app.app_context():
        key = db.session.scalar(select(ApiKey))
        assert (key.rpm, key.budget_usd, key.quota_period, key.ip_allow) == (30, 2.5, "week", ["10.0.0.1/32"])
        assert key.admin_limits == {}       # nothing set by an admin: the member may raise it again


def test_a_member_cannot_enable_a_key_an_admin_disabled(team_app):
    kid = admin_key(team_app)
    with team_app.app_context():
        keys.update_key(db.session.get(ApiKey, kid), enabled=False)
    c = Console(team_app, MEMBER)
    assert "Disabled by an admin" in c.get(f"/keys/{kid}").text
    c.post(f"/keys/{kid}/enable")
    assert stored(team_app, kid).enabled is False
    assert "only an admin can enable it" in c.get(f"/keys/{kid}").text       # the flash
    r = c.post(f"/keys/{kid}", form())
    assert r.status_code == 422 and 'id="enabled-error"' in r.text
    # a key the member disabled themselves, they may enable again
    own = admin_key(team_app)
    c.post(f"/keys/{own}/disable")
    c.post(f"/keys/{own}/enable")
    assert stored(team_app, own).enabled is True


def test_keys_from_before_ceilings_are_bounded_by_their_current_settings(team_app):
    kid = admin_key(team_app, rpm=20)
    with team_app.app_context():
        key = db.session.get(ApiKey, kid)
        key.admin_limits = None         # as the migration leaves existing keys
        db.session.commit()
    c = Console(team_app, MEMBER)
    assert c.post(f"/keys/{kid}", form(rpm="21")).status_code == 422
    assert c.post(f"/keys/{kid}", form(rpm="10")).status_code == 303
    assert c.post(f"/keys/{kid}", form(rpm="20")).status_code == 303       # the ceiling was kept
    assert stored(team_app, kid).admin_limits["rpm"] == 20


def test_the_plan_bounds_what_an_admin_left_open(team_app):
    kid = admin_key(team_app)
    with team_app.app_context():
        keys.update_key(db.session.get(ApiKey, kid), plan_id=teams.team_plan(team_app.team_id).id)
    c = Console(team_app, MEMBER)
    assert c.post(f"/keys/{kid}", form(rpm="101", quota_period="month")).status_code == 422
    assert c.post(f"/keys/{kid}", form(rpm="", quota_period="month")).status_code == 303
    with team_app.app_context():
        assert keys.info(db.session.get(ApiKey, kid)).rpm == 100       # inherited from the plan


def test_the_service_refuses_a_wider_setting_for_a_member(team_app):
    kid = admin_key(team_app, rpm=20)
    with team_app.app_context():
        key = db.session.get(ApiKey, kid)
        with pytest.raises(InvalidRequest) as e:
            keys.update_key(key, ceiling=key_ceiling.for_key(key), rpm=1000)
        assert e.value.param == "rpm"
        keys.update_key(key, ceiling=key_ceiling.for_key(key), rpm=None)     # empty: the most allowed
        assert key.rpm == 20


def test_the_update_is_audited_with_what_was_stored(team_app):
    kid = admin_key(team_app, rpm=20, expires_at=datetime(2031, 1, 31))
    Console(team_app, MEMBER).post(f"/keys/{kid}", form(rpm="7"))
    with team_app.app_context():
        entry = db.session.scalar(select(AuditLog).where(AuditLog.action == "key.update"))
        assert entry.details["rpm"] == 7 and entry.details["expires_at"] == "2031-01-31T00:00:00"


def test_cli_sets_a_teams_plan(team_app):
    runner = team_app.test_cli_runner()
    out = runner.invoke(args=["teams", "plan", "--name", "pro", "--rpm", "1000"])
    assert out.exit_code == 0, out.output
    out = runner.invoke(args=["teams", "create", "--name", "red", "--plan", "pro"])
    assert out.exit_code == 0 and "plan pro" in out.output, out.output
    with team_app.app_context():
        assert db.session.get(Team, team_app.team_id).plan_id == teams.find_plan("pro").id


def test_a_member_may_delay_a_key_but_not_start_it_before_the_admin_set_date(team_app):
    kid = admin_key(team_app, valid_from=datetime(2030, 1, 1), expires_at=datetime(2031, 1, 31))
    c = Console(team_app, MEMBER)
    r = c.post(f"/keys/{kid}", form(valid_from="2029-06-01"))
    assert r.status_code == 422 and 'id="valid_from-error"' in r.text and "start on 2030-01-01" in r.text
    assert 'min="2030-01-01"' in r.text
    assert c.post(f"/keys/{kid}", form(valid_from="2030-03-01")).status_code == 303
    assert stored(team_app, kid).valid_from == datetime(2030, 3, 1)
    assert c.post(f"/keys/{kid}", form()).status_code == 303              # empty: back to the admin's date
    assert stored(team_app, kid).valid_from == datetime(2030, 1, 1)
    r = c.post(f"/keys/{kid}", form(expires_at="2029-12-31"))
    assert r.status_code == 422 and "must come first" in r.text


def test_a_plan_restricted_members_key_shows_the_plans_models_not_all(team_app):
    c = Console(team_app, MEMBER)
    assert c.post("/keys", form(name="fresh", quota_period="month")).status_code == 200
    with team_app.app_context():
        kid = db.session.scalar(select(ApiKey.id).where(ApiKey.name == "fresh"))
    detail = c.get(f"/keys/{kid}").text.split('id="effective-limits"')[1].split("</section>")[0]
    assert "demo-chat" in detail and "plan starter" in detail and ">all<" not in detail
    assert "$5.00 a month" in detail and "100 requests a minute" in detail
    assert "models: demo-chat (plan starter)" in c.get("/keys").text
