"""Users and roles, the audit log and console settings (admins only)."""
from __future__ import annotations

from datetime import datetime, timedelta

from flask import Response, abort, current_app, render_template, request, url_for
from flask_login import current_user

from gateway.auth.rbac import ADMIN, require_role
from gateway.console import bp
from gateway.console.scope import done, log_action
from gateway.errors import InvalidRequest
from gateway.extensions import db
from gateway.htmx import render
from gateway.models import ROLES, User, utcnow
from gateway.services.accounting import alert_delivery, redaction, teams
from gateway.services.admin import audit, settings, users
from gateway.services.reporting import audit_export as audit_export_


def _users_page(form=None, errors=None, status=200):
    return render_template("console/users.html", users=users.all_users(), roles=ROLES, teams=teams.all_teams(),
                           form=form or {"role": "member"}, errors=errors or {}), status


@bp.get("/users")
@require_role(*ADMIN)
def users_index():
    return _users_page()


@bp.post("/users")
@require_role(*ADMIN)
def user_create():
    f = request.form
    form = {"email": f.get("email", "").strip()[:255], "role": f.get("role", "member"), "team_id": f.get("team_id", "")}
    try:
        user = users.create_user(form["email"], f.get("password", ""), form["role"], exists_ok=False,
                                 team_id=int(form["team_id"]) if form["team_id"].isdigit() else None)
    except InvalidRequest as e:
        return _users_page(form, {e.param or "email": e.message}, 422)
    return done("user.create", user.email, url_for("console.users_index"), role=user.role, team_id=user.team_id)


@bp.post("/users/<int:user_id>")
@require_role(*ADMIN)
def user_update(user_id: int):
    """Change role, team, or revoke/restore access."""
    user = db.get_or_404(User, user_id)
    f = request.form
    error = None
    try:
        if "role" in f and f["role"] != user.role:
            old = user.role
            users.set_role(user, f["role"])
            log_action("user.role", user.email, old=old, new=user.role)
        if "active" in f:
            active = f["active"] == "1"
            if active != user.active:
                if user.id == current_user.id and not active:
                    raise InvalidRequest("You can't revoke your own access.", param="active")
                users.set_active(user, active)
                log_action("user.activate" if active else "user.deactivate", user.email)
        if "team_id" in f:
            new = int(f["team_id"]) if f["team_id"].isdigit() else None
            if new != user.team_id:
                users.set_team(user, new)
                log_action("user.team", user.email, team_id=new)
    except InvalidRequest as e:
        error = e.message
    return render_template("console/_user_row.html", u=user, roles=ROLES, teams=teams.all_teams(), error=error)


def _audit_filter() -> tuple[audit.AuditFilter, dict]:
    """The audit filter from the query string, and the values to show back in the form."""
    a = request.args
    shown = {"action": a.get("action", "").strip()[:64], "actor": a.get("actor", "").strip()[:255],
             "source": a.get("source", "") if a.get("source", "") in audit.SOURCES else "",
             "target": a.get("target", "").strip()[:255], "start": "", "end": ""}
    dates = {}
    for name in ("start", "end"):
        try:
            dates[name] = datetime.strptime(a.get(name, "").strip(), "%Y-%m-%d")
            shown[name] = a[name].strip()
        except ValueError:      # empty or not a date: no bound
            dates[name] = None
    if dates["end"] is not None:
        dates["end"] += timedelta(days=1)       # "to" a day includes that day
    f = audit.AuditFilter(action=shown["action"], actor=shown["actor"], source=shown["source"],
                          target=shown["target"], start=dates["start"], end=dates["end"])
    return f, shown


@bp.get("/audit")
@require_role(*ADMIN)
def audit_index():
    page = max(1, request.args.get("page", 1, type=int))
    f, shown = _audit_filter()
    rows, total = audit.entries(f, page=page)
    return render("console/audit.html", "console/_audit_rows.html", rows=rows, total=total, page=page,
                  more=page * 50 < total, sources=audit.SOURCES, readable=audit.readable,
                  export_args={k: v for k, v in shown.items() if v}, **shown)


@bp.get("/audit/export.<fmt>")
@require_role(*ADMIN)
def audit_export(fmt: str):
    """The filtered audit trail as .csv or .xlsx (every matching row, up to 50,000)."""
    f, _ = _audit_filter()
    stamp = utcnow().strftime("%Y%m%d-%H%M")
    if fmt == "csv":
        return Response(audit_export_.csv_bytes(f), headers={
            "Content-Type": "text/csv; charset=utf-8", "Content-Disposition": f'attachment; filename="audit-{stamp}.csv"'})
    if fmt == "xlsx":
        return Response(audit_export_.xlsx_bytes(f), headers={
            "Content-Type": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
            "Content-Disposition": f'attachment; filename="audit-{stamp}.xlsx"'})
    abort(404)


@bp.route("/settings", methods=["GET", "POST"])
@require_role(*ADMIN)
def settings_page():
    errors, saved = {}, False
    values = settings.all_settings()
    patterns = redaction.patterns_text(values["redact_patterns"])
    if request.method == "POST":
        f = request.form
        patterns = f.get("redact_patterns", patterns)[:10_000]
        given = {"log_prompts": f.get("log_prompts") == "on",
                 "public_base_url": f.get("public_base_url", "").strip()[:300],
                 "monthly_budget_usd": f.get("monthly_budget_usd", "")}
        for name in ("redact_default", "redact_patterns", "usage_retention_days", "prompt_retention_days"):
            if name in f:       # a field the form did not send keeps its value
                given[name] = f[name][:10_000]
        given.update(_alert_fields(f))
        new, errors = settings.check(given)
        if not errors:
            changed = settings.update(new)
            if changed:
                # the webhook secret is write-only: the audit says that it changed, not what to
                log_action("settings.update", "settings", **{k: ("changed" if v else "cleared")
                                                             if k in settings.SECRET_SETTINGS else v
                                                             for k, v in changed.items()})
            saved = True
        values.update(new)
    return render_template("console/settings.html", values=values, errors=errors, saved=saved,
                           patterns=patterns, redact_modes=redaction.MODES, kinds=redaction.KINDS,
                           smtp=alert_delivery.smtp_configured(current_app)), (422 if errors else 200)


def _alert_fields(f) -> dict:
    """The alert settings the form sent (only when its Alerts fieldset was on it). An empty
    secret field keeps the stored secret; "clear" removes it."""
    if f.get("alerts_form") != "1":
        return {}
    given = {"key_alert_thresholds": f.get("key_alert_thresholds", "")[:200],
             "alert_error_rate_percent": f.get("alert_error_rate_percent", "")[:20],
             "alert_latency_p95_ms": f.get("alert_latency_p95_ms", "")[:20],
             "alert_provider_down": f.get("alert_provider_down") == "on",
             "alert_webhook_url": f.get("alert_webhook_url", "")[:500],
             "alert_emails": f.get("alert_emails", "")[:2000]}
    if f.get("alert_webhook_secret_clear") == "on":
        given["alert_webhook_secret"] = ""
    elif f.get("alert_webhook_secret"):
        given["alert_webhook_secret"] = f["alert_webhook_secret"][:500]
    return given
