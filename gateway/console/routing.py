"""Routing pages: deployments, aliases with their history (switch and roll back a model
version), and policies. Admins change them; viewers see them read-only; members, whose view
is their own keys and requests, do not see them (as with providers). The writes are
catalog_admin's, shared with the CLI and gateway.yaml."""
from __future__ import annotations

import math

from flask import abort, render_template, request, url_for
from flask_login import current_user

from gateway.auth.rbac import ADMIN, SEE_ALL, require_role
from gateway.auth.security import client_ip
from gateway.console import bp
from gateway.console.scope import done
from gateway.errors import InvalidRequest
from gateway.extensions import db
from gateway.htmx import navigate
from gateway.models import Deployment, Policy
from gateway.services.accounting import pricing, redaction
from gateway.services.admin import audit, catalog_admin
from gateway.services.reporting import routing as reads
from gateway.services.routing.health import deployment_status
from gateway.services.routing.policies import CAPABILITIES, STRATEGIES

DEPLOYMENT_STATE = ("model", "provider", "upstream_model", *catalog_admin.DEPLOYMENT_FIELDS)


def _actor() -> str:
    return current_user.email


def _done_alias(action: str, name: str, url: str, **details):
    """scope.done for an alias change, whose details name its `target` (done's own argument)."""
    audit.record(current_user, action, name, details, ip=client_ip())
    return navigate(url)


def _number(form, name: str, errors: dict, whole: bool = False):
    """The field as a number, None when empty; a message in `errors` when it is not one."""
    raw = form.get(name, "").strip()
    if not raw:
        return None
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or (whole and value != int(value)):
        errors[name] = "Enter a whole number." if whole else "Enter a number."
        return None
    return int(value) if whole else value


# Deployments

def _deployment_form() -> tuple[dict, dict, dict]:
    """(what the form shows again, the fields for save_deployment, errors by field)."""
    f, errors = request.form, {}
    form = {"provider": f.get("provider", "").strip(), "model": f.get("model", "").strip()[:200],
            "upstream_model": f.get("upstream_model", "").strip()[:200], "mode": f.get("mode", "chat"),
            "region": f.get("region", "").strip()[:64], "price_unit": f.get("price_unit", "") or None,
            "capabilities": [c for c in f.getlist("capabilities") if c in CAPABILITIES],
            "enabled": f.get("enabled") == "on"}
    fields = {"mode": form["mode"], "region": form["region"], "enabled": form["enabled"],
              "capabilities": form["capabilities"] or None, "price_unit": form["price_unit"]}
    for name, whole in (("weight", True), ("rpm_limit", True), ("tpm_limit", True), ("context_window", True),
                        ("input_per_1k", False), ("output_per_1k", False), ("unit_price", False)):
        form[name] = f.get(name, "").strip()
        fields[name] = _number(f, name, errors, whole)
    if fields["weight"] is None:
        fields.pop("weight")            # empty: as it is (1 for a new deployment)
    if fields["unit_price"] is not None and not fields["price_unit"]:
        errors["price_unit"] = "Choose what the unit price is per."
    return form, fields, errors


def _deployment_state(d: Deployment) -> dict:
    return {name: (d.provider.name if name == "provider" else getattr(d, name)) for name in DEPLOYMENT_STATE}


def _deployment_page(d: Deployment | None, form: dict, errors: dict, status: int = 200):
    return render_template("console/routing_deployment_form.html", deployment=d, form=form, errors=errors,
                           providers=reads.provider_names(), modes=catalog_admin.MODES,
                           capabilities=CAPABILITIES, price_units=pricing.PRICE_UNITS), status


def _save_deployment(d: Deployment | None):
    form, fields, errors = _deployment_form()
    before = _deployment_state(d) if d is not None else None
    saved = None
    if not errors:
        try:
            saved = catalog_admin.save_deployment(form["model"], form["provider"], form["upstream_model"] or None,
                                                  source="console", deployment_id=d.id if d else None,
                                                  exists_ok=d is not None, **fields)
        except InvalidRequest as e:
            db.session.rollback()
            errors[e.param if e.param in (*DEPLOYMENT_STATE, "price_unit") else "model"] = e.message
    if errors:
        return _deployment_page(d, form, errors, 422)
    after = _deployment_state(saved)
    changed = audit.changes(before, after)
    if before is not None:
        changed = {k: [before[k], v] for k, v in changed.items()}
    return done("deployment.create" if d is None else "deployment.update", f"{saved.provider.name}/{saved.model}",
                url_for("console.routing_deployments"), deployment_id=saved.id, **changed)


@bp.get("/routing/deployments")
@require_role(*SEE_ALL)
def routing_deployments():
    rows = reads.deployments()
    return render_template("console/routing_deployments.html", deployments=rows, aliased=reads.aliases_by_target(),
                           status={d.id: deployment_status(d.id) for d in rows})


@bp.get("/routing/deployments/new")
@require_role(*ADMIN)
def routing_deployment_new():
    form = {"provider": request.args.get("provider", ""), "mode": "chat", "weight": "1", "enabled": True,
            "capabilities": []}
    return _deployment_page(None, form, {})


@bp.post("/routing/deployments")
@require_role(*ADMIN)
def routing_deployment_create():
    return _save_deployment(None)


@bp.get("/routing/deployments/<int:deployment_id>/edit")
@require_role(*ADMIN)
def routing_deployment_edit(deployment_id: int):
    d = db.get_or_404(Deployment, deployment_id)
    form = {**_deployment_state(d), "capabilities": d.capabilities or [], "region": d.region or ""}
    for name in ("weight", "rpm_limit", "tpm_limit", "context_window", "input_per_1k", "output_per_1k", "unit_price"):
        value = getattr(d, name)
        form[name] = "" if value is None else f"{value:.10f}".rstrip("0").rstrip(".") if isinstance(value, float) \
            else str(value)
    return _deployment_page(d, form, {})


@bp.post("/routing/deployments/<int:deployment_id>")
@require_role(*ADMIN)
def routing_deployment_update(deployment_id: int):
    return _save_deployment(db.get_or_404(Deployment, deployment_id))


@bp.post("/routing/deployments/<int:deployment_id>/enabled")
@require_role(*ADMIN)
def routing_deployment_toggle(deployment_id: int):
    d = db.get_or_404(Deployment, deployment_id)
    catalog_admin.set_deployment_enabled(d, not d.enabled)
    return done("deployment.enable" if d.enabled else "deployment.disable", f"{d.provider.name}/{d.model}",
                url_for("console.routing_deployments"), deployment_id=d.id)


@bp.post("/routing/deployments/<int:deployment_id>/delete")
@require_role(*ADMIN)
def routing_deployment_delete(deployment_id: int):
    d = db.get_or_404(Deployment, deployment_id)
    label, details = f"{d.provider.name}/{d.model}", {"deployment_id": d.id, "upstream_model": d.upstream_model}
    catalog_admin.delete_deployment(d)
    return done("deployment.delete", label, url_for("console.routing_deployments"), **details)


# Aliases

def _aliases_page(form: dict, errors: dict, status: int = 200):
    return render_template("console/routing_aliases.html", aliases=reads.aliases(), deleted=reads.changed_aliases(),
                           targets=[*reads.model_names(), *reads.policy_targets()], form=form,
                           errors=errors), status


@bp.get("/routing/aliases")
@require_role(*SEE_ALL)
def routing_aliases():
    return _aliases_page({}, {})


@bp.post("/routing/aliases")
@require_role(*ADMIN)
def routing_alias_set():
    form = {"name": request.form.get("name", "").strip()[:200], "target": request.form.get("target", "").strip()[:200]}
    back = request.form.get("back") == "history"
    existing = reads.alias_named(form["name"])
    previous = existing.target if existing else None
    try:
        catalog_admin.set_alias(form["name"], form["target"], source="console", actor=_actor())
    except InvalidRequest as e:
        db.session.rollback()
        errors = {e.param if e.param in ("name", "target") else "target": e.message}
        if back and (existing is not None or catalog_admin.alias_history(form["name"], 1)):
            return _history_page(form["name"], form, errors, 422)
        return _aliases_page(form, errors, 422)
    url = url_for("console.routing_alias_history", name=form["name"]) if back else url_for("console.routing_aliases")
    return _done_alias("alias.set", form["name"], url, target=form["target"], previous_target=previous)


def _history_page(name: str, form: dict, errors: dict, status: int = 200):
    alias = reads.alias_named(name)
    history = catalog_admin.alias_history(name)
    if alias is None and not history:
        abort(404)
    return render_template("console/routing_alias_history.html", name=name, alias=alias, history=history,
                           targets=[*reads.model_names(), *reads.policy_targets()], form=form,
                           errors=errors), status


@bp.get("/routing/aliases/history")
@require_role(*SEE_ALL)
def routing_alias_history():
    return _history_page(request.args.get("name", ""), {}, {})


@bp.post("/routing/aliases/rollback")
@require_role(*ADMIN)
def routing_alias_rollback():
    name = request.form.get("name", "")
    existing = reads.alias_named(name)
    previous = existing.target if existing else None
    try:
        alias = catalog_admin.rollback_alias(name, source="console", actor=_actor())
    except InvalidRequest as e:
        db.session.rollback()
        return _history_page(name, {}, {"rollback": e.message}, 422)
    return _done_alias("alias.rollback", name, url_for("console.routing_alias_history", name=name),
                target=alias.target, previous_target=previous)


@bp.post("/routing/aliases/delete")
@require_role(*ADMIN)
def routing_alias_delete():
    name = request.form.get("name", "")
    existing = reads.alias_named(name)
    if existing is None:
        abort(404)
    target = existing.target
    catalog_admin.delete_alias(name, source="console", actor=_actor())
    return done("alias.delete", name, url_for("console.routing_aliases"), previous_target=target)


# Policies

POLICY_ERRORS = ("name", "strategy", "candidates", "weights", "regions", "capabilities", "sticky", "ab_model",
                 "ab_percent", "shadow_model", "shadow_percent", "redact", "cache_ttl")


def _experiment_field(f, exp: str) -> dict | None:
    model, percent = f.get(f"{exp}_model", "").strip(), f.get(f"{exp}_percent", "").strip()
    return {"model": model, "percent": percent} if model or percent else None


def _policy_form() -> tuple[dict, dict]:
    """(what the form shows again, the fields for save_policy); the service checks them all."""
    f = request.form
    candidates = [c.strip() for c in f.getlist("candidates") if c.strip()]
    weights = {c: f.get(f"weight_{c}", "").strip() for c in candidates if f.get(f"weight_{c}", "").strip()}
    ttl = f.get("cache_ttl", "").strip()
    fields = {"strategy": f.get("strategy", "weighted"), "candidates": candidates or None, "weights": weights or None,
              "regions": [r.strip() for r in f.get("regions", "").split(",") if r.strip()] or None,
              "capabilities": [c for c in f.getlist("capabilities") if c.strip()] or None,
              "sticky": f.get("sticky", "").strip() or None,
              "ab": _experiment_field(f, "ab"), "shadow": _experiment_field(f, "shadow"),
              "redact": f.get("redact") or None,
              "cache_ttl": (int(ttl) if ttl.isdigit() else ttl) if ttl else None,
              "enabled": f.get("enabled") == "on"}
    form = {**fields, "name": f.get("name", "").strip()[:100], "regions": f.get("regions", ""),
            "candidates": candidates, "weights": weights, "cache_ttl": ttl,
            "ab": fields["ab"] or {}, "shadow": fields["shadow"] or {}}
    return form, fields


def _policy_state(p: Policy) -> dict:
    return {name: getattr(p, name) for name in catalog_admin.POLICY_FIELDS}


def _policy_page(policy: Policy | None, form: dict, errors: dict, status: int = 200):
    return render_template("console/routing_policy_form.html", policy=policy, form=form, errors=errors,
                           strategies=STRATEGIES, capabilities=CAPABILITIES, redact_modes=redaction.MODES,
                           models=sorted({*reads.model_names(), *(a.name for a in reads.aliases())})), status


def _save_policy(policy: Policy | None):
    form, fields = _policy_form()
    before = _policy_state(policy) if policy is not None else None
    name = policy.name if policy is not None else form["name"]
    try:
        saved = catalog_admin.save_policy(name, source="console", exists_ok=policy is not None, **fields)
    except InvalidRequest as e:
        db.session.rollback()
        return _policy_page(policy, form, {e.param if e.param in POLICY_ERRORS else "name": e.message}, 422)
    changed = audit.changes(before, _policy_state(saved))
    if before is not None:
        changed = {k: [before[k], v] for k, v in changed.items()}
    return done("policy.create" if policy is None else "policy.update", saved.name,
                url_for("console.routing_policies"), **changed)


@bp.get("/routing/policies")
@require_role(*SEE_ALL)
def routing_policies():
    return render_template("console/routing_policies.html", policies=reads.policies(),
                           built_in=reads.built_in_policies())


@bp.get("/routing/policies/new")
@require_role(*ADMIN)
def routing_policy_new():
    return _policy_page(None, {"strategy": "weighted", "enabled": True, "ab": {}, "shadow": {}, "weights": {},
                               "candidates": []}, {})


@bp.post("/routing/policies")
@require_role(*ADMIN)
def routing_policy_create():
    return _save_policy(None)


@bp.get("/routing/policies/<int:policy_id>/edit")
@require_role(*ADMIN)
def routing_policy_edit(policy_id: int):
    p = db.get_or_404(Policy, policy_id)
    form = {**_policy_state(p), "name": p.name, "regions": ", ".join(p.regions or []),
            "candidates": p.candidates or [], "weights": {k: str(v) for k, v in (p.weights or {}).items()},
            "cache_ttl": "" if p.cache_ttl is None else str(p.cache_ttl),
            "ab": {k: (f"{v:g}" if k == "percent" else v) for k, v in (p.ab or {}).items()},
            "shadow": {k: (f"{v:g}" if k == "percent" else v) for k, v in (p.shadow or {}).items()}}
    return _policy_page(p, form, {})


@bp.post("/routing/policies/<int:policy_id>")
@require_role(*ADMIN)
def routing_policy_update(policy_id: int):
    return _save_policy(db.get_or_404(Policy, policy_id))


@bp.post("/routing/policies/<int:policy_id>/delete")
@require_role(*ADMIN)
def routing_policy_delete(policy_id: int):
    p = db.get_or_404(Policy, policy_id)
    name = p.name
    try:
        catalog_admin.delete_policy(name)
    except InvalidRequest as e:
        db.session.rollback()
        return render_template("console/routing_policies.html", policies=reads.policies(),
                               built_in=reads.built_in_policies(), error=e.message), 422
    return done("policy.delete", name, url_for("console.routing_policies"))
