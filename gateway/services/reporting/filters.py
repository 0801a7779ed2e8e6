"""What the usage page, the logs and the exports show: the filter, parsed from the query string,
and its WHERE clauses for raw records and for the rollup alike."""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import DateTime, and_, literal, literal_column, or_, select

from gateway.extensions import db
from gateway.models import ApiKey, UsageHourly, UsageRecord, utcnow
from gateway.services.accounting import key_scope

RANGES = {"24h": timedelta(hours=24), "7d": timedelta(days=7), "30d": timedelta(days=30)}
GROUPS = ("model", "provider", "key", "user", "team", "plan", "tag")


@dataclass
class UsageFilter:
    """What the usage page, the logs and the exports are showing."""
    range: str = "24h"
    start: datetime = field(default_factory=lambda: utcnow() - RANGES["24h"])
    end: datetime = field(default_factory=utcnow)
    model: str = ""
    provider: str = ""
    key_id: int | None = None
    user_id: int | None = None
    team_id: int | None = None
    tag: str = ""               # "name=value" or just "name"
    status: str = ""            # ok, error, 4xx, 5xx
    group: str = "model"
    tag_key: str = ""           # which tag to group by when group == "tag"
    # Members' scope: their own requests plus these keys' (their team's); None = everything.
    scope_user_id: int | None = None
    scope_key_ids: tuple[int, ...] | None = None
    exact: bool = False         # raw records only, never the rollup (tests, comparisons)

    def query_args(self) -> dict:
        """The filter as URL parameters (for links, exports, pagination)."""
        args = {"range": self.range, "group": self.group}
        if self.range == "custom":
            args.update(start=self.start.strftime("%Y-%m-%d"), end=(self.end - timedelta(days=1)).strftime("%Y-%m-%d"))
        for name in ("model", "provider", "tag", "status", "tag_key"):
            if getattr(self, name):
                args[name] = getattr(self, name)
        for name in ("key_id", "user_id", "team_id"):
            if getattr(self, name) is not None:
                args[name] = getattr(self, name)
        return args


def _int(value) -> int | None:
    try:
        return int(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None


def _date(value: str | None) -> datetime | None:
    try:
        return datetime.strptime(value, "%Y-%m-%d") if value else None
    except ValueError:
        return None


def parse_filter(args, owner: key_scope.Owner | None = None) -> tuple[UsageFilter, dict]:
    """A UsageFilter from request args, narrowed to what `owner` may see (None: everything),
    and field -> message for anything invalid."""
    errors: dict[str, str] = {}
    f = UsageFilter()
    rng = args.get("range", "24h")
    now = utcnow()
    if rng == "custom":
        start, end = _date(args.get("start")), _date(args.get("end"))
        if start is None:
            errors["start"] = "Pick a start date."
        if end is None:
            errors["end"] = "Pick an end date."
        if start and end and end < start:
            errors["end"] = "The end date is before the start date."
        if start and end and (end - start).days > 366:
            errors["end"] = "Custom ranges are limited to a year."
        if errors:
            rng = "24h"
        else:
            f.start, f.end = start, end + timedelta(days=1)     # end date is inclusive
    if rng != "custom":
        rng = rng if rng in RANGES else "24h"
        f.start, f.end = now - RANGES[rng], now
    f.range = rng
    f.model = args.get("model", "").strip()[:200]
    f.provider = args.get("provider", "").strip()[:100]
    f.tag = args.get("tag", "").strip()[:200]
    f.status = args.get("status", "") if args.get("status") in ("ok", "error", "4xx", "5xx") else ""
    f.key_id, f.user_id, f.team_id = _int(args.get("key_id")), _int(args.get("user_id")), _int(args.get("team_id"))
    f.group = args.get("group") if args.get("group") in GROUPS else "model"
    f.tag_key = args.get("tag_key", "").strip()[:64]
    if f.group == "tag" and not f.tag_key:
        errors["tag_key"] = "Name the tag to group by."
        f.group = "model"
    if owner is not None:   # their own requests (the playground's too) and their keys'
        f.scope_user_id, f.scope_key_ids = owner.user_id, key_scope.visible_ids(owner)
    return f, errors


def time_only(f: UsageFilter) -> bool:
    """Whether the filter narrows by time (and status) alone: no dimension, tag or member scope."""
    return not (f.model or f.provider or f.tag or f.key_id is not None or f.user_id is not None
                or f.team_id is not None or f.scope_user_id is not None or f.scope_key_ids is not None)


def conditions(f: UsageFilter, start: datetime | None = None, end: datetime | None = None,
               covered: bool = False) -> list:
    """WHERE clauses for a filter, including the member's scope; start/end narrow its range.
    `covered`: the query and these conditions read only columns an index on created_at holds
    (ix_usage_created_cache; see time_only), so walking that index beats scanning the table at any width."""
    r = UsageRecord
    col = r.created_at
    start, end = start or f.start, end or f.end
    if end - start > timedelta(days=2) and db.engine.dialect.name == "sqlite" and not covered:
        # A wide range matches most rows: walking the created_at index and fetching each row is
        # ~10x slower than scanning the table in SQLite; the unary + keeps the planner off it.
        col = literal_column("+usage_records.created_at", DateTime)
    where = [col >= start, col < end]
    if f.tag:
        name, sep, value = f.tag.partition("=")
        expr = r.tags[name.strip()].as_string()
        where.append(expr == value.strip() if sep else expr.is_not(None))
    return where + _shared_conditions(r, f)


def _shared_conditions(t, f: UsageFilter) -> list:
    """Dimension, status and visibility conditions, for raw records (t=UsageRecord) and the
    rollup (t=UsageHourly) alike."""
    where = []
    if f.model:
        where.append(t.requested_model == f.model)
    if f.provider:
        where.append(t.provider == f.provider)
    if f.key_id is not None:
        where.append(t.key_id == f.key_id)
    if f.user_id is not None:
        where.append(t.user_id == f.user_id)
    if f.team_id is not None:
        where.append(t.key_id.in_(select(ApiKey.id).where(ApiKey.team_id == f.team_id)))
    if f.status == "ok":
        where.append(t.status < 400)
    elif f.status == "error":
        where.append(t.status >= 400)
    elif f.status == "4xx":
        where.append(and_(t.status >= 400, t.status < 500))
    elif f.status == "5xx":
        where.append(t.status >= 500)
    return where + _scope(t, f)


def _scope(t, f: UsageFilter) -> list:
    if f.scope_user_id is None and f.scope_key_ids is None:
        return []
    mine = [t.user_id == f.scope_user_id] if f.scope_user_id is not None else []
    if f.scope_key_ids:
        mine.append(t.key_id.in_(f.scope_key_ids))
    return [or_(*mine) if mine else literal(False)]


def visible(owner: key_scope.Owner | None) -> list:
    """WHERE clauses for the usage records `owner` may see, of any age (none: every record)."""
    return _scope(UsageRecord, parse_filter({}, owner)[0])


def rollup_conditions(f: UsageFilter, grain: int, start: datetime, end: datetime) -> list:
    """conditions() for UsageHourly rows of one grain (absent keys and users are stored as 0)."""
    h = UsageHourly
    where = [h.grain == grain, h.hour >= start, h.hour < end]
    return where + _shared_conditions(h, f)
