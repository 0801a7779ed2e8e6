"""Teams: budgets, alert thresholds, webhook, plan and members. Admins manage them; a member
sees their own team, a viewer every team, both read-only. Plans and tag budgets: plans.py."""
from __future__ import annotations

from flask import abort, render_template, request, url_for
from flask_login import current_user

from gateway.auth.rbac import ADMIN, READ, require_role, sees_everything
from gateway.console import bp
from gateway.console.scope import done
from gateway.errors import InvalidRequest
from gateway.extensions import db
from gateway.models import ApiKey, Team, User
from gateway.services.accounting import keys, teams
from gateway.services.admin import users

TEAM_FORM = ("name", "budget_usd", "budget_period", "timezone", "alert_thresholds", "webhook_url", "plan_id")


def usd_field(raw: str, name: str, errors: dict) -> float | None:
    """An amount of USD from a form, None when empty."""
    raw = (raw or "").strip().lstrip("$").replace(",", "")
    if not raw:
        return None
    try:
        value = float(raw)
    except ValueError:
        errors[name] = "Enter an amount in USD, e.g. 250 or 12.50, or leave it empty."
        return None
    if value < 0 or value != value or value == float("inf"):
        errors[name] = "A budget cannot be negative."
        return None
    return value


def int_field(raw: str, name: str, errors: dict) -> int | None:
    """A whole number from a form, None when empty."""
    raw = (raw or "").strip()
    if not raw:
        return None
    try:
        value = int(raw)
    except ValueError:
        errors[name] = "Enter a whole number of 0 or more, or leave it empty for no limit."
        return None
    if value < 0:
        errors[name] = "Enter a whole number of 0 or more, or leave it empty for no limit."
        return None
    return value


def webhook_secret() -> str | None:
    """The webhook secret to store: a new one typed in, "" to clear it, None to keep it."""
    if request.form.get("clear_webhook_secret") == "on":
        return ""
    secret = request.form.get("webhook_secret", "")
    return secret if secret else None


def _visible_team(team_id: int) -> Team:
    """A team the current user may see: any for admins and viewers, a member's own; else 404."""
    team = db.session.get(Team, team_id)
    if team is None or not sees_everything() and current_user.team_id != team.id:
        abort(404)
    return team


def _form_of(t: Team) -> dict:
    return {"name": t.name, "budget_usd": "" if t.budget_usd is None else f"{t.budget_usd:.2f}".rstrip("0").rstrip("."),
            "budget_period": t.budget_period, "timezone": t.timezone,
            "alert_thresholds": ", ".join(str(x) for x in (t.alert_thresholds or [])),
            "webhook_url": t.webhook_url or "", "plan_id": str(t.plan_id or "")}


def _render_form(team: Team | None, form: dict, errors: dict, status: int = 200):
    return render_template("console/teams_form.html", team=team, form=form, errors=errors, periods=keys.PERIODS,
                           plans=teams.all_plans(), secret_set=bool(team and team.webhook_secret_enc)), status


def _save(team: Team | None):
    """Validate and save the team form: (team, None) or (None, the form re-rendered with errors)."""
    f = request.form
    form = {k: f.get(k, "").strip() for k in TEAM_FORM}
    errors: dict[str, str] = {}
    fields = {"budget_usd": usd_field(form["budget_usd"], "budget_usd", errors),
              "budget_period": form["budget_period"] or "month", "timezone": form["timezone"] or "UTC",
              "alert_thresholds": form["alert_thresholds"],
              "plan_id": int(form["plan_id"]) if form["plan_id"].isdigit() else None}
    secret = webhook_secret()
    if not errors:
        try:
            saved = teams.save_team(form["name"][:100], team=team, new=team is None,
                                    webhook_url=form["webhook_url"][:500], webhook_secret=secret, **fields)
        except InvalidRequest as e:
            errors[e.param or "name"] = e.message
    if errors:
        db.session.rollback()
        return None, _render_form(team, form, errors, 422), {}
    details = {**fields, "alert_thresholds": saved.alert_thresholds,
               **teams.webhook_audit(form["webhook_url"], secret)}
    return saved, None, details


@bp.get("/teams")
@require_role(*READ)
def teams_index():
    if sees_everything():
        rows = teams.all_teams()
    else:
        rows = [t for t in [db.session.get(Team, current_user.team_id)] if t is not None] \
            if current_user.team_id else []
    return render_template("console/teams.html", teams=rows, plans={p.id: p for p in teams.all_plans()},
                           spend=teams.team_spends(rows), members=teams.counts(User.team_id),
                           key_counts=teams.counts(ApiKey.team_id))


@bp.get("/teams/new")
@require_role(*ADMIN)
def team_new():
    return _render_form(None, {"budget_period": "month", "timezone": "UTC", "alert_thresholds": "50, 80, 100"}, {})


@bp.post("/teams")
@require_role(*ADMIN)
def team_create():
    team, failed, details = _save(None)
    if failed:
        return failed
    return done("team.create", team.name, url_for("console.team_detail", team_id=team.id), team_id=team.id, **details)


@bp.get("/teams/<int:team_id>")
@require_role(*READ)
def team_detail(team_id: int):
    return _detail(_visible_team(team_id))


def _detail(team: Team, error: str = "", status: int = 200):
    others = [u for u in users.all_users() if u.team_id != team.id] if current_user.role == "admin" else []
    return render_template("console/teams_detail.html", team=team, spend=teams.team_spend(team),
                           plan=teams.team_plan(team.id), members=teams.members(team), others=others,
                           team_keys=teams.team_keys(team), key_count=teams.counts(ApiKey.team_id).get(team.id, 0),
                           error=error), status


@bp.get("/teams/<int:team_id>/edit")
@require_role(*ADMIN)
def team_edit(team_id: int):
    team = db.get_or_404(Team, team_id)
    return _render_form(team, _form_of(team), {})


@bp.post("/teams/<int:team_id>")
@require_role(*ADMIN)
def team_update(team_id: int):
    team = db.get_or_404(Team, team_id)
    saved, failed, details = _save(team)
    if failed:
        return failed
    return done("team.update", saved.name, url_for("console.team_detail", team_id=saved.id), team_id=saved.id,
                **details)


@bp.post("/teams/<int:team_id>/members")
@require_role(*ADMIN)
def team_member_add(team_id: int):
    team = db.get_or_404(Team, team_id)
    raw = request.form.get("user_id", "")
    user = db.session.get(User, int(raw)) if raw.isdigit() else None
    if user is None:
        return _detail(team, "Choose a user to add.", 422)
    moved_from = user.team_id
    teams.set_member(team, user, True)
    return done("team.member_add", team.name, url_for("console.team_detail", team_id=team.id), team_id=team.id,
                user=user.email, **({"from_team_id": moved_from} if moved_from and moved_from != team.id else {}))


@bp.post("/teams/<int:team_id>/members/<int:user_id>/remove")
@require_role(*ADMIN)
def team_member_remove(team_id: int, user_id: int):
    team = db.get_or_404(Team, team_id)
    user = db.get_or_404(User, user_id)
    if user.team_id != team.id:
        abort(404)
    teams.set_member(team, user, False)
    return done("team.member_remove", team.name, url_for("console.team_detail", team_id=team.id), team_id=team.id,
                user=user.email)


@bp.post("/teams/<int:team_id>/delete")
@require_role(*ADMIN)
def team_delete(team_id: int):
    team = db.get_or_404(Team, team_id)
    name, tid = team.name, team.id
    n_keys, n_users = teams.counts(ApiKey.team_id).get(tid, 0), len(teams.members(team))
    teams.delete_team(team)
    return done("team.delete", name, url_for("console.teams_index"), team_id=tid, keys=n_keys, users=n_users)
