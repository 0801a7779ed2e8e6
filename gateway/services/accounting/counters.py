"""Counter stores for quota.py: the database (one instance) or Redis (shared by processes).

Both reserve all-or-nothing in one step (one guarded UPDATE, or one Lua script), settle once per
request id, and keep a ledger of reservations in the database.
"""
from __future__ import annotations

import logging
import uuid
from datetime import datetime

import orjson
from flask import Flask
from sqlalchemy import and_, insert, or_, select, update
from sqlalchemy.exc import DBAPIError, IntegrityError

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


class DbCounters:
    """Counters in the quota_counters table: exact within one database, any number of processes."""

    def __init__(self, app: Flask):
        self.app = app

    def reserve(self, res: Reservation, now: datetime) -> dict[str, Counter] | None:
        for attempt in range(4):
            try:
                got = self._reserve_once(res)
            except IntegrityError:      # the request id was used before: ledger it under a fresh one
                res.request_id = f"{res.request_id[:40]}#{uuid.uuid4().hex[:16]}"
                continue
            except DBAPIError:          # deadlock or lock timeout: the statement did nothing
                if attempt == 3:
                    raise
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
        with db.engine.connect() as conn:
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
        have = self._rows(res)
        missing = [x for x in res.limits if x.scope not in have]
        if not missing:
            return False
        with db.engine.begin() as conn:
            for x in missing:
                conn.execute(_dialect_insert(QC).values(
                    scope=x.scope, period_start=x.period_start, used_tokens=0, reserved_tokens=0,
                    used_usd=0.0, reserved_usd=0.0, requests=0, inflight=0).on_conflict_do_nothing())
        return True

    def _rows(self, res: Reservation) -> dict[str, Counter]:
        cond = or_(*[and_(QC.c.scope == x.scope, QC.c.period_start == x.period_start) for x in res.limits])
        with db.engine.connect() as conn:
            return {r[0]: _counter(r) for r in conn.execute(select(*_RETURN).where(cond))}

    def diagnose(self, res: Reservation, now: datetime) -> Limit | None:
        """Which limit refused the reservation (rate limits first: they pass soonest)."""
        rows = self._rows(res)
        failed = [x for x in res.limits if x.scope in rows and not _fits(x, rows[x.scope], res)]
        failed.sort(key=lambda x: not x.rate)
        return failed[0] if failed else None

    def settle(self, res: Reservation, used_tokens: int, used_usd: float,
               now: datetime) -> dict[str, Counter] | None:
        with db.engine.connect() as conn:
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
        with db.engine.connect() as conn:
            return {(r[0], r[1]): (int(r[2]), float(r[3])) for r in conn.execute(
                select(QC.c.scope, QC.c.period_start, QC.c.used_tokens, QC.c.used_usd).where(cond))}


RESERVE = """
local n = #KEYS - 1
local t = tonumber(ARGV[1])
local u = tonumber(ARGV[2])
for i = 1, n do
  local b = 4 + (i - 1) * 6
  local k = KEYS[i]
  if ARGV[b + 6] == '1' and redis.call('HEXISTS', k, 'seeded') == 0 then return {-2, i} end
  local v = redis.call('HMGET', k, 'ut', 'rt', 'uu', 'ru', 'rq', 'inf')
  local ut, rt = tonumber(v[1] or '0'), tonumber(v[2] or '0')
  local uu, ru = tonumber(v[3] or '0'), tonumber(v[4] or '0')
  local rq, inf = tonumber(v[5] or '0'), tonumber(v[6] or '0')
  if ARGV[b + 1] ~= '' and ut + rt + t > tonumber(ARGV[b + 1]) then return {-1, i} end
  if ARGV[b + 2] ~= '' and uu + ru + u > tonumber(ARGV[b + 2]) + 1e-9 then return {-1, i} end
  if ARGV[b + 3] ~= '' and rq + 1 > tonumber(ARGV[b + 3]) then return {-1, i} end
  if ARGV[b + 4] ~= '' and inf + 1 > tonumber(ARGV[b + 4]) then return {-1, i} end
end
if not redis.call('SET', KEYS[n + 1], ARGV[3], 'NX', 'EX', ARGV[4]) then return {-3, 0} end
local out = {1}
for i = 1, n do
  local b = 4 + (i - 1) * 6
  local k = KEYS[i]
  redis.call('HINCRBY', k, 'rt', t)
  redis.call('HINCRBYFLOAT', k, 'ru', ARGV[2])
  redis.call('HINCRBY', k, 'rq', 1)
  redis.call('HINCRBY', k, 'inf', 1)
  local ttl = tonumber(ARGV[b + 5])
  if ttl > 0 then redis.call('EXPIRE', k, ttl) end
  local v = redis.call('HMGET', k, 'ut', 'rt', 'uu', 'ru', 'rq', 'inf')
  for j = 1, 6 do out[#out + 1] = v[j] or '0' end
end
return out
"""

SETTLE = """
local r = redis.call('GET', KEYS[1])
if not r then return {0} end
redis.call('DEL', KEYS[1])
local p = cjson.decode(r)
local out = {1}
for i = 2, #KEYS do
  local k = KEYS[i]
  if redis.call('EXISTS', k) == 1 then
    redis.call('HINCRBY', k, 'rt', -p['t'])
    redis.call('HINCRBYFLOAT', k, 'ru', -p['u'])
    redis.call('HINCRBY', k, 'ut', ARGV[1])
    redis.call('HINCRBYFLOAT', k, 'uu', ARGV[2])
    redis.call('HINCRBY', k, 'inf', -1)
    local v = redis.call('HMGET', k, 'ut', 'rt', 'uu', 'ru', 'rq', 'inf')
    out[#out + 1] = '1'
    for j = 1, 6 do out[#out + 1] = v[j] or '0' end
  else
    out[#out + 1] = '0'
    for j = 1, 6 do out[#out + 1] = '0' end
  end
end
return out
"""

SEED = """
if redis.call('HSETNX', KEYS[1], 'seeded', '1') == 1 then
  redis.call('HINCRBY', KEYS[1], 'ut', ARGV[1])
  redis.call('HINCRBYFLOAT', KEYS[1], 'uu', ARGV[2])
  redis.call('HSET', KEYS[1], 'scope', ARGV[4], 'ps', ARGV[5])
  if tonumber(ARGV[3]) > 0 then redis.call('EXPIRE', KEYS[1], ARGV[3]) end
end
return 1
"""

# Overwrite one counter from the ledger: used from the database, reserved from open reservations.
RESET = """
if redis.call('EXISTS', KEYS[1]) == 0 and ARGV[7] == '0' then return 0 end
if ARGV[1] ~= '' then redis.call('HSET', KEYS[1], 'ut', ARGV[1], 'uu', ARGV[2]) end
redis.call('HSET', KEYS[1], 'rt', ARGV[3], 'ru', ARGV[4], 'inf', ARGV[5])
return 1
"""


class RedisCounters:
    """Counters in Redis hashes, shared by every gateway process; the database keeps the ledger
    (settled reservations and durable spend) that seeds and reconciles them."""

    def __init__(self, app: Flask, url: str):
        import redis
        self.app = app
        self.r = redis.Redis.from_url(url)
        self.prefix = app.config["QUOTA_REDIS_PREFIX"]
        self.res_ttl = int(app.config["QUOTA_RESERVATION_TTL"])
        self.db = DbCounters(app)
        self._reserve = self.r.register_script(RESERVE)
        self._settle = self.r.register_script(SETTLE)
        self._seed = self.r.register_script(SEED)
        self._reset = self.r.register_script(RESET)

    def ckey(self, x: Limit) -> str:
        return f"{self.prefix}c:{x.scope}@{int(x.period_start.timestamp())}"

    def rkey(self, request_id: str) -> str:
        return f"{self.prefix}r:{request_id}"

    @staticmethod
    def _ttl(x: Limit, now: datetime) -> int:
        if x.period_end is None:
            return 0
        slack = 120 if x.rate else 86400
        return int((x.period_end - now).total_seconds()) + slack

    def reserve(self, res: Reservation, now: datetime) -> dict[str, Counter] | None:
        keys = [self.ckey(x) for x in res.limits]
        args: list = [res.tokens, repr(float(res.usd)), "", self.res_ttl]
        for x in res.limits:
            args += ["" if x.tokens is None else x.tokens, "" if x.usd is None else repr(float(x.usd)),
                     "" if x.requests is None else x.requests, "" if x.inflight is None else x.inflight,
                     self._ttl(x, now), "1" if x.durable else "0"]
        for _ in range(len(res.limits) + 3):
            args[2] = orjson.dumps({"t": res.tokens, "u": res.usd, "k": keys,
                                    "c": _ledger_counters(res), "key": res.key_id}).decode()
            out = self._reserve(keys=keys + [self.rkey(res.request_id)], args=args)
            code = int(out[0])
            if code == 1:
                vals = [v.decode() if isinstance(v, bytes) else str(v) for v in out[1:]]
                return {x.scope: Counter(x.scope, int(float(vals[i * 6])), int(float(vals[i * 6 + 1])),
                                         float(vals[i * 6 + 2]), float(vals[i * 6 + 3]),
                                         int(float(vals[i * 6 + 4])), int(float(vals[i * 6 + 5])))
                        for i, x in enumerate(res.limits)}
            if code == -2:
                self._seed_counter(res.limits[int(out[1]) - 1], now)
            elif code == -3:
                res.request_id = f"{res.request_id[:40]}#{uuid.uuid4().hex[:16]}"
            else:
                res._failed = res.limits[int(out[1]) - 1]
                return None
        return None

    def _seed_counter(self, x: Limit, now: datetime) -> None:
        used = self.db.durable_used([x]).get((x.scope, x.period_start), (0, 0.0))
        self._seed(keys=[self.ckey(x)], args=[used[0], repr(float(used[1])), self._ttl(x, now),
                                                x.scope, x.period_start.isoformat()])

    def diagnose(self, res: Reservation, now: datetime) -> Limit | None:
        return getattr(res, "_failed", None)

    def settle(self, res: Reservation, used_tokens: int, used_usd: float,
               now: datetime) -> dict[str, Counter] | None:
        keys = [self.rkey(res.request_id)] + [self.ckey(x) for x in res.limits]
        out = self._settle(keys=keys, args=[used_tokens, repr(float(used_usd))])
        if int(out[0]) != 1:
            return None
        vals = [v.decode() if isinstance(v, bytes) else str(v) for v in out[1:]]
        counters = {}
        for i, x in enumerate(res.limits):
            row = vals[i * 7:(i + 1) * 7]
            if row[0] == "1":
                counters[x.scope] = Counter(x.scope, int(float(row[1])), int(float(row[2])), float(row[3]),
                                            float(row[4]), int(float(row[5])), int(float(row[6])))
        self._ledger(res, used_tokens, used_usd, now)
        return counters

    def _ledger(self, res: Reservation, used_tokens: int, used_usd: float, now: datetime) -> None:
        """Keep the database ledger: the settled reservation, and durable spend per counter."""
        durable = [x for x in res.limits if x.durable]
        try:
            with db.engine.begin() as conn:
                ins = _dialect_insert(RT).values(
                    request_id=res.request_id, key_id=res.key_id, counters=_ledger_counters(res),
                    tokens=res.tokens, usd=res.usd, used_tokens=used_tokens, used_usd=used_usd,
                    created_at=res.created_at, settled_at=now)
                # RETURNING rather than rowcount: psycopg reports -1 for INSERT .. ON CONFLICT
                if conn.execute(ins.on_conflict_do_nothing().returning(RT.c.request_id)).first() is None:
                    return      # already in the ledger
                for x in durable:
                    stmt = _dialect_insert(QC).values(
                        scope=x.scope, period_start=x.period_start, used_tokens=used_tokens,
                        reserved_tokens=0, used_usd=used_usd, reserved_usd=0.0, requests=1, inflight=0)
                    conn.execute(stmt.on_conflict_do_update(
                        index_elements=["scope", "period_start"],
                        set_={"used_tokens": QC.c.used_tokens + used_tokens,
                              "used_usd": QC.c.used_usd + used_usd, "requests": QC.c.requests + 1}))
        except Exception:
            log.exception("could not write the quota ledger for %s; reconcile will not see it",
                          res.request_id)

    def release_stale(self, before: datetime) -> int:
        """Redis expires reservations itself (their TTL); reconcile drops what they held."""
        return 0

    def open_reservations(self) -> list[dict]:
        out = []
        for k in self.r.scan_iter(match=f"{self.prefix}r:*", count=500):
            raw = self.r.get(k)
            if raw:
                out.append(orjson.loads(raw))
        return out

    def reconcile(self, now: datetime) -> int:
        """Rewrite every counter: used from the database ledger, reserved and in-flight from the
        reservations still open in Redis. Best run when traffic is low; it is exact when idle."""
        held: dict[str, list] = {}
        for p in self.open_reservations():
            for k in p["k"]:
                h = held.setdefault(k, [0, 0.0, 0])
                h[0] += int(p["t"])
                h[1] += float(p["u"])
                h[2] += 1
        n = 0
        for k in self.r.scan_iter(match=f"{self.prefix}c:*", count=500):
            key = k.decode()
            scope, ps = self.r.hmget(k, "scope", "ps")
            used = ("", "")
            if scope and ps:
                start = datetime.fromisoformat(ps.decode())
                got = self.db.durable_used([Limit(scope.decode(), start, None)])
                u = got.get((scope.decode(), start), (0, 0.0))
                used = (u[0], repr(float(u[1])))
            h = held.get(key, [0, 0.0, 0])
            n += int(self._reset(keys=[k], args=[used[0], used[1], h[0], repr(float(h[1])), h[2], "", "0"]))
        return n
