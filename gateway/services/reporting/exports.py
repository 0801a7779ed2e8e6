"""The current usage view as an Excel workbook or CSV.

Built in memory: at most MAX_ROWS detail rows (newest first; the summary always covers the
whole filter because it is aggregated in SQL). 50 000 rows make a workbook of about 4 MB.
"""
from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from datetime import datetime

from sqlalchemy import select

from gateway.extensions import db
from gateway.formatting import plain
from gateway.models import UsageRecord
from gateway.services.reporting import charts
from gateway.services.reporting.filters import UsageFilter, conditions

MAX_ROWS = 50_000
MONEY_FORMAT = "$#,##0.00####"    # $1,234.50 and $0.000075: cents always, sub-cent digits when there are
COLUMNS = [  # header, attribute, width, kind
    ("Time (UTC)", "created_at", 20, "time"), ("Request ID", "request_id", 36, "text"),
    ("Status", "status", 8, "int"), ("Model", "requested_model", 24, "text"),
    ("Provider", "provider", 16, "text"), ("Upstream model", "upstream_model", 24, "text"),
    ("Key prefix", "key_prefix", 16, "text"), ("User ID", "user_id", 8, "int"),
    ("Stream", "stream", 8, "bool"), ("Prompt tokens", "prompt_tokens", 14, "int"),
    ("Completion tokens", "completion_tokens", 16, "int"), ("Total tokens", "total_tokens", 13, "int"),
    ("Estimated", "estimated", 10, "bool"), ("Cost (USD)", "cost_usd", 12, "money"),
    ("Latency (ms)", "latency_ms", 12, "ms"), ("TTFT (ms)", "ttft_ms", 10, "ms"),
    ("Error type", "error_type", 18, "text"), ("Error", "error_message", 40, "text"),
    ("Tags", "tags", 30, "tags"), ("Units", "units", 10, "num"), ("Unit", "unit", 12, "text"),
]


def detail_rows(f: UsageFilter, limit: int = MAX_ROWS) -> Iterator:
    """The filter's records, newest first, as rows of the COLUMNS' attributes only (loading
    whole UsageRecord objects took ~60 ms per 1,000 rows; README, Benchmark)."""
    q = (select(*(getattr(UsageRecord, attr) for _, attr, _, _ in COLUMNS)).where(*conditions(f))
         .order_by(UsageRecord.created_at.desc(), UsageRecord.id.desc()).limit(limit)
         .execution_options(yield_per=2000))
    yield from db.session.execute(q)


def _cell(row, attr: str, kind: str):
    value = getattr(row, attr)
    if kind == "tags":
        return ", ".join(f"{k}={v}" for k, v in (value or {}).items())
    if kind == "bool":
        return "yes" if value else "no"
    return value


def _safe_text(value):
    """Neutralise spreadsheet formulas in user text (CSV injection: =, +, -, @ at the start)."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


def _csv_converter(kind: str):
    """A CSV cell from a value of `kind`: ISO times, plain money (0.000075, never 7.5e-05), text
    with formulas neutralised; one function per column, so a row costs no lookups."""
    if kind == "time":
        return lambda v: v.isoformat(sep=" ")
    if kind == "money":
        return plain
    if kind == "bool":
        return lambda v: "yes" if v else "no"
    if kind == "tags":
        return lambda v: _safe_text(", ".join(f"{k}={x}" for k, x in (v or {}).items()))
    return _safe_text


def csv_bytes(f: UsageFilter) -> bytes:
    out = io.StringIO()
    w = csv.writer(out)
    w.writerow([c[0] for c in COLUMNS])
    convert = [_csv_converter(kind) for _, _, _, kind in COLUMNS]
    w.writerows([fn(v) for fn, v in zip(convert, row, strict=True)] for row in detail_rows(f))
    return out.getvalue().encode("utf-8-sig")     # the BOM makes Excel read UTF-8


def xlsx_bytes(f: UsageFilter, title: str = "Usage") -> bytes:
    """Summary (filter, totals, per-group table and a chart) and Detail sheets."""
    import xlsxwriter

    buf = io.BytesIO()
    wb = xlsxwriter.Workbook(buf, {"in_memory": True, "strings_to_formulas": False,
                                   "strings_to_urls": False, "default_date_format": "yyyy-mm-dd hh:mm:ss"})
    bold = wb.add_format({"bold": True})
    head = wb.add_format({"bold": True, "bg_color": "#1d2330", "font_color": "#ffffff"})
    fmt = {"time": wb.add_format({"num_format": "yyyy-mm-dd hh:mm:ss"}),
           "int": wb.add_format({"num_format": "#,##0"}), "money": wb.add_format({"num_format": MONEY_FORMAT}),
           "ms": wb.add_format({"num_format": "#,##0.0"}), "num": wb.add_format({"num_format": "#,##0.###"}),
           "pct": wb.add_format({"num_format": "0.0%"})}

    summary = wb.add_worksheet("Summary")
    summary.set_column(0, 0, 28)
    summary.set_column(1, 6, 16)
    summary.write(0, 0, f"{title} export", wb.add_format({"bold": True, "font_size": 14}))
    summary.write(1, 0, "From (UTC)")
    summary.write_datetime(1, 1, f.start, fmt["time"])
    summary.write(2, 0, "To (UTC)")
    summary.write_datetime(2, 1, f.end, fmt["time"])
    line = 3
    for name, value in f.query_args().items():
        if name not in ("range", "start", "end"):
            summary.write(line, 0, f"Filter: {name}")
            summary.write_string(line, 1, str(value))
            line += 1
    t = charts.totals(f)
    line += 1
    summary.write(line, 0, "Totals", bold)
    for label, key, kind in (("Requests", "requests", "int"), ("Errors", "errors", "int"),
                             ("Prompt tokens", "prompt_tokens", "int"),
                             ("Completion tokens", "completion_tokens", "int"),
                             ("Total tokens", "tokens", "int"), ("Cost (USD)", "cost", "money"),
                             ("Mean latency (ms)", "avg_latency", "ms"), ("Throttled (429)", "throttled", "int"),
                             ("Success rate", "success_rate", "pct"), ("USD per 1K tokens", "cost_per_1k", "money")):
        if t[key] is None:      # no requests or no tokens: no rate to show
            continue
        line += 1
        summary.write(line, 0, label)
        summary.write_number(line, 1, t[key], fmt[kind])
    line += 2
    groups = charts.breakdown(f)
    summary.write(line, 0, f"By {f.group}", bold)
    line += 1
    for col, h in enumerate((f.group.capitalize(), "Requests", "Errors", "Tokens", "Cost (USD)", "Mean latency (ms)")):
        summary.write(line, col, h, head)
    first = line + 1
    for g in groups:
        line += 1
        summary.write_string(line, 0, g["group"])
        summary.write_number(line, 1, g["requests"], fmt["int"])
        summary.write_number(line, 2, g["errors"], fmt["int"])
        summary.write_number(line, 3, g["tokens"], fmt["int"])
        summary.write_number(line, 4, g["cost"], fmt["money"])
        summary.write_number(line, 5, g["avg_latency"], fmt["ms"])
    if groups:
        chart = wb.add_chart({"type": "column"})
        chart.add_series({"name": "Requests", "categories": ["Summary", first, 0, line, 0],
                          "values": ["Summary", first, 1, line, 1]})
        chart.set_title({"name": f"Requests by {f.group}"})
        chart.set_legend({"none": True})
        summary.insert_chart(1, 7, chart, {"x_scale": 1.3, "y_scale": 1.2})

    detail = wb.add_worksheet("Detail")
    for col, (h, _, width, kind) in enumerate(COLUMNS):
        detail.write(0, col, h, head)
        detail.set_column(col, col, width, fmt.get(kind))
    detail.freeze_panes(1, 0)
    n = 0
    for n, row in enumerate(detail_rows(f), start=1):
        for col, (_, attr, _, kind) in enumerate(COLUMNS):
            value = _cell(row, attr, kind)
            if value is None:
                continue
            if kind == "time":
                detail.write_datetime(n, col, value, fmt["time"])
            elif kind in ("int", "money", "ms", "num"):
                detail.write_number(n, col, value, fmt[kind])
            else:
                detail.write_string(n, col, str(value))
    if n:
        detail.autofilter(0, 0, n, len(COLUMNS) - 1)
    if n >= MAX_ROWS:
        summary.write(line + 2, 0, f"Detail sheet cut at the newest {MAX_ROWS:,} rows; totals cover everything.", bold)
    wb.close()
    return buf.getvalue()


def table_csv(header: list[str], rows) -> bytes:
    """A plain table as CSV (Excel-readable UTF-8), user text made formula-safe."""
    out = io.StringIO()
    w = csv.writer(out)
    w.writerow(header)
    for row in rows:
        w.writerow([_safe_text(v) for v in row])
    return out.getvalue().encode("utf-8-sig")


def table_xlsx(sheet: str, header: list[str], rows, widths: list[int]) -> bytes:
    """A plain table as a one-sheet workbook: text written as text (never a formula or URL),
    datetimes as dates, numbers as numbers; a header row, frozen, with a filter."""
    import xlsxwriter

    buf = io.BytesIO()
    wb = xlsxwriter.Workbook(buf, {"in_memory": True, "strings_to_formulas": False, "strings_to_urls": False})
    head = wb.add_format({"bold": True, "bg_color": "#1d2330", "font_color": "#ffffff"})
    when = wb.add_format({"num_format": "yyyy-mm-dd hh:mm:ss"})
    ws = wb.add_worksheet(sheet)
    for col, (h, width) in enumerate(zip(header, widths)):
        ws.write_string(0, col, h, head)
        ws.set_column(col, col, width)
    ws.freeze_panes(1, 0)
    n = 0
    for n, row in enumerate(rows, start=1):
        for col, value in enumerate(row):
            if value is None:
                continue
            if isinstance(value, datetime):
                ws.write_datetime(n, col, value, when)
            elif isinstance(value, (int, float)) and not isinstance(value, bool):
                ws.write_number(n, col, value)
            else:
                ws.write_string(n, col, str(_safe_text(value)))
    if n:
        ws.autofilter(0, 0, n, len(header) - 1)
    wb.close()
    return buf.getvalue()
