"""The monthly cost-allocation workbook: a summary sheet, then one sheet per team, tag value
and key (whichever dimensions are asked for), each a table with totals and a chart.

Grouped by the database over the month's usage records (one GROUP BY per dimension, a few
hundred rows back). Every record falls in exactly one group of a dimension (no team, no key
or no tag value is a group of its own), so each dimension's groups add up to the month's
totals, which are those the usage page shows for that month (range custom, first to last day)
and the same grouping.
"""
from __future__ import annotations

import io
import re
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import aliased

from gateway.errors import InvalidRequest
from gateway.extensions import db
from gateway.models import ApiKey, Plan, Team, UsageRecord
from gateway.services.accounting import key_scope
from gateway.services.reporting import exports, filters

DEFAULT_BY = "team,tag:project,key"
KINDS = ("team", "key", "plan", "model", "provider")     # and tag:NAME
SUB = {"team": "key", "plan": "key", "key": "model", "tag": "model", "model": "key", "provider": "model"}
TITLES = {"team": "Team", "key": "Key", "plan": "Plan", "model": "Model", "provider": "Provider"}
MAX_SHEETS = 250        # per dimension; the summary still lists every group
_TAG = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")


@dataclass(frozen=True)
class Dimension:
    kind: str           # team, key, plan, model, provider, tag
    tag: str = ""       # the tag's name when kind == "tag"

    @property
    def title(self) -> str:
        return self.tag if self.kind == "tag" else TITLES[self.kind]

    @property
    def label(self) -> str:
        """The dimension inside a sentence: "team", "key", "tag project"."""
        return f"tag {self.tag}" if self.kind == "tag" else TITLES[self.kind].lower()

    @property
    def spec(self) -> str:
        return f"tag:{self.tag}" if self.kind == "tag" else self.kind

    @property
    def usage_group(self) -> dict:
        """The usage page's group-by parameters showing the same groups."""
        return {"group": "tag", "tag_key": self.tag} if self.kind == "tag" else {"group": self.kind}


@dataclass
class Line:
    name: str
    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    tokens: int = 0
    cost: float = 0.0

    def add(self, other: Line) -> None:
        self.requests += other.requests
        self.prompt_tokens += other.prompt_tokens
        self.completion_tokens += other.completion_tokens
        self.tokens += other.tokens
        self.cost += other.cost


@dataclass
class Group:
    """One team, key or tag value: its rows (keys or models) and their total."""
    value: object
    total: Line
    rows: list[Line] = field(default_factory=list)


@dataclass
class Report:
    month: str
    f: filters.UsageFilter
    total: Line
    by: dict[Dimension, list[Group]]


def parse_by(text: str | None) -> list[Dimension]:
    """`team,tag:project,key` as dimensions; InvalidRequest(param="by") for anything else."""
    out: list[Dimension] = []
    for part in (p.strip() for p in (text or DEFAULT_BY).split(",")):
        if not part:
            continue
        if part.startswith("tag:"):
            name = part[4:].strip()
            if not _TAG.match(name):
                raise InvalidRequest(f"{part!r}: a tag name is letters, digits, '_', '-' or '.'", param="by")
            dim = Dimension("tag", name)
        elif part in KINDS:
            dim = Dimension(part)
        else:
            raise InvalidRequest(f"{part!r} is not a grouping: use {', '.join(KINDS)} or tag:NAME", param="by")
        if dim not in out:
            out.append(dim)
    if not out:
        raise InvalidRequest("Name at least one grouping, e.g. team,tag:project,key.", param="by")
    return out


def month_filter(month: str | None, owner: key_scope.Owner | None = None) -> filters.UsageFilter:
    """The usage filter of a calendar month (YYYY-MM, UTC) as `owner` may see it."""
    try:
        first = datetime.strptime((month or "").strip(), "%Y-%m")
    except ValueError:
        raise InvalidRequest("Pick a month as YYYY-MM.", param="month") from None
    nxt = first.replace(year=first.year + first.month // 12, month=first.month % 12 + 1)
    last = nxt.toordinal() - 1
    f, errors = filters.parse_filter({"range": "custom", "start": f"{first:%Y-%m-%d}",
                                      "end": datetime.fromordinal(last).strftime("%Y-%m-%d")}, owner)
    if errors:
        raise InvalidRequest(" ".join(errors.values()), param="month")
    return f


def build(month: str, by: list[Dimension], owner: key_scope.Owner | None = None) -> Report:
    """The month's totals and every dimension's groups, in SQL."""
    f = month_filter(month, owner)
    r = UsageRecord
    measures = [func.count(), func.coalesce(func.sum(r.prompt_tokens), 0), func.coalesce(func.sum(r.completion_tokens), 0),
                func.coalesce(func.sum(r.total_tokens), 0), func.coalesce(func.sum(r.cost_usd), 0.0)]
    total = Line("Total", *_numbers(db.session.execute(select(*measures).where(*filters.conditions(f))).one()))
    return Report(month=f"{f.start:%Y-%m}", f=f, total=total, by={d: _groups(f, d, measures) for d in by})


def _numbers(row) -> tuple:
    n, p, c, t, cost = row
    return int(n or 0), int(p or 0), int(c or 0), int(t or 0), float(cost or 0.0)


def _groups(f: filters.UsageFilter, dim: Dimension, measures: list) -> list[Group]:
    r, k, tm = UsageRecord, aliased(ApiKey), aliased(Team)
    exprs = {"team": k.team_id, "key": r.key_id, "plan": func.coalesce(k.plan_id, tm.plan_id),
             "model": r.requested_model, "provider": r.provider}
    main = r.tags[dim.tag].as_string() if dim.kind == "tag" else exprs[dim.kind]
    sub = exprs[SUB[dim.kind]]
    q = (select(main.label("g"), sub.label("s"), *measures).select_from(r)
         .outerjoin(k, k.id == r.key_id).outerjoin(tm, tm.id == k.team_id)
         .where(*filters.conditions(f)).group_by(main, sub))
    groups: dict[object, Group] = {}
    subs: set = set()
    for g, s, *nums in db.session.execute(q):
        line = Line(s, *_numbers(nums))
        grp = groups.setdefault(g, Group(g, Line("")))
        grp.rows.append(line)
        grp.total.add(line)
        subs.add(s)
    names = _names(dim.kind, list(groups))
    sub_names = _names(SUB[dim.kind], list(subs))
    for grp in groups.values():
        grp.total.name = _label(dim, grp.value, names)
        for line in grp.rows:
            line.name = _label(Dimension(SUB[dim.kind]), line.name, sub_names)
        grp.rows.sort(key=lambda x: (-x.cost, -x.requests, x.name))
    return sorted(groups.values(), key=lambda x: (-x.total.cost, -x.total.requests, x.total.name))


def _names(kind: str, values: list) -> dict:
    ids = [v for v in values if v is not None]
    if not ids:
        return {}
    if kind == "team":
        return dict(db.session.execute(select(Team.id, Team.name).where(Team.id.in_(ids))).all())
    if kind == "plan":
        return dict(db.session.execute(select(Plan.id, Plan.name).where(Plan.id.in_(ids))).all())
    if kind == "key":
        rows = db.session.execute(select(ApiKey.id, ApiKey.name, ApiKey.prefix).where(ApiKey.id.in_(ids)))
        return {i: f"{name} ({prefix}…)" for i, name, prefix in rows}
    return {}


def _label(dim: Dimension, value, names: dict) -> str:
    if value is None or value == "":
        return {"team": "(no team)", "key": "(no key: console)", "plan": "(no plan)", "tag": f"(no {dim.tag})",
                "model": "(no model)", "provider": "(no provider)"}[dim.kind]
    if dim.kind in ("team", "key", "plan"):
        return names.get(value, f"#{value} (deleted)")
    return str(value)


_BAD_SHEET = re.compile(r"[\[\]:*?/\\']")


def _sheet_name(text: str, used: set) -> str:
    base = _BAD_SHEET.sub("_", text).strip() or "sheet"
    base = base[:31]
    name, n = base, 2
    while name.lower() in used:
        tail = f" ({n})"
        name, n = base[:31 - len(tail)] + tail, n + 1
    used.add(name.lower())
    return name


def workbook_bytes(report: Report) -> bytes:
    """The report as an .xlsx: Summary, then a sheet per group of each dimension."""
    import xlsxwriter

    buf = io.BytesIO()
    wb = xlsxwriter.Workbook(buf, {"in_memory": True, "strings_to_formulas": False, "strings_to_urls": False})
    fmt = {"title": wb.add_format({"bold": True, "font_size": 14}), "bold": wb.add_format({"bold": True}),
           "head": wb.add_format({"bold": True, "bg_color": "#1d2330", "font_color": "#ffffff"}),
           "int": wb.add_format({"num_format": "#,##0"}), "money": wb.add_format({"num_format": exports.MONEY_FORMAT}),
           "total_int": wb.add_format({"num_format": "#,##0", "bold": True, "top": 1}),
           "total_money": wb.add_format({"num_format": exports.MONEY_FORMAT, "bold": True, "top": 1}),
           "total_text": wb.add_format({"bold": True, "top": 1})}
    used = {"summary"}
    summary = wb.add_worksheet("Summary")
    summary.set_column(0, 0, 36)
    summary.set_column(1, 5, 16)
    summary.write_string(0, 0, f"Cost allocation, {report.month} (UTC)", fmt["title"])
    summary.write_string(1, 0, "From")
    summary.write_string(1, 1, f"{report.f.start:%Y-%m-%d}")
    summary.write_string(2, 0, "To (exclusive)")
    summary.write_string(2, 1, f"{report.f.end:%Y-%m-%d}")
    t = report.total
    line = 4
    for label, value, kind in (("Requests", t.requests, "int"), ("Prompt tokens", t.prompt_tokens, "int"),
                               ("Completion tokens", t.completion_tokens, "int"), ("Total tokens", t.tokens, "int"),
                               ("Cost (USD)", t.cost, "money")):
        summary.write_string(line, 0, label, fmt["bold"])
        summary.write_number(line, 1, value, fmt[kind])
        line += 1
    line += 1
    chart_row = 1
    for dim, groups in report.by.items():
        summary.write_string(line, 0, f"By {dim.label}", fmt["bold"])
        first, last = _table(summary, line + 1, dim.title, [g.total for g in groups], report.total, fmt)
        if groups:
            _chart(wb, summary, "Summary", first, last, f"Cost by {dim.label}", (chart_row, 7))
            chart_row += 18
        line = last + 3
        for grp in groups[:MAX_SHEETS]:
            title = f"{dim.title} {grp.total.name}" if dim.kind != "tag" else f"{dim.tag}={grp.total.name}"
            name = _sheet_name(title, used)
            ws = wb.add_worksheet(name)
            ws.set_column(0, 0, 36)
            ws.set_column(1, 5, 16)
            ws.write_string(0, 0, f"{dim.title}: {grp.total.name}", fmt["title"])
            ws.write_string(1, 0, f"{report.month} (UTC)")
            sub_title = TITLES[SUB[dim.kind]]
            a, b = _table(ws, 3, sub_title, grp.rows, grp.total, fmt)
            _chart(wb, ws, name, a, b, f"Cost by {sub_title.lower()}", (1, 7))
    wb.close()
    return buf.getvalue()


def _table(ws, row: int, first_col: str, lines: list[Line], total: Line, fmt: dict) -> tuple[int, int]:
    """A header, one row per line and a total row; returns (first data row, last data row)."""
    for col, h in enumerate((first_col, "Requests", "Prompt tokens", "Completion tokens", "Total tokens",
                             "Cost (USD)")):
        ws.write_string(row, col, h, fmt["head"])
    first = row + 1
    for i, x in enumerate(lines):
        _line(ws, first + i, x, fmt, "")
    last = first + len(lines) - 1
    _line(ws, first + len(lines), Line("Total", total.requests, total.prompt_tokens, total.completion_tokens,
                                       total.tokens, total.cost), fmt, "total_")
    return first, max(last, first)


def _line(ws, row: int, x: Line, fmt: dict, style: str) -> None:
    ws.write_string(row, 0, x.name, fmt.get(style + "text"))
    for col, (value, kind) in enumerate(((x.requests, "int"), (x.prompt_tokens, "int"),
                                         (x.completion_tokens, "int"), (x.tokens, "int"), (x.cost, "money")), 1):
        ws.write_number(row, col, value, fmt[style + kind])


def _chart(wb, ws, sheet: str, first: int, last: int, title: str, at: tuple[int, int]) -> None:
    chart = wb.add_chart({"type": "column"})
    chart.add_series({"name": "Cost (USD)", "categories": [sheet, first, 0, last, 0],
                      "values": [sheet, first, 5, last, 5]})
    chart.set_title({"name": title})
    chart.set_legend({"none": True})
    ws.insert_chart(at[0], at[1], chart, {"x_scale": 1.2, "y_scale": 1.1})
