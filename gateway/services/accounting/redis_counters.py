"""The Redis counter store for quota.py: counters in Redis hashes, shared by every process; the
database keeps the ledger (settled reservations and durable spend) that seeds and reconciles them.

While Redis cannot be reached (refused, silent, or its breaker open: gateway/redis_link.py),
reservations go to the database's counters (QUOTA_REDIS_FALLBACK=database) or are refused with
503 (refuse). The two stores then diverge: the database counts what Redis did not see. So every
settle writes the database first (it never knows less spend than Redis), and before this
process reserves in Redis again it catches up: it releases there the reservations it could not
settle, and raises each counter the database moved to the database's figure (never lowers one).
"""
from __future__ import annotations

import logging
import threading
import uuid
from collections import deque
from datetime import datetime

import orjson
from flask import Flask

from gateway.database import UNAVAILABLE
from gateway.errors import ServiceUnavailable
from gateway.extensions import db
from gateway.redis_link import RedisDown, RedisLink
from gateway.services.accounting.counters import QC, RT, DbCounters, _dialect_insert, _ledger_counters
from gateway.services.accounting.limits import Counter, Limit, Reservation

log = logging.getLogger("gateway.quota")
FIELDS = ("ut", "rt", "uu", "ru", "rq", "inf")
OWED_MAX = 100_000      # beyond this, the oldest are left to their TTL and `gateway keys reconcile`

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

# Raise one counter to the database's figures, never lower it: spend the database counted while
# Redis was away. A durable counter not in Redis is left to be seeded from the database.
RAISE = """
if redis.call('EXISTS', KEYS[1]) == 0 then
  if ARGV[4] == '1' then return 0 end
  redis.call('HSET', KEYS[1], 'ut', 0, 'uu', 0, 'rq', 0)
  if tonumber(ARGV[5]) > 0 then redis.call('EXPIRE', KEYS[1], ARGV[5]) end
end
local v = redis.call('HMGET', KEYS[1], 'ut', 'uu', 'rq')
if tonumber(v[1] or '0') < tonumber(ARGV[1]) then redis.call('HSET', KEYS[1], 'ut', ARGV[1]) end
if tonumber(v[2] or '0') < tonumber(ARGV[2]) then redis.call('HSET', KEYS[1], 'uu', ARGV[2]) end
if tonumber(v[3] or '0') < tonumber(ARGV[3]) then redis.call('HSET', KEYS[1], 'rq', ARGV[3]) end
return 1
"""


def _values(raw) -> list[str]:
    return ["0" if v is None else v.decode() if isinstance(v, bytes) else str(v) for v in raw]


def _hash_counter(scope: str, vals) -> Counter:
    v = [float(x or 0) for x in vals]
    return Counter(scope, int(v[0]), int(v[1]), v[2], v[3], int(v[4]), int(v[5]))


class RedisCounters:
    """Counters in Redis hashes, shared by every gateway process, with the database standing in
    while Redis is down (see the module's docstring)."""

    def __init__(self, app: Flask, link: RedisLink):
        self.app = app
        self.link = link
        self.r = link.client()
        self.prefix = app.config["QUOTA_REDIS_PREFIX"]
        self.res_ttl = int(app.config["QUOTA_RESERVATION_TTL"])
        self.fallback = app.config["QUOTA_REDIS_FALLBACK"]
        if self.fallback not in ("database", "refuse"):
            raise ValueError(f"QUOTA_REDIS_FALLBACK must be database or refuse, not {self.fallback!r}")
        self.db = DbCounters(app)
        self._reserve = self.r.register_script(RESERVE)
        self._settle = self.r.register_script(SETTLE)
        self._seed = self.r.register_script(SEED)
        self._reset = self.r.register_script(RESET)
        self._raise = self.r.register_script(RAISE)
        # What Redis must hear once it is back: reservations to release (request key, counter
        # keys), and the counters the database moved meanwhile ((scope, start) -> Limit).
        self.owed: deque[tuple[str, list[str]]] = deque(maxlen=OWED_MAX)
        self.behind: dict[tuple[str, datetime], Limit] = {}
        self.catching_up = threading.Lock()

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

    def _call(self, script, keys: list, args: list):
        """One script through the breaker; RedisDown when Redis is not asked or did not answer."""
        return self.link.run(lambda r: script(keys=keys, args=args, client=r))

    def _owe(self, res: Reservation) -> None:
        self.owed.append((self.rkey(res.request_id), [self.ckey(x) for x in res.limits]))

    def _moved(self, res: Reservation) -> None:
        """The database counted for `res`: Redis must take these counters' figures from it."""
        for x in res.limits:
            if not x.scope.endswith(":p"):  # in-flight counts settle where they were taken
                self.behind[(x.scope, x.period_start)] = x

    def reserve(self, res: Reservation, now: datetime) -> dict[str, Counter] | None:
        if self._ready(now):
            try:
                return self._reserve_redis(res, now)
            except RedisDown:
                self._owe(res)      # the script may have run before its answer was lost
        if self.fallback == "refuse":
            raise ServiceUnavailable("The gateway cannot reach Redis to check this key's limits; "
                                     "retry shortly.", code="quota_store_unavailable",
                                     retry_after=self.link.retry_in() or 1)
        got = self.db.reserve(res, now)
        if got is not None:
            self._moved(res)
        return got

    def _ready(self, now: datetime) -> bool:
        """Whether to reserve in Redis: it is not known to be down, and it has heard what the
        database counted while it was (one thread catches up; the others use the database)."""
        if self.link.state == "open":
            return False
        if not self.owed and not self.behind:
            return True
        if not self.catching_up.acquire(blocking=False):
            return False
        try:
            return self.catch_up(now)
        finally:
            self.catching_up.release()

    def catch_up(self, now: datetime) -> bool:
        """Tell Redis what it missed; True when nothing is left to tell."""
        try:
            while self.owed:
                rkey, ckeys = self.owed[0]
                self._call(self._settle, [rkey, *ckeys], [0, "0.0"])   # releases; used comes next
                self.owed.popleft()
            while self.behind:
                ident, x = self.behind.popitem()
                try:
                    self._raise_to_db(x, now)
                except BaseException:
                    self.behind.setdefault(ident, x)
                    raise
        except (RedisDown, *UNAVAILABLE):
            return False
        return True

    def _raise_to_db(self, x: Limit, now: datetime) -> None:
        if x.period_end is not None and x.period_end < now:
            return      # a period (a minute) that is over: nothing reserves against it any more
        c = self.db.read([x]).get(x.scope)
        if c is not None:
            self._call(self._raise, [self.ckey(x)], [c.used_tokens, repr(c.used_usd), c.requests,
                                                     "1" if x.durable else "0", self._ttl(x, now)])

    def _reserve_redis(self, res: Reservation, now: datetime) -> dict[str, Counter] | None:
        res.store = "redis"
        keys = [self.ckey(x) for x in res.limits]
        args: list = [res.tokens, repr(float(res.usd)), "", self.res_ttl]
        for x in res.limits:
            args += ["" if x.tokens is None else x.tokens, "" if x.usd is None else repr(float(x.usd)),
                     "" if x.requests is None else x.requests, "" if x.inflight is None else x.inflight,
                     self._ttl(x, now), "1" if x.durable else "0"]
        for _ in range(len(res.limits) + 3):
            args[2] = orjson.dumps({"t": res.tokens, "u": res.usd, "k": keys,
                                    "c": _ledger_counters(res), "key": res.key_id}).decode()
            out = self._call(self._reserve, keys + [self.rkey(res.request_id)], args)
            code = int(out[0])
            if code == 1:
                vals = _values(out[1:])
                return {x.scope: _hash_counter(x.scope, vals[i * 6:i * 6 + 6]) for i, x in enumerate(res.limits)}
            if code == -2:
                self._seed_counter(res.limits[int(out[1]) - 1], now)
            elif code == -3:
                res.request_id = f"{res.request_id[:40]}#{uuid.uuid4().hex[:16]}"
            else:
                res.refused_by = res.limits[int(out[1]) - 1]
                return None
        return None

    def _seed_counter(self, x: Limit, now: datetime) -> None:
        used = self.db.durable_used([x]).get((x.scope, x.period_start), (0, 0.0))
        self._call(self._seed, [self.ckey(x)], [used[0], repr(float(used[1])), self._ttl(x, now),
                                                x.scope, x.period_start.isoformat()])

    def current(self, res: Reservation) -> dict[str, Counter]:
        """The counters of `res` as they are now (none known while Redis does not answer)."""
        if res.store == "db":
            return self.db.current(res)

        def read(r):
            pipe = r.pipeline(transaction=False)
            for x in res.limits:
                pipe.hmget(self.ckey(x), *FIELDS)
            return pipe.execute()
        try:
            rows = self.link.run(read)
        except RedisDown:
            return {}
        return {x.scope: _hash_counter(x.scope, _values(row)) for x, row in zip(res.limits, rows)}

    def diagnose(self, res: Reservation, now: datetime) -> Limit | None:
        return self.db.diagnose(res, now) if res.store == "db" else res.refused_by

    def settle(self, res: Reservation, used_tokens: int, used_usd: float,
               now: datetime) -> dict[str, Counter] | None:
        """Settle where `res` was reserved. Raises when the database did not take it (quota.py
        tries again later: every step is idempotent)."""
        if res.store == "db":
            counters = self.db.settle(res, used_tokens, used_usd, now)
            self._moved(res)
            return counters
        failed = None
        try:
            self._ledger(res, used_tokens, used_usd, now)   # first: see the module's docstring
        except Exception as e:      # noqa: BLE001 - Redis is still settled; this is retried
            failed = e
        try:
            counters = self._settle_redis(res, used_tokens, used_usd)
        except RedisDown:
            self._owe(res)
            self._moved(res)        # the used part reaches Redis from the ledger
            counters = None
        if failed is not None:
            raise failed
        return counters

    def _settle_redis(self, res: Reservation, used_tokens: int, used_usd: float) -> dict[str, Counter] | None:
        keys = [self.rkey(res.request_id)] + [self.ckey(x) for x in res.limits]
        out = self._call(self._settle, keys, [used_tokens, repr(float(used_usd))])
        if int(out[0]) != 1:
            return None
        vals = _values(out[1:])
        return {x.scope: _hash_counter(x.scope, vals[i * 7 + 1:(i + 1) * 7])
                for i, x in enumerate(res.limits) if vals[i * 7] == "1"}

    def _ledger(self, res: Reservation, used_tokens: int, used_usd: float, now: datetime) -> None:
        """Keep the database ledger: the settled reservation, and durable spend per counter."""
        durable = [x for x in res.limits if x.durable]
        with db.engine.begin() as conn, self.db.locks.wait(conn, self.db.wait):
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

    def release_stale(self, before: datetime) -> int:
        """Redis expires its reservations itself (their TTL; reconcile drops what they held);
        the database holds only those made while Redis was down."""
        return self.db.release_stale(before)

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
