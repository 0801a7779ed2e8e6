"""The usage rollup (UsageHourly): maintained by the usage writer, read by the charts.

Three grains share the table: 0 keeps every dimension per hour (key, user, model, provider,
status, variant); 1 sums keys and users away per day; 2 sums model, provider and variant away
per day. Wide ranges read a day grain when the view needs no dimension it dropped, so a 30-day
page reads a few thousand rows however sparse the hourly combinations are. Setting `usage_rollup_since` says from which hour the
rollup is complete; charts read raw records before it (and for the partial hours at a range's
edges), so rollup and raw give the same totals.

Latency percentiles come from a log-scale histogram: bucket 0 is [0, 8 ms), bucket i is
[8·2^((i-1)/3), 8·2^(i/3)) ms, the last one everything from ~330 s up. An estimate lies in the
same bucket as the nearest-rank value, so it is off by less than one bucket width: under 26% of
the value (2^(1/3) - 1), or under 8 ms below 8 ms.
"""
from __future__ import annotations

import logging
import math
from bisect import bisect_right
from datetime import datetime, timedelta

from flask import current_app
from sqlalchemy import delete, func, select, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import SQLAlchemyError

from gateway.extensions import db
from gateway.models import ROLLUP_BUCKETS, Setting, UsageHourly, UsageRecord, utcnow

log = logging.getLogger("gateway.usage")

HOURLY, DAILY, DAILY_KEYS = 0, 1, 2
EDGES = tuple(8.0 * 2 ** (i / 3) for i in range(ROLLUP_BUCKETS - 1))
HIST = tuple(f"h{i}" for i in range(ROLLUP_BUCKETS))
DIMS = ("grain", "hour", "key_id", "user_id", "requested_model", "provider", "status", "variant")
SUMS = ("requests", "errors", "prompt_tokens", "completion_tokens", "total_tokens", "cached_tokens",
        "cost_usd", "latency_ms_sum", "ttft_ms_sum", "ttft_count") + HIST
SINCE = "usage_rollup_since"
EPOCH = datetime(1970, 1, 1)
_INSERTS = {"sqlite": sqlite.insert, "postgresql": postgresql.insert}
_N = len(SUMS)


def bucket(ms: float) -> int:
    """The histogram column a latency falls in."""
    return bisect_right(EDGES, ms)


def supported() -> bool:
    return db.engine.dialect.name in _INSERTS


def aggregate(rows: list[dict]) -> list[dict]:
    """Usage insert rows summed into rollup rows (both grains), in primary-key order."""
    acc: dict[tuple, list] = {}
    for r in rows:
        t = r["created_at"]
        hour = t.replace(minute=0, second=0, microsecond=0)
        status = r["status"]
        rest = (r.get("requested_model") or "", r.get("provider") or "", status, r.get("variant") or "")
        ms = r.get("latency_ms") or 0.0
        ttft = r.get("ttft_ms")
        b = 10 + bisect_right(EDGES, ms)
        day, key_id, user_id = hour.replace(hour=0), r.get("key_id") or 0, r.get("user_id") or 0
        for k in ((HOURLY, hour, key_id, user_id) + rest, (DAILY, day, 0, 0) + rest,
                  (DAILY_KEYS, day, key_id, user_id, "", "", status, "")):
            a = acc.get(k)
            if a is None:
                a = acc[k] = [0] * 6 + [0.0, 0.0, 0.0, 0] + [0] * ROLLUP_BUCKETS
            a[0] += 1
            if status >= 400:
                a[1] += 1
            a[2] += r.get("prompt_tokens") or 0
            a[3] += r.get("completion_tokens") or 0
            a[4] += r.get("total_tokens") or 0
            a[5] += r.get("cached_tokens") or 0
            a[6] += r.get("cost_usd") or 0.0
            a[7] += ms
            if ttft is not None:
                a[8] += ttft
                a[9] += 1
            a[b] += 1
    return [dict(zip(DIMS, k)) | dict(zip(SUMS, acc[k])) for k in sorted(acc)]


def _upsert(dialect: str):
    t = UsageHourly.__table__
    ins = _INSERTS[dialect](t)
    return ins.on_conflict_do_update(index_elements=list(DIMS), set_={c: t.c[c] + ins.excluded[c] for c in SUMS})


def add(rows: list[dict]) -> None:
    """Add freshly inserted usage rows to the rollup, in the caller's transaction (no commit).
    One executemany upsert; rows sorted by key so concurrent writers lock in the same order."""
    dialect = db.engine.dialect.name
    if not rows or dialect not in _INSERTS:
        return
    try:
        with db.session.begin_nested():
            db.session.execute(_upsert(dialect), aggregate(rows))
    except SQLAlchemyError:
        # Never lose the records for the charts' sake (e.g. the table is not migrated yet):
        # keep them, and read raw records until `gateway usage rebuild-rollup`.
        log.error("usage rollup update failed; charts read raw records until it is rebuilt", exc_info=True)
        db.session.execute(delete(Setting).where(Setting.name == SINCE))


def mark_once() -> None:
    """Call before a process's first insert: records since when the rollup is complete (no commit).
    From the start on a fresh database, else from the next hour (this hour's records may predate it)."""
    dialect = db.engine.dialect.name
    state = current_app.extensions.setdefault("usage_rollup", {})
    if state.get("marked") or dialect not in _INSERTS:
        return
    empty = db.session.scalar(select(UsageRecord.id).limit(1)) is None
    since = EPOCH if empty else _ceil_hour(utcnow())
    db.session.execute(_INSERTS[dialect](Setting.__table__).on_conflict_do_nothing(index_elements=["name"]),
                       {"name": SINCE, "value": since.isoformat()})
    state["marked"] = True


def since() -> datetime | None:
    """From when the rollup is complete; None: not maintained here (read raw records)."""
    value = db.session.scalar(select(Setting.value).where(Setting.name == SINCE))
    return datetime.fromisoformat(value) if isinstance(value, str) else None


def _ceil_hour(t: datetime) -> datetime:
    floor = t.replace(minute=0, second=0, microsecond=0)
    return floor if floor == t else floor + timedelta(hours=1)


def rebuild(days_per_batch: int = 1, echo=None, until: datetime | None = None) -> int:
    """Recompute the rollup from raw records, a time window per transaction; returns records read.
    Each window's rollup rows are deleted and re-summed under a lock, so a writer running
    alongside neither loses its increments nor has them counted twice. With `until`, only the
    days up to it are rebuilt: the rollup after it must be complete already."""
    dialect = db.engine.dialect.name
    if dialect not in _INSERTS:
        raise RuntimeError(f"the usage rollup needs SQLite or Postgres, not {dialect}")
    first, last = db.session.execute(select(func.min(UsageRecord.created_at), func.max(UsageRecord.created_at))).one()
    db.session.commit()
    if until is not None and last is not None:
        last = min(last, until)
    total = 0
    if first is not None:
        step = timedelta(days=max(1, days_per_batch))
        start = first.replace(hour=0, minute=0, second=0, microsecond=0)
        while start <= last:
            end = start + step
            total += _rebuild_window(dialect, start, end)
            if echo:
                echo(f"{start:%Y-%m-%d}: {total} records")
            start = end
    # Everything is rolled up now: charts may read the rollup for any hour.
    db.session.execute(_INSERTS[dialect](Setting.__table__).on_conflict_do_update(
        index_elements=["name"], set_={"value": EPOCH.isoformat(), "updated_at": utcnow()}),
        {"name": SINCE, "value": EPOCH.isoformat()})
    db.session.commit()
    return total


def complete(echo=None) -> int:
    """Make the rollup cover every raw record (before purging some), rebuilding only the days
    before `usage_rollup_since`; returns the records read."""
    start = since()
    if start == EPOCH:
        return 0
    db.session.commit()
    return rebuild(echo=echo, until=start)      # None: never maintained or broken, so everything


def _rebuild_window(dialect: str, start: datetime, end: datetime) -> int:
    if dialect == "postgresql":
        # Writers upsert the rollup after inserting raw rows in the same transaction: they wait
        # here, and their rows are either in the snapshot below or added after we commit.
        db.session.execute(text("LOCK TABLE usage_hourly IN EXCLUSIVE MODE"))
    h = UsageHourly
    # Day grains' rows start at midnight: windows are whole days, so each is rebuilt whole.
    db.session.execute(delete(h).where(h.hour >= start, h.hour < end))
    cols = [UsageRecord.__table__.c[c] for c in (
        "created_at", "key_id", "user_id", "requested_model", "provider", "status", "variant", "prompt_tokens",
        "completion_tokens", "total_tokens", "cached_tokens", "cost_usd", "latency_ms", "ttft_ms")]
    result = db.session.execute(select(*cols).where(UsageRecord.created_at >= start, UsageRecord.created_at < end)
                                .execution_options(yield_per=20_000))
    merged: dict[tuple, dict] = {}
    n = 0
    for chunk in result.mappings().partitions():
        n += len(chunk)
        for row in aggregate([dict(r) for r in chunk]):
            k = tuple(row[d] for d in DIMS)
            have = merged.get(k)
            if have is None:
                merged[k] = row
            else:
                for c in SUMS:
                    have[c] += row[c]
    if merged:
        db.session.execute(UsageHourly.__table__.insert(), [merged[k] for k in sorted(merged)])
    db.session.commit()
    return n


def percentile(counts: list[int], q: float) -> float:
    """The q-quantile (0..1) estimated from histogram counts (see the module docstring)."""
    n = sum(counts)
    if not n:
        return 0.0
    rank = max(1, math.ceil(q * n))
    seen = 0
    for i, c in enumerate(counts):
        if seen + c >= rank:
            frac = (rank - seen - 0.5) / c
            if i == 0:
                return EDGES[0] * frac
            lo = EDGES[i - 1]
            hi = EDGES[i] if i < len(EDGES) else lo * 2 ** (1 / 3)
            return lo * (hi / lo) ** frac        # log-uniform within the bucket
        seen += c
    return EDGES[-1]
