"""Walking every console route: one of each object seeded (optionally under hostile names),
URLs built for every `console.*` rule from a registry of URL parameters, and a snapshot of the
database to tell whether a request changed anything. Shared by tests/test_console_walk.py and
bench/console_pages.py, so a new page is walked, checked and timed without touching either.

A new route whose URL has a parameter this file does not know fails the walk: add the
parameter to PARAMS (or, when its meaning depends on the page, to ENDPOINT_PARAMS) saying
which seeded object fills it. A new kind of user-editable name: seed it in `seed()` under
`name("<field>")` and add the field to FIELDS, and every page is checked to escape it; once a
page shows a field listed in NOT_SHOWN_YET, take it off that list so the check must find it.
"""
from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import timedelta

from sqlalchemy import func, select

from gateway.extensions import db
from gateway.models import Alert, Alias, LoginFailure, UsageRecord, utcnow
from gateway.services.accounting import keys, teams
from gateway.services.accounting.usage import UsageEntry, UsageRecorder, row
from gateway.services.admin import audit, catalog_admin, users
from tests.console_client import PASSWORD, make_user

# The user-editable strings seed() names; test_console_walk checks each renders escaped.
FIELDS = ("key", "provider", "model", "alias", "policy", "team", "plan", "tag", "tagvalue", "user",
          "audit", "error", "alert")
# Seeded, but shown by no page yet (the teams, plans and alerts pages are on their way).
NOT_SHOWN_YET = ()


def hostile(field: str) -> str:
    """A value that breaks out of an attribute and opens a script, marked with its field."""
    return f'"><script>alert({field})</script>'


def hostile_email(field: str = "user") -> str:
    return f"<script>alert({field})</script>@example.com"


def escaped_markers(field: str) -> tuple[str, ...]:
    """How hostile(field) looks once escaped: by Jinja's autoescape, or inside |tojson."""
    return (f"&lt;script&gt;alert({field})&lt;/script&gt;", f"\\u003cscript\\u003ealert({field})")


RAW_MARKER = "<script>alert("

# URL parameter -> its value, from what seed() made. Every role can see these objects (the
# member's own key and request), so a page's answer depends on the role alone.
PARAMS: dict[str, Callable[[dict], object]] = {
    "key_id": lambda w: w["member_key"],
    "provider_id": lambda w: w["provider"],
    "deployment_id": lambda w: w["deployment"],
    "user_id": lambda w: w["other_user"],          # never the acting user: a POST may deactivate it
    "record_id": lambda w: w["record"],
    "fmt": lambda w: "csv",
    "name": lambda w: w["model"],
    "model": lambda w: w["model"],
    "team_id": lambda w: w["team"],
    "plan_id": lambda w: w["plan"],
    "tag_budget_id": lambda w: w["tag_budget"],
    "budget_id": lambda w: w["tag_budget"],
    "alias_id": lambda w: w["alias_id"],
    "alias": lambda w: w["alias"],
    "policy_id": lambda w: w["policy_id"],
    "policy": lambda w: w["policy"],
    "alert_id": lambda w: w["alert"],
    "audit_id": lambda w: w["audit"],
    "month": lambda w: f"{utcnow():%Y-%m}",
}
# (endpoint, parameter) -> value, where a parameter's name means different things on different pages.
ENDPOINT_PARAMS: dict[tuple[str, str], Callable[[dict], object]] = {}


class UnknownParameter(LookupError):
    pass


def console_rules(app) -> list:
    """Every console rule, reads first and destructive writes last (so later requests still
    find their objects)."""
    rules = [r for r in app.url_map.iter_rules() if r.endpoint.startswith("console.")]
    return sorted(rules, key=lambda r: ("GET" not in r.methods, any(w in r.endpoint for w in ("delete", "revoke")),
                                        r.rule))


def methods(rule) -> list[str]:
    return sorted(rule.methods - {"HEAD", "OPTIONS"})


def url_for_rule(app, rule, world: dict) -> str:
    """The rule's URL with its parameters filled from `world`; UnknownParameter names the one
    nobody registered."""
    values = {}
    for arg in sorted(rule.arguments):
        fill = ENDPOINT_PARAMS.get((rule.endpoint, arg)) or PARAMS.get(arg)
        if fill is None:
            raise UnknownParameter(
                f"console route {rule.rule} ({rule.endpoint}) has URL parameter <{arg}> that the console walk "
                f"does not know: add {arg!r} to PARAMS in tests/console_walk.py (or ({rule.endpoint!r}, {arg!r}) "
                "to ENDPOINT_PARAMS) saying which seeded object fills it, seeding one in seed() if needed")
        values[arg] = fill(world)
    return app.url_map.bind("localhost").build(rule.endpoint, values, method=methods(rule)[0])


def get_pages(app, world: dict) -> list[tuple[str, str]]:
    """(endpoint, URL) of every GET console route."""
    return [(r.endpoint, url_for_rule(app, r, world)) for r in console_rules(app) if "GET" in r.methods]


def seed(app, bad_names: bool = False, records: int = 3) -> dict:
    """One of every console object, plus users admin@, member@ (on the team, owning
    `member_key` and `record`) and viewer@example.com; with `bad_names`, every user-editable
    name is hostile(field). Returns the ids and names PARAMS reads."""
    def name(field: str, plain: str) -> str:
        return hostile(field) if bad_names else plain

    w: dict = {}
    with app.app_context():
        plan = teams.save_plan(name("plan", "gold"), models=None, token_quota=1_000_000)
        team = teams.save_team(name("team", "red"), budget_usd=100.0, plan_id=plan.id)
        tb = teams.save_tag_budget(name("tag", "feature"), name("tagvalue", "search"), 50.0)
        w.update(plan=plan.id, team=team.id, tag_budget=tb.id, tag=tb.tag, tag_value=tb.value)
    w["admin"] = make_user(app, "admin@example.com", "admin")
    w["member"] = make_user(app, "member@example.com", "member", w["team"])
    w["viewer"] = make_user(app, "viewer@example.com", "viewer")
    w["other_user"] = make_user(app, hostile_email() if bad_names else "other@example.com", "member")
    model, provider = name("model", "demo-chat"), name("provider", "mockp")
    with app.app_context():
        p = catalog_admin.save_provider(provider, "mock", models=[model], api_key="sk-upstream-secret-123456")
        w.update(provider=p.id, deployment=p.deployments[0].id, model=model, provider_name=provider)
        catalog_admin.save_price(model, 0.5, 1.5)
        alias, policy = name("alias", "chat-latest"), name("policy", "cheap")
        row_ = catalog_admin.save_policy(policy, strategy="cost", candidates=[model])
        catalog_admin.set_alias(alias, model)
        w.update(alias=alias, policy=policy, policy_id=row_.id,
                 alias_id=db.session.scalar(select(Alias.id).where(Alias.name == alias)))
        mine, _ = keys.create_key(name("key", "member key"), user_id=w["member"], team_id=w["team"])
        other, _ = keys.create_key(name("key", "admin key"), user_id=w["admin"], policy=policy)
        w.update(member_key=mine.id, other_key=other.id)
        admin = users.find_user("admin@example.com")
        a = audit.record(admin, "key.create", name("audit", "a target"), {"name": name("audit", "n")})
        w["audit"] = a.id
        alert = Alert(scope=f"team:{w['team']}", label=name("alert", "team red"), period_start=utcnow(),
                      threshold=80, spent_usd=80.0, budget_usd=100.0)
        db.session.add(alert)
        db.session.commit()
        w["alert"] = alert.id
        now = utcnow()
        entries = [UsageEntry(
            request_id=f"walk-{uuid.uuid4().hex[:12]}", endpoint="chat", status=200 if i else 502,
            created_at=now - timedelta(minutes=5 + i), key_id=mine.id if i % 2 == 0 else other.id,
            key_prefix=(mine if i % 2 == 0 else other).prefix,
            user_id=w["member"] if i % 2 == 0 else w["admin"], requested_model=model, provider_id=p.id,
            provider=provider, upstream_model=model, prompt_tokens=4, completion_tokens=6, total_tokens=10,
            cost_usd=0.25, latency_ms=120.0 + i, tags={tb.tag: tb.value},
            error_type=None if i else "upstream_error", error_message=None if i else name("error", "bad gateway"),
            attempts=[{"provider": provider, "status": 200 if i else 502}]) for i in range(records)]
        UsageRecorder._insert([row(e) for e in entries])
        w["record"] = db.session.scalar(select(func.min(UsageRecord.id)).where(UsageRecord.key_id == w["member_key"]))
    w["password"] = PASSWORD
    return w


# Rows that change without anyone changing the configuration: a failed login is counted.
_VOLATILE = {LoginFailure.__tablename__}


def snapshot(app) -> dict:
    """Every table's rows, to compare before and after a request that must change nothing."""
    with app.app_context():
        db.session.remove()
        out = {}
        for table in db.metadata.sorted_tables:
            if table.name in _VOLATILE:
                continue
            out[table.name] = sorted(map(repr, db.session.execute(select(table)).all()))
        db.session.remove()
        return out


def changed(before: dict, after: dict) -> list[str]:
    """The tables whose rows differ."""
    return [name for name in before if before[name] != after.get(name)]
