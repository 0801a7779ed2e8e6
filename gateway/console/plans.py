"""Plans (model allowlist, default key limits, a plan-wide budget) and tag budgets. Admins
manage them; viewers read them. The team pages are in teams.py."""
from __future__ import annotations

from flask import render_template, request, url_for

from gateway.auth.rbac import ADMIN, SEE_ALL, require_role
from gateway.console import bp
from gateway.console.scope import done
from gateway.console.teams import int_field, usd_field, webhook_secret
from gateway.errors import InvalidRequest
from gateway.extensions import db
from gateway.models import ApiKey, Plan, TagBudget, Team
from gateway.services.accounting import keys, teams
from gateway.services.routing import catalog

NUMBERS = ("token_quota", "rpm", "tpm", "max_parallel")


def _plan_form(p: Plan) -> dict:
    form = {"name": p.name, "quota_period": p.quota_period, "pool_period": p.pool_period or "month",
            "pool_timezone": p.pool_timezone or "UTC", "models": list(p.models or [])}
    for name in (*NUMBERS, "budget_usd", "pool_budget_usd"):
        v = getattr(p, name)
        form[name] = "" if v is None else (f"{v:.6f}".rstrip("0").rstrip(".") if isinstance(v, float) else str(v))
    return form


def _render_plan(plan: Plan | None, form: dict, errors: dict, status: int = 200):
    served = catalog.model_names()
    extra = [m for m in form.get("models", []) if m not in served]     # allowed once, not served now
    return render_template("console/plans_form.html", plan=plan, form=form, errors=errors, periods=keys.PERIODS,
                           model_names=served + extra), status


def _save_plan(plan: Plan | None):
    f = request.form
    form = {k: f.get(k, "").strip() for k in ("name", "quota_period", "pool_period", "pool_timezone", *NUMBERS,
                                               "budget_usd", "pool_budget_usd")}
    form["models"] = [m for m in f.getlist("models") if m]
    errors: dict[str, str] = {}
    fields = {name: int_field(form[name], name, errors) for name in NUMBERS}
    fields |= {"budget_usd": usd_field(form["budget_usd"], "budget_usd", errors),
               "pool_budget_usd": usd_field(form["pool_budget_usd"], "pool_budget_usd", errors),
               "quota_period": form["quota_period"] or "month", "pool_period": form["pool_period"] or "month",
               "pool_timezone": form["pool_timezone"] or "UTC", "models": form["models"] or None}
    allowed = set(catalog.model_names()) | set(plan.models or [] if plan else [])
    unknown = [m for m in form["models"] if m not in allowed]
    if unknown:
        errors["models"] = f"Not a served model: {', '.join(unknown)}."
    if not errors:
        try:
            return teams.save_plan(form["name"][:100], plan=plan, new=plan is None, **fields), None, fields
        except InvalidRequest as e:
            db.session.rollback()
            errors[e.param or "name"] = e.message
    return None, _render_plan(plan, form, errors, 422), {}


@bp.get("/plans")
@require_role(*SEE_ALL)
def plans_index():
    rows = teams.all_plans()
    return render_template("console/plans.html", plans=rows, spend=teams.plan_spends(rows),
                           key_counts=teams.counts(ApiKey.plan_id), team_counts=teams.counts(Team.plan_id))


@bp.get("/plans/new")
@require_role(*ADMIN)
def plan_new():
    return _render_plan(None, {"quota_period": "month", "pool_period": "month", "pool_timezone": "UTC",
                               "models": []}, {})


@bp.post("/plans")
@require_role(*ADMIN)
def plan_create():
    plan, failed, fields = _save_plan(None)
    if failed:
        return failed
    return done("plan.create", plan.name, url_for("console.plans_index"), plan_id=plan.id, **fields)


@bp.get("/plans/<int:plan_id>/edit")
@require_role(*ADMIN)
def plan_edit(plan_id: int):
    plan = db.get_or_404(Plan, plan_id)
    return _render_plan(plan, _plan_form(plan), {})


@bp.post("/plans/<int:plan_id>")
@require_role(*ADMIN)
def plan_update(plan_id: int):
    plan = db.get_or_404(Plan, plan_id)
    saved, failed, fields = _save_plan(plan)
    if failed:
        return failed
    return done("plan.update", saved.name, url_for("console.plans_index"), plan_id=saved.id, **fields)


@bp.post("/plans/<int:plan_id>/delete")
@require_role(*ADMIN)
def plan_delete(plan_id: int):
    plan = db.get_or_404(Plan, plan_id)
    name, pid, n = plan.name, plan.id, teams.counts(ApiKey.plan_id).get(plan.id, 0)
    teams.delete_plan(plan)
    return done("plan.delete", name, url_for("console.plans_index"), plan_id=pid, keys=n)


TAG_FORM = ("tag", "value", "budget_usd", "budget_period", "timezone", "alert_thresholds", "webhook_url")


def _tag_form(b: TagBudget) -> dict:
    return {"tag": b.tag, "value": b.value, "budget_usd": f"{b.budget_usd:.6f}".rstrip("0").rstrip("."),
            "budget_period": b.budget_period, "timezone": b.timezone, "webhook_url": b.webhook_url or "",
            "alert_thresholds": ", ".join(str(x) for x in (b.alert_thresholds or []))}


def _render_tag(budget: TagBudget | None, form: dict, errors: dict, status: int = 200):
    return render_template("console/teams_tag_budget_form.html", budget=budget, form=form, errors=errors,
                           periods=keys.PERIODS, secret_set=bool(budget and budget.webhook_secret_enc)), status


def _save_tag(budget: TagBudget | None):
    f = request.form
    form = {k: f.get(k, "").strip() for k in TAG_FORM}
    errors: dict[str, str] = {}
    usd = usd_field(form["budget_usd"], "budget_usd", errors)
    fields = {"budget_period": form["budget_period"] or "month", "timezone": form["timezone"] or "UTC",
              "alert_thresholds": form["alert_thresholds"]}
    secret = webhook_secret()
    if not errors:
        try:
            saved = teams.save_tag_budget(form["tag"][:64], form["value"][:200], usd, budget=budget,
                                          new=budget is None, webhook_url=form["webhook_url"][:500],
                                          webhook_secret=secret, **fields)
            return saved, None, {"budget_usd": usd, **fields, "alert_thresholds": saved.alert_thresholds,
                                 **teams.webhook_audit(form["webhook_url"], secret)}
        except InvalidRequest as e:
            db.session.rollback()
            errors[e.param or "tag"] = e.message
    return None, _render_tag(budget, form, errors, 422), {}


@bp.get("/tag-budgets")
@require_role(*SEE_ALL)
def tag_budgets_index():
    rows = teams.all_tag_budgets()
    return render_template("console/teams_tag_budgets.html", budgets=rows,
                           spend=teams.tag_spends(rows))


@bp.get("/tag-budgets/new")
@require_role(*ADMIN)
def tag_budget_new():
    return _render_tag(None, {"budget_period": "month", "timezone": "UTC", "alert_thresholds": "50, 80, 100"}, {})


@bp.post("/tag-budgets")
@require_role(*ADMIN)
def tag_budget_create():
    b, failed, details = _save_tag(None)
    if failed:
        return failed
    return done("tag_budget.create", f"{b.tag}={b.value}", url_for("console.tag_budgets_index"), **details)


@bp.get("/tag-budgets/<int:budget_id>/edit")
@require_role(*ADMIN)
def tag_budget_edit(budget_id: int):
    b = db.get_or_404(TagBudget, budget_id)
    return _render_tag(b, _tag_form(b), {})


@bp.post("/tag-budgets/<int:budget_id>")
@require_role(*ADMIN)
def tag_budget_update(budget_id: int):
    b = db.get_or_404(TagBudget, budget_id)
    saved, failed, details = _save_tag(b)
    if failed:
        return failed
    return done("tag_budget.update", f"{saved.tag}={saved.value}", url_for("console.tag_budgets_index"), **details)


@bp.post("/tag-budgets/<int:budget_id>/delete")
@require_role(*ADMIN)
def tag_budget_delete(budget_id: int):
    b = db.get_or_404(TagBudget, budget_id)
    target = f"{b.tag}={b.value}"
    teams.delete_tag_budget(b)
    return done("tag_budget.delete", target, url_for("console.tag_budgets_index"))
