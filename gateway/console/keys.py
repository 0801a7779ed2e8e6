"""API keys: list, create (secret shown once), edit limits, disable, rotate, delete, batch."""
from __future__ import annotations

from datetime import datetime, timedelta

from flask import abort, render_template, request, url_for
from flask_login import current_user
from sqlalchemy import func, select

from gateway.auth.rbac import READ, WRITE, require_role
from gateway.console import bp
from gateway.console.scope import key_scope, log_action, team_id
from gateway.errors import InvalidRequest
from gateway.extensions import db
from gateway.htmx import navigate, render
from gateway.models import ApiKey, User, utcnow
from gateway.services.accounting import keys
from gateway.services.reporting import charts, filters
from gateway.services.routing import catalog

PER_PAGE = 50
LIMIT_FIELDS = ("token_quota", "budget_usd", "rpm", "tpm", "max_parallel")   # admins only
PERIODS = getattr(keys, "PERIODS", ("total", "day", "week", "month"))


def _key_or_404(key_id: int) -> ApiKey:
    """A key the current user may see; 404 (not 403) so other keys' ids reveal nothing."""
    key = db.session.get(ApiKey, key_id)
    scope = key_scope()
    if key is None or (scope is not None and not db.session.scalar(
            select(func.count()).select_from(ApiKey).where(ApiKey.id == key_id, scope))):
        abort(404)
    return key


def key_state(key: ApiKey) -> str:
    if key.revoked_at:
        return "revoked"
    if key.expires_at and key.expires_at <= utcnow():
        return "expired"
    if not getattr(key, "enabled", True):
        return "disabled"
    return "active"


def _choices() -> dict:
    ctx = {"model_names": catalog.model_names(), "periods": PERIODS, "teams": [], "users": [], "policies": []}
    if current_user.role == "admin":
        ctx["users"] = db.session.scalars(select(User).order_by(User.email)).all()
        try:
            from gateway.models import Team
            ctx["teams"] = db.session.scalars(select(Team).order_by(Team.name)).all()
        except ImportError:
            pass
        try:
            from gateway.models import Policy
            ctx["policies"] = list(db.session.scalars(select(Policy.name).order_by(Policy.name)))
        except ImportError:
            pass
    return ctx


@bp.get("/keys")
@require_role(*READ)
def keys_index():
    q = select(ApiKey)
    scope = key_scope()
    if scope is not None:
        q = q.where(scope)
    search = request.args.get("q", "").strip()[:100]
    if search:
        q = q.where(ApiKey.name.contains(search) | ApiKey.prefix.startswith(search))
    state = request.args.get("state", "")
    if state == "active":
        q = q.where(ApiKey.revoked_at.is_(None))
    elif state == "revoked":
        q = q.where(ApiKey.revoked_at.is_not(None))
    page = max(1, request.args.get("page", 1, type=int))
    rows = db.session.scalars(q.order_by(ApiKey.id.desc()).limit(PER_PAGE + 1).offset((page - 1) * PER_PAGE)).all()
    spend = _spend_30d([k.id for k in rows[:PER_PAGE]])
    return render("console/keys.html", "console/_key_rows.html", keys=rows[:PER_PAGE], more=len(rows) > PER_PAGE,
                  page=page, spend=spend, key_state=key_state, search=search, state=state)


def _spend_30d(ids: list[int]) -> dict[int, tuple[int, float]]:
    from gateway.models import UsageRecord as R
    if not ids:
        return {}
    rows = db.session.execute(select(R.key_id, func.count(), func.coalesce(func.sum(R.cost_usd), 0.0))
                              .where(R.key_id.in_(ids), R.created_at >= utcnow() - timedelta(days=30))
                              .group_by(R.key_id)).all()
    return {k: (n, float(c)) for k, n, c in rows}


@bp.get("/keys/new")
@require_role(*WRITE)
def key_new():
    return render_template("console/key_form.html", key=None, form={"quota_period": "total"}, errors={}, **_choices())


def _int_field(raw: str, name: str, errors: dict) -> int | None:
    raw = raw.strip()
    if not raw:
        return None
    try:
        v = int(raw)
        if v < 0:
            raise ValueError
        return v
    except ValueError:
        errors[name] = "Enter a whole number of 0 or more, or leave empty for no limit."
        return None


def _parse_form(existing: ApiKey | None) -> tuple[dict, dict, dict]:
    """(settings for the keys service, form values to re-show, errors by field)."""
    f = request.form
    form = {k: f.get(k, "") for k in ("name", "expires_at", "quota_period", "ip_allow", "policy",
                                       "team_id", "user_id", *LIMIT_FIELDS)}
    form["models"] = f.getlist("models")
    form["enabled"] = f.get("enabled") == "on"
    errors: dict[str, str] = {}
    s: dict = {"name": form["name"].strip()[:100]}
    if not s["name"]:
        errors["name"] = "Give the key a name."
    s["models"] = [m for m in form["models"] if m] or None
    if form["expires_at"].strip():
        try:
            s["expires_at"] = datetime.strptime(form["expires_at"].strip(), "%Y-%m-%d")
            if existing is None and s["expires_at"] <= utcnow():
                errors["expires_at"] = "The expiry date must be in the future."
        except ValueError:
            errors["expires_at"] = "Use a date like 2030-12-31."
    else:
        s["expires_at"] = None
    s["ip_allow"] = form["ip_allow"].strip() or None
    if existing is not None:
        s["enabled"] = form["enabled"]
    if current_user.role == "admin":
        for name in ("token_quota", "rpm", "tpm", "max_parallel"):
            s[name] = _int_field(form[name], name, errors)
        raw = form["budget_usd"].strip()
        try:
            s["budget_usd"] = float(raw) if raw else None
            if s["budget_usd"] is not None and s["budget_usd"] < 0:
                raise ValueError
        except ValueError:
            errors["budget_usd"] = "Enter an amount of 0 or more, or leave empty for no budget."
        s["quota_period"] = form["quota_period"] if form["quota_period"] in PERIODS else "total"
        s["policy"] = form["policy"].strip()[:100] or None
        s["team_id"] = int(form["team_id"]) if form["team_id"].isdigit() else None
        s["user_id"] = int(form["user_id"]) if form["user_id"].isdigit() else None
    elif existing is None:
        s["user_id"], s["team_id"] = current_user.id, team_id()
    s = {k: v for k, v in s.items() if k in getattr(keys, "SETTINGS", ("name", "models", "expires_at", "user_id"))}
    return s, form, errors


@bp.post("/keys")
@require_role(*WRITE)
def key_create():
    settings, form, errors = _parse_form(None)
    if not errors:
        try:
            name = settings.pop("name")
            key, secret = keys.create_key(name, **settings)
        except InvalidRequest as e:
            db.session.rollback()
            errors[e.param or "name"] = e.message
    if errors:
        return render_template("console/key_form.html", key=None, form=form, errors=errors, **_choices()), 422
    log_action("key.create", f"{key.name} ({key.prefix}…)", key_id=key.id, models=key.models,
               **{k: v for k, v in settings.items() if k not in ("models",)})
    return render_template("console/key_created.html", key=key, secret=secret, rotated=False)


@bp.get("/keys/<int:key_id>")
@require_role(*READ)
def key_detail(key_id: int):
    key = _key_or_404(key_id)
    f, _ = filters.parse_filter({"range": request.args.get("range", "30d"), "key_id": str(key.id)})
    return render_template("console/key_detail.html", key=key, state=key_state(key), totals=charts.totals(f),
                           breakdown=charts.breakdown(f, limit=20), filter=f)


@bp.get("/keys/<int:key_id>/edit")
@require_role(*WRITE)
def key_edit(key_id: int):
    key = _key_or_404(key_id)
    form = {"name": key.name, "models": key.models or [],
            "expires_at": key.expires_at.strftime("%Y-%m-%d") if key.expires_at else "",
            "ip_allow": ", ".join(getattr(key, "ip_allow", None) or []),
            "enabled": getattr(key, "enabled", True), "policy": getattr(key, "policy", "") or "",
            "quota_period": getattr(key, "quota_period", "total"),
            "team_id": str(getattr(key, "team_id", "") or ""), "user_id": str(key.user_id or "")}
    for name in LIMIT_FIELDS:
        v = getattr(key, name, None)
        form[name] = "" if v is None else str(v)
    return render_template("console/key_form.html", key=key, form=form, errors={}, **_choices())


@bp.post("/keys/<int:key_id>")
@require_role(*WRITE)
def key_update(key_id: int):
    key = _key_or_404(key_id)
    settings, form, errors = _parse_form(key)
    if not errors:
        try:
            keys.update_key(key, **settings)
        except InvalidRequest as e:
            db.session.rollback()
            errors[e.param or "name"] = e.message
    if errors:
        return render_template("console/key_form.html", key=key, form=form, errors=errors, **_choices()), 422
    log_action("key.update", f"{key.name} ({key.prefix}…)", key_id=key.id, **settings)
    return navigate(url_for("console.key_detail", key_id=key.id))


def _disable(key: ApiKey) -> None:
    if hasattr(key, "enabled"):
        keys.update_key(key, enabled=False)
    else:
        keys.revoke_key(key)


def _delete(key: ApiKey) -> None:
    delete = getattr(keys, "delete_key", None)
    if delete:
        delete(key)
        return
    keys.revoke_key(key)            # drops it from every cache before the row goes
    db.session.delete(key)
    db.session.commit()


@bp.post("/keys/<int:key_id>/disable")
@require_role(*WRITE)
def key_disable(key_id: int):
    key = _key_or_404(key_id)
    _disable(key)
    log_action("key.disable", f"{key.name} ({key.prefix}…)", key_id=key.id)
    return navigate(url_for("console.key_detail", key_id=key.id))


@bp.post("/keys/<int:key_id>/enable")
@require_role(*WRITE)
def key_enable(key_id: int):
    key = _key_or_404(key_id)
    if key.revoked_at is None and hasattr(key, "enabled"):
        keys.update_key(key, enabled=True)
        log_action("key.enable", f"{key.name} ({key.prefix}…)", key_id=key.id)
    return navigate(url_for("console.key_detail", key_id=key.id))


@bp.post("/keys/<int:key_id>/revoke")
@require_role(*WRITE)
def key_revoke(key_id: int):
    key = _key_or_404(key_id)
    keys.revoke_key(key)
    log_action("key.revoke", f"{key.name} ({key.prefix}…)", key_id=key.id)
    return navigate(url_for("console.key_detail", key_id=key.id))


@bp.post("/keys/<int:key_id>/rotate")
@require_role(*WRITE)
def key_rotate(key_id: int):
    key = _key_or_404(key_id)
    rotate = getattr(keys, "rotate_key", None)
    if rotate is None or key.revoked_at:
        abort(400)
    old_prefix = key.prefix
    grace = request.form.get("grace_hours", "24")
    hours = float(grace) if grace.replace(".", "", 1).isdigit() else 24.0
    key, secret = rotate(key, grace_seconds=min(hours, 24 * 30) * 3600)
    log_action("key.rotate", f"{key.name} ({key.prefix}…)", key_id=key.id, old_prefix=old_prefix, grace_hours=hours)
    return render_template("console/key_created.html", key=key, secret=secret, rotated=True)


@bp.post("/keys/<int:key_id>/delete")
@require_role(*WRITE)
def key_delete(key_id: int):
    key = _key_or_404(key_id)
    label, kid = f"{key.name} ({key.prefix}…)", key.id
    _delete(key)
    log_action("key.delete", label, key_id=kid)
    return navigate(url_for("console.keys_index"))


@bp.post("/keys/batch")
@require_role(*WRITE)
def keys_batch():
    action = request.form.get("action")
    ids = [int(i) for i in request.form.getlist("ids") if i.isdigit()][:500]
    if action not in ("disable", "delete") or not ids:
        return navigate(url_for("console.keys_index"))
    q = select(ApiKey).where(ApiKey.id.in_(ids))
    scope = key_scope()
    if scope is not None:
        q = q.where(scope)          # silently skip keys outside the member's scope
    done = []
    for key in db.session.scalars(q).all():
        done.append(f"{key.name} ({key.prefix}…)")
        _disable(key) if action == "disable" else _delete(key)
    log_action(f"key.batch_{action}", f"{len(done)} keys", keys=done)
    return navigate(url_for("console.keys_index"))
