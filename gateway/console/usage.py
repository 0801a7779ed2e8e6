"""Usage charts, request logs and their exports."""
from __future__ import annotations

import orjson
from flask import Response, abort, render_template, request

from gateway.auth.rbac import READ, require_role
from gateway.console import bp
from gateway.console.scope import owner, usage_filter
from gateway.htmx import render
from gateway.services.accounting import key_scope
from gateway.services.admin import settings
from gateway.services.reporting import cache_stats, charts, downtime, exports, filters, marketplace, monthly, outcomes
from gateway.services.reporting import logs as request_logs  # `logs` is the page below
from gateway.services.routing import catalog

PER_PAGE = 50


def _filter_choices() -> dict:
    return {"model_names": catalog.model_names(), "provider_names": marketplace.provider_names(),
            "key_choices": key_scope.visible(owner()), "groups": filters.GROUPS}


@bp.get("/usage")
@require_role(*READ)
def usage():
    return usage_page()


def usage_page(report_errors: dict | None = None):
    """The usage page (or its panel) for the current filter; `report_errors`: the monthly
    report picker's, shown next to its fields."""
    f, errors = usage_filter()
    cells = charts.grouped(f)       # one grouped read for the charts and the breakdown table
    figs = charts.figures(f, charts.budget_line(f), cells)
    error_types = outcomes.error_types(f)
    if error_types:
        figs["errors"] = outcomes.error_type_figure(error_types)
    down = downtime.history(f.start, f.end)
    if down:
        figs["downtime"] = downtime.timeline_figure(down, f.start, f.end)
    ctx = dict(filter=f, errors=errors, totals=charts.totals(f), breakdown=charts.breakdown(f, cells=cells),
               cache=cache_stats.summary(f), charts=figs, error_types=error_types, downtime=down,
               args=request.args, export_args=f.query_args(), report_errors=report_errors or {},
               report_month=request.args.get("month") or f"{f.end:%Y-%m}",
               report_by=request.args.get("by") or monthly.DEFAULT_BY)
    return render("console/usage.html", "console/_usage_panel.html", **ctx, **_filter_choices())


@bp.get("/logs")
@require_role(*READ)
def logs():
    f, errors = usage_filter()
    page = max(1, request.args.get("page", 1, type=int))
    rows, more = request_logs.page(f, page, PER_PAGE)
    return render("console/logs.html", "console/_log_rows.html", rows=rows, more=more,
                  page=page, filter=f, errors=errors, args=request.args, export_args=f.query_args(),
                  **_filter_choices())


@bp.get("/logs/<int:record_id>")
@require_role(*READ)
def log_detail(record_id: int):
    found = request_logs.find(record_id, owner())
    if found is None:
        abort(404)
    row, key = found
    request_body, response_text = request_logs.transcript(row)
    return render_template("console/_log_detail.html", row=row, key=key,
                           prompts_enabled=settings.get("log_prompts"),
                           request_body=_pretty(request_body), response_text=response_text)


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
