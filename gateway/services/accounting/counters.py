"""The database counter store for quota.py (redis_counters.py is the other one).

Both reserve all-or-nothing in one step (one guarded UPDATE, or one Lua script), settle once per
request id, and keep a ledger of reservations in the database. Every statement here waits at
most DB_LOCK_TIMEOUT for a lock, then raises (one of database.UNAVAILABLE): quota.py
answers 503 rather than holding the request while someone else holds the database.
"""
from __future__ import annotations

import logging
import uuid
from datetime import datetime

from flask import Flask
from sqlalchemy import and_, insert, or_, select, update
from sqlalchemy.exc import IntegrityError, OperationalError

from gateway.database import locks
from gateway.extensions import db
from gateway.models import QuotaCounter, Reservation as LedgerRow
from gateway.services.accounting.limits import Counter, Limit, Reservation

log = logging.getLogger("gateway.quota")

QC = QuotaCounter.__table__
RT = LedgerRow.__table__
EPS = 1e-9      # float slack on USD caps
_RETURN = (QC.c.scope, QC.c.used_tokens, QC.c.reserved_tokens, QC.c.used_usd, QC.c.reserved_usd,
           QC.c.requests, QC.c.inflight)


def _counter(row) -> Counter:
    return Counter(row[0], int(row[1]), int(row[2]), float(row[3]), float(row[4]), int(row[5]), int(row[6]))


def _fits(limit: Limit, c: Counter, res: Reservation) -> bool:
    if limit.tokens is not None and c.used_tokens + c.reserved_tokens + res.tokens > limit.tokens:
        return False
    if limit.usd is not None and c.used_usd + c.reserved_usd + res.usd > limit.usd + EPS:
        return False
    if limit.requests is not None and c.requests + 1 > limit.requests:
        return False
    if limit.inflight is not None and c.inflight + 1 > limit.inflight:
        return False
    return True


def _ledger_counters(res: Reservation) -> list:
    return [[x.scope, x.period_start.isoformat()] for x in res.limits]


def _limits_from_ledger(counters: list) -> tuple[Limit, ...]:
    return tuple(Limit(scope, datetime.fromisoformat(start), None) for scope, start in counters)


def _dialect_insert(table):
    if db.engine.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as ins
    else:
        from sqlalchemy.dialects.sqlite import insert as ins
    return ins(table)


def _deadlock(e: OperationalError) -> bool:
    return getattr(e.orig, "sqlstate", None) in ("40P01", "40001")


class DbCounters:
    """Counters in the quota_counters table: exact within one database, any number of processes."""

    def __init__(self, app: Flask):
        self.app = app
        self.wait = float(app.config["DB_LOCK_TIMEOUT"])
        self.locks = locks(app)

    def reserve(self, res: Reservation, now: datetime) -> dict[str, Counter] | None:
        res.store = "db"
        retried = False
        for _ in range(4):
            try:
                got = self._reserve_once(res)
            except IntegrityError:      # the request id was used before: ledger it under a fresh one
                res.request_id = f"{res.request_id[:40]}#{uuid.uuid4().hex[:16]}"
                continue
            except OperationalError as e:   # a deadlock did nothing: once more; a lock timeout: 503
                if retried or not _deadlock(e):
                    raise
                retried = True
                continue
            if got is not None:
                return got
            if not self._create_missing(res):
                return None
        return None

    def _reserve_once(self, res: Reservation) -> dict[str, Counter] | None:
        conds = []
        for x in res.limits:
            c = [QC.c.scope == x.scope, QC.c.period_start == x.period_start]
            if x.tokens is not None:
                c.append(QC.c.used_tokens + QC.c.reserved_tokens + res.tokens <= x.tokens)
            if x.usd is not None:
                c.append(QC.c.used_usd + QC.c.reserved_usd + res.usd <= x.usd + EPS)
            if x.requests is not None:
                c.append(QC.c.requests + 1 <= x.requests)
            if x.inflight is not None:
                c.append(QC.c.inflight + 1 <= x.inflight)
            conds.append(and_(*c))
        stmt = (update(QC).where(or_(*conds))
                .values(reserved_tokens=QC.c.reserved_tokens + res.tokens,
                        reserved_usd=QC.c.reserved_usd + res.usd,
                        requests=QC.c.requests + 1, inflight=QC.c.inflight + 1)
                .returning(*_RETURN))
        with db.engine.connect() as conn, self.locks.wait(conn, self.wait):
            rows = conn.execute(stmt).all()
            if len(rows) != len(res.limits):
                conn.rollback()     # some counter is full or missing: reserve nothing anywhere
                return None
            conn.execute(insert(RT).values(
                request_id=res.request_id, key_id=res.key_id, counters=_ledger_counters(res),
                tokens=res.tokens, usd=res.usd, created_at=res.created_at))
            conn.commit()
        return {r[0]: _counter(r) for r in rows}

    def _create_missing(self, res: Reservation) -> bool:
        """Insert the counter rows a new period needs; True when any was missing."""
        have = self.read(res.limits)
        missing = [x for x in res.limits if x.scope not in have]
        if not missing:
            return False
        with db.engine.begin() as conn, self.locks.wait(conn, self.wait):
            for x in missing:
                conn.execute(_dialect_insert(QC).values(
                    scope=x.scope, period_start=x.period_start, used_tokens=0, reserved_tokens=0,
                    used_usd=0.0, reserved_usd=0.0, requests=0, inflight=0).on_conflict_do_nothing())
        return True

    def read(self, limits) -> dict[str, Counter]:
        """The counters' rows as they are now (a missing row: nothing counted yet)."""
        cond = or_(*[and_(QC.c.scope == x.scope, QC.c.period_start == x.period_start) for x in limits])
        with db.engine.connect() as conn, self.locks.wait(conn, self.wait):
            return {r[0]: _counter(r) for r in conn.execute(select(*_RETURN).where(cond))}

    def current(self, res: Reservation) -> dict[str, Counter]:
        """The counters of `res` as they are now."""
        return self.read(res.limits)

    def diagnose(self, res: Reservation, now: datetime) -> Limit | None:
        """Which limit refused the reservation (rate limits first: they pass soonest)."""
        rows = self.read(res.limits)
        failed = [x for x in res.limits if x.scope in rows and not _fits(x, rows[x.scope], res)]
        failed.sort(key=lambda x: not x.rate)
        return failed[0] if failed else None

    def settle(self, res: Reservation, used_tokens: int, used_usd: float,
               now: datetime) -> dict[str, Counter] | None:
        with db.engine.connect() as conn, self.locks.wait(conn, self.wait):
            done = conn.execute(update(RT).where(RT.c.request_id == res.request_id, RT.c.settled_at.is_(None))
                                .values(settled_at=now, used_tokens=used_tokens, used_usd=used_usd))
            if done.rowcount != 1:      # settled before (or never reserved): nothing to do
                conn.rollback()
                return None
            rows = conn.execute(self._apply(res, used_tokens, used_usd)).all()
            conn.commit()
        return {r[0]: _counter(r) for r in rows}

    @staticmethod
    def _apply(res: Reservation, used_tokens: int, used_usd: float):
        cond = or_(*[and_(QC.c.scope == x.scope, QC.c.period_start == x.period_start) for x in res.limits])
        return (update(QC).where(cond)
                .values(reserved_tokens=QC.c.reserved_tokens - res.tokens,
                        reserved_usd=QC.c.reserved_usd - res.usd,
                        used_tokens=QC.c.used_tokens + used_tokens, used_usd=QC.c.used_usd + used_usd,
                        inflight=QC.c.inflight - 1)
                .returning(*_RETURN))

    def release_stale(self, before: datetime) -> int:
        with db.engine.connect() as conn:
            stale = conn.execute(select(RT.c.request_id, RT.c.counters, RT.c.tokens, RT.c.usd)
                                 .where(RT.c.settled_at.is_(None), RT.c.created_at < before)).all()
        n = 0
        for rid, counters, t, u in stale:
            res = Reservation(rid, None, _limits_from_ledger(counters), int(t), float(u))
            if self.settle(res, 0, 0.0, before) is not None:
                n += 1
        if n:
            log.warning("released %d reservations that were never settled", n)
        return n

    def reconcile(self, now: datetime) -> int:
        return 0    # the database is the ledger: nothing drifts besides stale reservations

    def durable_used(self, limits) -> dict[tuple[str, datetime], tuple[int, float]]:
        cond = or_(*[and_(QC.c.scope == x.scope, QC.c.period_start == x.period_start) for x in limits])
        with db.engine.connect() as conn, self.locks.wait(conn, self.wait):
            return {(r[0], r[1]): (int(r[2]), float(r[3])) for r in conn.execute(
                select(QC.c.scope, QC.c.period_start, QC.c.used_tokens, QC.c.used_usd).where(cond))}
