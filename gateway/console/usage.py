"""Usage charts, request logs and their exports."""
from __future__ import annotations

import orjson
from flask import Response, abort, render_template, request
from sqlalchemy import select

from gateway.auth.rbac import READ, require_role
from gateway.console import bp
from gateway.console.scope import key_scope, usage_filter
from gateway.extensions import db
from gateway.htmx import render
from gateway.models import ApiKey, UsageRecord
from gateway.services.admin import settings
from gateway.services.reporting import charts, exports, filters
from gateway.services.routing import catalog

PER_PAGE = 50


def _filter_choices() -> dict:
    q = select(ApiKey).order_by(ApiKey.name).limit(500)
    scope = key_scope()
    if scope is not None:
        q = q.where(scope)
    providers = sorted({r.provider for rs in catalog.catalog().snapshot().routes.values() for r in rs})
    return {"model_names": catalog.model_names(), "provider_names": providers,
            "key_choices": db.session.scalars(q).all(), "groups": filters.GROUPS}


def _budget(f: filters.UsageFilter) -> float | None:
    """The threshold line: the filtered key's or team's budget, else the monthly setting."""
    if f.key_id is not None:
        key = db.session.get(ApiKey, f.key_id)
        if key is not None and getattr(key, "budget_usd", None):
            return key.budget_usd
    if f.team_id is not None:
        try:
            from gateway.models import Team
            team = db.session.get(Team, f.team_id)
            if team is not None and team.budget_usd:
                return team.budget_usd
        except ImportError:
            pass
    value = settings.get("monthly_budget_usd")
    return float(value) if value else None


@bp.get("/usage")
@require_role(*READ)
def usage():
    f, errors = usage_filter()
    ctx = dict(filter=f, errors=errors, totals=charts.totals(f), breakdown=charts.breakdown(f),
               charts=charts.figures(f, _budget(f)), args=request.args, export_args=f.query_args())
    return render("console/usage.html", "console/_usage_panel.html", **ctx, **_filter_choices())


@bp.get("/logs")
@require_role(*READ)
def logs():
    f, errors = usage_filter()
    page = max(1, request.args.get("page", 1, type=int))
    rows = db.session.scalars(select(UsageRecord).where(*filters.conditions(f))
                              .order_by(UsageRecord.created_at.desc(), UsageRecord.id.desc())
                              .limit(PER_PAGE + 1).offset((page - 1) * PER_PAGE)).all()
    return render("console/logs.html", "console/_log_rows.html", rows=rows[:PER_PAGE], more=len(rows) > PER_PAGE,
                  page=page, filter=f, errors=errors, args=request.args, export_args=f.query_args(),
                  **_filter_choices())


@bp.get("/logs/<int:record_id>")
@require_role(*READ)
def log_detail(record_id: int):
    row = db.get_or_404(UsageRecord, record_id)
    f, _ = usage_filter({"range": "custom", "start": "1970-01-01", "end": "2999-12-31"})
    visible = db.session.scalar(select(UsageRecord.id).where(UsageRecord.id == record_id, *filters.conditions(f)))
    if visible is None:
        abort(404)
    return render_template("console/_log_detail.html", row=row,
                           key=db.session.get(ApiKey, row.key_id) if row.key_id else None,
                           prompts_enabled=settings.get("log_prompts"),
                           request_body=_pretty(row.request_body), response_text=row.response_text)


def _pretty(text: str | None) -> str | None:
    """Stored request JSON indented for reading; as stored when it was cut short."""
    if not text:
        return text
    try:
        return orjson.dumps(orjson.loads(text), option=orjson.OPT_INDENT_2).decode()
    except orjson.JSONDecodeError:
        return text


@bp.get("/export.<fmt>")
@require_role(*READ)
def export(fmt: str):
    """The current filter as .xlsx or .csv (see services/exports.py for the row cap)."""
    f, _ = usage_filter()
    stamp = f"{f.start:%Y%m%d}-{f.end:%Y%m%d}"
    if fmt == "xlsx":
        return Response(exports.xlsx_bytes(f), headers={
            "Content-Type": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
            "Content-Disposition": f'attachment; filename="usage-{stamp}.xlsx"'})
    if fmt == "csv":
        return Response(exports.csv_bytes(f), headers={
            "Content-Type": "text/csv; charset=utf-8",
            "Content-Disposition": f'attachment; filename="usage-{stamp}.csv"'})
    abort(404)
