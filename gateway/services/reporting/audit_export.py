"""The filtered audit trail as CSV or an Excel workbook: what the audit page shows, every row."""
from __future__ import annotations

from gateway.services.admin.audit import AuditFilter, export_rows, readable
from gateway.services.reporting.exports import table_csv, table_xlsx

HEADER = ["Time (UTC)", "Actor", "Source", "Action", "Target", "Details", "IP"]
WIDTHS = [20, 28, 9, 22, 36, 80, 16]


def _rows(f: AuditFilter, iso: bool):
    for r in export_rows(f):
        details = "; ".join(f"{k}: {readable(v)}" for k, v in (r.details or {}).items())
        yield [r.at.isoformat(sep=" ", timespec="seconds") if iso else r.at, r.actor, r.source, r.action, r.target,
               details, r.ip]


def csv_bytes(f: AuditFilter) -> bytes:
    return table_csv(HEADER, _rows(f, iso=True))


def xlsx_bytes(f: AuditFilter) -> bytes:
    return table_xlsx("Audit", HEADER, _rows(f, iso=False), WIDTHS)
