"""The monthly cost-allocation workbook (services/reporting/monthly.py), downloaded from the
usage page's month picker."""
from __future__ import annotations

from flask import Response, request

from gateway.auth.rbac import READ, require_role
from gateway.console import bp
from gateway.console.scope import log_action, owner
from gateway.console.usage import usage_page
from gateway.errors import InvalidRequest
from gateway.services.reporting import downtime, monthly

XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
bp.add_app_template_filter(downtime.duration, "duration")


@bp.get("/usage/report.xlsx")
@require_role(*READ)
def usage_report():
    """The month's workbook, as the current user may see it; a bad month or grouping shows the
    usage page with the error next to the picker (422)."""
    month, by = request.args.get("month", ""), request.args.get("by", monthly.DEFAULT_BY)
    try:
        report = monthly.build(month, monthly.parse_by(by), owner())
    except InvalidRequest as e:
        return usage_page(report_errors={e.param or "month": e.message}), 422
    log_action("usage.report", report.month, by=",".join(d.spec for d in report.by))
    return Response(monthly.workbook_bytes(report), headers={
        "Content-Type": XLSX, "Content-Disposition": f'attachment; filename="cost-allocation-{report.month}.xlsx"'})
