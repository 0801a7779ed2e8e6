"""API keys: list, create (secret shown once), edit limits, disable, rotate, delete, batch."""
from __future__ import annotations

from datetime import datetime

from flask import abort, flash, render_template, request, url_for
from flask_login import current_user

from gateway.auth.rbac import READ, WRITE, require_role
from gateway.console import bp
from gateway.console.scope import done, log_action, owner
from gateway.htmx import navigate, render
from gateway.models import ApiKey
from gateway.errors import InvalidRequest
from gateway.formatting import plain
from gateway.services.accounting import key_batch, key_ceiling, key_limits, key_scope, keys, redaction, teams
from gateway.services.admin import catalog_admin, users
from gateway.services.reporting import charts, filters
from gateway.services.routing import catalog

PER_PAGE = 50
LIMIT_FIELDS = key_ceiling.NUMBERS      # members set them too, within the key's ceiling


def _key_or_404(key_id: int) -> ApiKey:
    """A key the current user may see; 404 (not 403) so other keys' ids reveal nothing."""
    key = key_scope.find_visible(key_id, owner())
    if key is None:
        abort(404)
    return key


def _label(key: ApiKey) -> str:
    return keys.label(key)


def _changed(action: str, key: ApiKey, **details):
    """Audit a change to `key`, then show its page."""
    return done(action, _label(key), url_for("console.key_detail", key_id=key.id), key_id=key.id, **details)


def key_state(key: ApiKey) -> str:
    return key_scope.state(key)


def _ceiling(key: ApiKey | None) -> key_ceiling.Ceiling | None:
    """What bounds the current user's edit of `key` (None: a new one): nothing for an admin;
    for a member, what an admin set on the key, or their team's plan for a new key."""
    if current_user.role == "admin":
        return None
    return key_ceiling.for_key(key) if key is not None else key_ceiling.for_new(teams.team_plan(current_user.team_id))


def _choices(ceiling: key_ceiling.Ceiling | None) -> dict:
    admin = current_user.role == "admin"
    models = catalog.model_names()
    allowed = ceiling.bound("models") if ceiling is not None else None
    return {"model_names": [m for m in models if allowed is None or m in allowed], "periods": keys.PERIODS,
            "users": users.all_users() if admin else [], "teams": teams.all_teams() if admin else [],
            "plans": teams.all_plans() if admin else [],
            "policies": catalog_admin.policy_names() if admin else [], "redact_modes": redaction.MODES,
            "ceiling": ceiling}


@bp.get("/keys")
@require_role(*READ)
def keys_index():
    a = request.args
    search = a.get("q", "").strip()[:100]
    state = a.get("state", "")
    state = state if state in key_scope.STATES else ""
    team_id, plan_id = a.get("team_id", type=int), a.get("plan_id", type=int)
    page = max(1, a.get("page", 1, type=int))
    rows, more = key_scope.search(owner(), search, state, page, PER_PAGE, team_id=team_id, plan_id=plan_id)
    admin = current_user.role == "admin"
    return render("console/keys.html", "console/_key_rows.html", keys=rows, more=more, page=page,
                  spend=key_scope.spend_30d([k.id for k in rows]), key_state=key_state, search=search, state=state,
                  states=key_scope.STATES, team_id=team_id, plan_id=plan_id, teams=teams.all_teams(),
                  plans=key_scope.plans(), limits={k.id: key_limits.effective(k) for k in rows},
                  policies=catalog_admin.policy_names() if admin else [], batch_actions=_batch_actions())


@bp.get("/keys/new")
@require_role(*WRITE)
def key_new():
    ceiling = _ceiling(None)
    period = (ceiling.period if ceiling else None) or "total"
    return render_template("console/key_form.html", key=None, form={"quota_period": period}, errors={},
                           **_choices(ceiling))


def _number(raw: str, cast, name: str, errors: dict):
    """A number from the form, None when empty; keys.check() judges its range."""
    raw = raw.strip()
    try:
        return cast(raw) if raw else None
    except ValueError:
        errors[name] = "Enter a number of 0 or more, or leave it empty for no limit."
        return None


def _parse_form(existing: ApiKey | None, ceiling: key_ceiling.Ceiling | None) -> tuple[dict, dict, dict]:
    """(settings for the keys service, form values to re-show, errors by field). The form turns
    text into values; keys.check() says what is wrong with them, every field at once, a
    member's settings against the key's ceiling included."""
    f = request.form
    form = {k: f.get(k, "") for k in ("name", "expires_at", "valid_from", "quota_period", "ip_allow", "policy",
                                       "team_id", "plan_id", "user_id", "redact", "cache_ttl", *LIMIT_FIELDS)}
    form["models"] = f.getlist("models")
    form["enabled"] = f.get("enabled") == "on"
    errors: dict[str, str] = {}
    s: dict = {"name": form["name"].strip()[:100], "models": [m for m in form["models"] if m] or None,
               "ip_allow": form["ip_allow"].strip() or None}
    for name in ("expires_at", "valid_from"):      # keys.check() refuses a past expiry, or one before the start
        s[name] = _date(form[name], name, errors)
    if existing is not None:
        s["enabled"] = form["enabled"]
    for name in LIMIT_FIELDS:
        s[name] = _number(form[name], float if name == "budget_usd" else int, name, errors)
    s["quota_period"] = form["quota_period"] or "total"
    if ceiling is None:
        s["policy"] = form["policy"].strip()[:100] or None
        s["redact"] = form["redact"] or None        # empty: the policy's or the default mode
        s["cache_ttl"] = _number(form["cache_ttl"], int, "cache_ttl", errors)     # empty: the policy's
        s["team_id"] = int(form["team_id"]) if form["team_id"].isdigit() else None
        if "plan_id" in f:      # a form without the field keeps the key's plan
            s["plan_id"] = int(form["plan_id"]) if form["plan_id"].isdigit() else None
        s["user_id"] = int(form["user_id"]) if form["user_id"].isdigit() else None
    elif existing is None:      # a member's key is theirs, their team's, on their team's plan
        plan = teams.team_plan(current_user.team_id)
        s.update(user_id=current_user.id, team_id=current_user.team_id, plan_id=plan.id if plan else None)
    s, problems = keys.check({k: v for k, v in s.items() if k not in errors}, ceiling, existing)
    return s, form, {**problems, **errors}


def _date(raw: str, name: str, errors: dict) -> datetime | None:
    """A date field (YYYY-MM-DD, midnight UTC), None when empty."""
    raw = raw.strip()
    try:
        return datetime.strptime(raw, "%Y-%m-%d") if raw else None
    except ValueError:
        errors[name] = "Use a date like 2030-12-31."
        return None


@bp.post("/keys")
@require_role(*WRITE)
def key_create():
    ceiling = _ceiling(None)
    settings, form, errors = _parse_form(None, ceiling)
    if errors:
        return render_template("console/key_form.html", key=None, form=form, errors=errors, **_choices(ceiling)), 422
    key, secret = keys.create_key(settings.pop("name"), ceiling=ceiling, **settings)
    log_action("key.create", _label(key), key_id=key.id, models=key.models,
               **{k: v for k, v in settings.items() if k not in ("models",)})
    return render_template("console/key_created.html", key=key, secret=secret, rotated=False)


@bp.get("/keys/<int:key_id>")
@require_role(*READ)
def key_detail(key_id: int):
    key = _key_or_404(key_id)
    f, _ = filters.parse_filter({"range": request.args.get("range", "30d"), "key_id": str(key.id)})
    ceiling = _ceiling(key) if current_user.role != "viewer" else None
    return render_template("console/key_detail.html", key=key, state=key_state(key), totals=charts.totals(f),
                           breakdown=charts.breakdown(f, limit=20), filter=f, limits=key_limits.effective(key),
                           may_enable=ceiling is None or ceiling.may_enable)


@bp.get("/keys/<int:key_id>/edit")
@require_role(*WRITE)
def key_edit(key_id: int):
    key = _key_or_404(key_id)
    form = {"name": key.name, "models": key.models or [],
            "expires_at": key.expires_at.strftime("%Y-%m-%d") if key.expires_at else "",
            "valid_from": key.valid_from.strftime("%Y-%m-%d") if key.valid_from else "",
            "ip_allow": ", ".join(key.ip_allow or []), "enabled": key.enabled, "policy": key.policy or "",
            "redact": key.redact or "", "cache_ttl": "" if key.cache_ttl is None else str(key.cache_ttl),
            "quota_period": key.quota_period, "team_id": str(key.team_id or ""),
            "plan_id": str(key.plan_id or ""), "user_id": str(key.user_id or "")}
    for name in LIMIT_FIELDS:
        v = getattr(key, name)
        form[name] = plain(v)      # 0.00002, never 2e-05
    return render_template("console/key_form.html", key=key, form=form, errors={}, **_choices(_ceiling(key)))


@bp.post("/keys/<int:key_id>")
@require_role(*WRITE)
def key_update(key_id: int):
    key = _key_or_404(key_id)
    ceiling = _ceiling(key)
    settings, form, errors = _parse_form(key, ceiling)
    if errors:
        return render_template("console/key_form.html", key=key, form=form, errors=errors, **_choices(ceiling)), 422
    keys.update_key(key, ceiling=ceiling, **settings)
    return _changed("key.update", key, **settings)


@bp.post("/keys/<int:key_id>/disable")
@require_role(*WRITE)
def key_disable(key_id: int):
    key = _key_or_404(key_id)
    keys.update_key(key, ceiling=_ceiling(key), enabled=False)
    return _changed("key.disable", key)


@bp.post("/keys/<int:key_id>/enable")
@require_role(*WRITE)
def key_enable(key_id: int):
    key = _key_or_404(key_id)
    if key.revoked_at is not None:      # revoked is final
        return navigate(url_for("console.key_detail", key_id=key.id))
    try:
        keys.update_key(key, ceiling=_ceiling(key), enabled=True)
    except InvalidRequest as e:         # an admin disabled it: a member can't undo that
        flash(e.message)
        return navigate(url_for("console.key_detail", key_id=key.id))
    return _changed("key.enable", key)


@bp.post("/keys/<int:key_id>/revoke")
@require_role(*WRITE)
def key_revoke(key_id: int):
    key = _key_or_404(key_id)
    keys.revoke_key(key)
    return _changed("key.revoke", key)


@bp.post("/keys/<int:key_id>/rotate")
@require_role(*WRITE)
def key_rotate(key_id: int):
    key = _key_or_404(key_id)
    if key.revoked_at:
        abort(400)
    old_prefix = key.prefix
    grace = request.form.get("grace_hours", "24")
    hours = float(grace) if grace.replace(".", "", 1).isdigit() else 24.0
    key, secret = keys.rotate_key(key, grace_seconds=min(hours, 24 * 30) * 3600)
    log_action("key.rotate", _label(key), key_id=key.id, old_prefix=old_prefix, grace_hours=hours)
    return render_template("console/key_created.html", key=key, secret=secret, rotated=True)


@bp.post("/keys/<int:key_id>/delete")
@require_role(*WRITE)
def key_delete(key_id: int):
    key = _key_or_404(key_id)
    label, kid = _label(key), key.id     # the row is gone after the delete
    keys.delete_key(key)
    return done("key.delete", label, url_for("console.keys_index"), key_id=kid)


def _batch_actions() -> list[tuple[str, str]]:
    """(action, button label) the current user may run on selected keys."""
    labels = {"enable": "Enable", "disable": "Disable", "delete": "Delete", "extend": "Extend expiry",
              "quota": "Set quota / budget", "policy": "Assign policy", "team": "Assign team"}
    admin = current_user.role == "admin"
    return [(a, labels[a]) for a in key_batch.ACTIONS if admin or a not in key_batch.ADMIN_ONLY]


def _batch_change() -> key_batch.Change:
    """The batch form as a checked Change; InvalidRequest names the field at fault."""
    f, errors = request.form, {}
    action = f.get("action", "")
    days = until = token_quota = budget = team_id = None
    if action == "extend":
        until = _date(f.get("until", ""), "until", errors)
        days = _number(f.get("days", ""), int, "days", errors) if not until else None
    elif action == "quota":
        token_quota = _number(f.get("token_quota", ""), int, "token_quota", errors)
        budget = _number(f.get("budget_usd", ""), float, "budget_usd", errors)
    elif action == "policy" and f.get("policy") and f["policy"] not in catalog_admin.policy_names():
        errors["policy"] = f"There is no policy named '{f['policy'][:100]}'."
    elif action == "team" and f.get("team_id"):
        team_id = teams.find_team(f["team_id"]).id if f["team_id"].isdigit() else None
    if errors:
        name, message = next(iter(errors.items()))
        raise InvalidRequest(message, param=name)
    return key_batch.change(action, days=days, until=until, token_quota=token_quota, budget_usd=budget,
                            policy=f.get("policy", "").strip()[:100] or None, team_id=team_id,
                            admin=current_user.role == "admin")


@bp.post("/keys/batch")
@require_role(*WRITE)
def keys_batch():
    """One change to the selected keys. A member's batch reaches only their own keys, each
    within its ceiling; the audit row names the prefixes it changed and those it skipped."""
    ids = [int(i) for i in request.form.getlist("ids") if i.isdigit()][:500]
    back = url_for("console.keys_index")
    if not ids:
        flash("Select at least one key first.")
        return navigate(back)
    try:
        change = _batch_change()
    except InvalidRequest as e:
        flash(e.message)
        return navigate(back)
    admin = current_user.role == "admin"
    found = key_scope.visible(owner(), ids=ids)         # keys outside a member's scope are never seen
    mine = [k for k in found if admin or k.user_id == current_user.id]
    theirs = {k.prefix: "a member may batch only their own keys" for k in found if k not in mine}
    result = key_batch.run(mine, change, _ceiling)
    result.skipped.update(theirs)
    flash(f"{change.action.capitalize()}: {len(result.done)} key(s) changed"
          + (f"; skipped {', '.join(f'{p}… ({why})' for p, why in result.skipped.items())}" if result.skipped else "."))
    return done(f"key.batch_{change.action}", f"{len(result.done)} keys", back, prefixes=result.done,
                skipped=result.skipped, **change.details())
