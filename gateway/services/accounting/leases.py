"""Quota leases: a worker takes room from a counter row in blocks and admits requests against
its block in memory, so most limited requests make no database write at all.

A lease is reserved in the database like a request (the row's reserved_tokens/reserved_usd grow
by the block, a ledger row `lease:...` says how much), so other workers and instances see it and
the counter can never be overspent: a worker only spends what it holds. Settled usage gathers in
memory and moves from reserved to used once a second (flush()), in one transaction per worker.
Blocks are small against what is left (QUOTA_LEASE_SHARE of the room, enough for
QUOTA_LEASE_REQUESTS requests of the size asking): a nearly spent quota gets no lease, and its
requests take the exact path (counters.DbCounters) as before. Unused room goes back when a lease
sits idle, when its row runs low, and on shutdown (close()); the ledger row is refreshed at each
flush, and one not refreshed for QUOTA_LEASE_TTL seconds (its worker died) is released by any
other worker. Only quotas and budgets are leased; rate and parallel limits stay exact.
"""
from __future__ import annotations

import logging
import threading
import time
import uuid
from datetime import datetime, timedelta

from flask import Flask
from sqlalchemy import and_, insert, select, update

from gateway.extensions import db
from gateway.models import utcnow
from gateway.services.accounting.counters import EPS, QC, RT, _RETURN, DbCounters, _counter, _ledger_counters
from gateway.services.accounting.lease_state import Lease, Step, enabled, low, room, view  # noqa: F401 (enabled)
from gateway.services.accounting.limits import Counter, Limit, Reservation
from gateway.threads import PerProcessThread

log = logging.getLogger("gateway.quota")
PREFIX = "lease:"


class LeasedCounters:
    """The database store with leases in front; everything it does not lease goes to `exact`."""

    def __init__(self, app: Flask, exact: DbCounters):
        c = app.config
        self.app, self.exact = app, exact
        self.per_block = int(c["QUOTA_LEASE_REQUESTS"])
        self.share = float(c["QUOTA_LEASE_SHARE"])
        self.ttl = float(c["QUOTA_LEASE_TTL"])
        self.interval = float(c["QUOTA_LEASE_FLUSH_SECONDS"])
        self.idle = max(self.ttl / 3, self.interval)
        self.leases: dict[tuple[str, datetime], Lease] = {}
        self.lock = threading.Lock()            # the in-memory numbers; never held over I/O
        self.refill_lock = threading.RLock()    # one refill or flush at a time per worker
        self.retired: list[Lease] = []          # closed or revoked, with requests still in flight
        self.flusher = PerProcessThread("quota-lease-flush", self._run)
        self.last_expiry = 0.0

    def __getattr__(self, name):        # read, durable_used, reconcile, ...: the exact store's
        return getattr(self.exact, name)

    # -- admission --------------------------------------------------------------------------
    def reserve(self, res: Reservation, now: datetime) -> dict[str, Counter] | None:
        """Admit `res` against this worker's leases, taking a block when they lack room;
        the exact store when no lease fits (a nearly spent quota, a rate limit)."""
        if any(x.rate for x in res.limits):
            return self.exact.reserve(res, now)
        got = self._take(res)
        if got is None and self._refill(res, now):
            got = self._take(res)
        if got is not None:
            return got
        self._give_back([x for x in res.limits], now)   # the room we hold, for the exact path
        return self.exact.reserve(res, now)

    def _take(self, res: Reservation) -> dict[str, Counter] | None:
        with self.lock:
            leases = [self.leases.get((x.scope, x.period_start)) for x in res.limits]
            if any(le is None or not room(le, res) for le in leases):
                return None
            t = time.monotonic()
            for le in leases:
                le.free_tokens -= res.tokens
                le.free_usd -= res.usd
                le.requests += 1
                le.inflight += 1
                le.touched = t
            res.store = "lease"
            res.leases = leases
            return {le.limit.scope: view(le) for le in leases}

    def _refill(self, res: Reservation, now: datetime) -> bool:
        """Take a block on every row of `res` that lacks room; False when some row has too
        little left to lease (then the exact path decides)."""
        self.flusher.ensure()
        with self.refill_lock:
            for x in res.limits:
                le = self.leases.get((x.scope, x.period_start))
                if le is not None and room(le, res):
                    continue
                if not self._take_block_in_app(x, res, now):
                    return False
        return True

    def _take_block_in_app(self, x: Limit, res: Reservation, now: datetime) -> bool:
        with self.app.app_context():
            return self._take_block(x, res, now)

    def _take_block(self, x: Limit, res: Reservation, now: datetime) -> bool:
        have = self.exact.read((x,))
        if x.scope not in have:
            self.exact._create_missing(Reservation(res.request_id, res.key_id, (x,), 0, 0.0))
            have = self.exact.read((x,))
        c = have.get(x.scope)
        if c is None:
            return False
        tokens, usd = res.tokens * self.per_block, res.usd * self.per_block
        if x.tokens is not None:
            tokens = min(tokens, int((x.tokens - c.used_tokens - c.reserved_tokens) * self.share))
            if tokens < 2 * res.tokens:
                return False
        if x.usd is not None:
            usd = min(usd, (x.usd - c.used_usd - c.reserved_usd) * self.share)
            if usd < 2 * res.usd - EPS:
                return False
        guard = [QC.c.scope == x.scope, QC.c.period_start == x.period_start]
        if x.tokens is not None:
            guard.append(QC.c.used_tokens + QC.c.reserved_tokens + tokens <= x.tokens)
        if x.usd is not None:
            guard.append(QC.c.used_usd + QC.c.reserved_usd + usd <= x.usd + EPS)
        key = (x.scope, x.period_start)
        le = self.leases.get(key)
        new = le is None
        lid = f"{PREFIX}{uuid.uuid4().hex}" if new else le.lid
        with db.engine.connect() as conn, self.exact.locks.wait(conn, self.exact.wait):
            values = dict(reserved_tokens=QC.c.reserved_tokens + tokens, reserved_usd=QC.c.reserved_usd + usd)
            if new:         # the lease counts as one request in flight until it is given back
                values["inflight"] = QC.c.inflight + 1
            row = conn.execute(update(QC).where(and_(*guard)).values(**values).returning(*_RETURN)).first()
            if row is None:
                conn.rollback()
                return False
            if new:
                conn.execute(insert(RT).values(request_id=lid, key_id=res.key_id,
                                               counters=_ledger_counters(Reservation(lid, None, (x,), 0, 0.0)),
                                               tokens=tokens, usd=usd, created_at=now))
            else:
                conn.execute(update(RT).where(RT.c.request_id == lid)
                             .values(tokens=RT.c.tokens + tokens, usd=RT.c.usd + usd, created_at=now))
            conn.commit()
        with self.lock:
            if new:
                le = self.leases[key] = Lease(x, lid, touched=time.monotonic(), refreshed=time.monotonic())
            le.held_tokens += tokens
            le.held_usd += usd
            le.free_tokens += tokens
            le.free_usd += usd
            le.seen = _counter(row)
        return True

    # -- settlement -------------------------------------------------------------------------
    def settle(self, res: Reservation, used_tokens: int, used_usd: float,
               now: datetime) -> dict[str, Counter] | None:
        """A leased reservation settles in memory (flush() writes it); others in the database."""
        if res.store != "lease":
            return self.exact.settle(res, used_tokens, used_usd, now)
        with self.lock:
            out = {}
            for le in res.leases:
                le.free_tokens += res.tokens - used_tokens
                le.free_usd += res.usd - used_usd
                le.used_tokens += used_tokens
                le.used_usd += used_usd
                le.inflight -= 1
                out[le.limit.scope] = view(le)
                if le.revoked and not le.inflight and le not in self.retired:
                    self.retired.append(le)     # its last used tokens still go to the database
            return out

    def current(self, res: Reservation) -> dict[str, Counter]:
        return self.exact.current(res)

    def diagnose(self, res: Reservation, now: datetime):
        return self.exact.diagnose(res, now)

    # -- flushing and giving back -----------------------------------------------------------
    def flush(self, now: datetime | None = None, give_back_all: bool = False, only=None) -> int:
        """Move settled usage from reserved to used in the database, refresh the leases' ledger
        rows, and give back the free room of idle, ended or running-low leases (all of it with
        `give_back_all`, of the (scope, period_start) in `only` if given); returns how many
        leases were written."""
        now = now or utcnow()
        with self.refill_lock:          # a refill never adds to a lease being closed
            work = self._plan(now, give_back_all, only)
            if not work:
                return 0
            try:
                rows = self._write(work, now)
            except Exception:
                self._undo(work)
                raise
        with self.lock:
            for step in work:
                step.lease.seen = rows.get(step.lease.lid, step.lease.seen)
        return len(work)

    def _plan(self, now: datetime, give_back_all: bool, only=None) -> list[Step]:
        t = time.monotonic()
        work = []
        with self.lock:
            for key, le in list(self.leases.items()) + [(None, le) for le in self.retired]:
                asked = give_back_all and (only is None or key in only)
                ended = le.limit.period_end is not None and now >= le.limit.period_end
                ret = key is not None and (asked or (le.seen is not None and low(le))
                                           or t - le.touched > self.idle or ended)
                rt, ru = (max(le.free_tokens, 0), max(le.free_usd, 0.0)) if ret else (0, 0.0)
                step = Step(le, le.used_tokens, le.used_usd, le.requests, rt, ru)
                if not (step.used_tokens or step.used_usd or step.requests or rt or ru) and key is not None \
                        and t - le.refreshed < self.ttl / 3:
                    continue            # nothing to write, and the ledger row is fresh enough
                le.used_tokens, le.used_usd, le.requests = 0, 0.0, 0
                le.free_tokens -= rt
                le.free_usd -= ru
                le.held_tokens -= step.used_tokens + rt
                le.held_usd -= step.used_usd + ru
                step.ended = key is not None and le.inflight == 0 and le.free_tokens <= 0 and le.free_usd <= EPS
                if step.ended or key is None:
                    self.leases.pop(key, None)
                    if le in self.retired and le.inflight == 0:
                        self.retired.remove(le)
                le.refreshed = t
                work.append(step)
        return work

    def _undo(self, work: list[Step]) -> None:
        """The database did nothing: keep it all for the next flush."""
        with self.lock:
            for s in work:
                le = s.lease
                le.used_tokens += s.used_tokens
                le.used_usd += s.used_usd
                le.requests += s.requests
                le.free_tokens += s.back_tokens
                le.free_usd += s.back_usd
                le.held_tokens += s.used_tokens + s.back_tokens
                le.held_usd += s.used_usd + s.back_usd
                if le.revoked:
                    if le not in self.retired:
                        self.retired.append(le)
                else:       # refill_lock is held: no new lease took its place meanwhile
                    self.leases[(le.limit.scope, le.limit.period_start)] = le

    def _write(self, work: list[Step], now: datetime) -> dict[str, Counter]:
        rows = {}
        with db.engine.connect() as conn, self.exact.locks.wait(conn, self.exact.wait):
            for s in work:
                le, x = s.lease, s.lease.limit
                if not le.revoked:
                    ledger = dict(tokens=max(le.held_tokens, 0), usd=max(le.held_usd, 0.0), created_at=now)
                    if s.ended:
                        ledger |= dict(settled_at=now, used_tokens=0, used_usd=0.0)
                    alive = conn.execute(update(RT).where(RT.c.request_id == le.lid, RT.c.settled_at.is_(None))
                                         .values(**ledger)).rowcount
                    if not alive:   # released as expired by another worker: it freed what we held
                        log.warning("quota lease %s was released by another worker", le.lid)
                        self._revoke(le)
                values = dict(used_tokens=QC.c.used_tokens + s.used_tokens, used_usd=QC.c.used_usd + s.used_usd,
                              requests=QC.c.requests + s.requests)
                if not le.revoked:
                    values |= dict(reserved_tokens=QC.c.reserved_tokens - (s.used_tokens + s.back_tokens),
                                   reserved_usd=QC.c.reserved_usd - (s.used_usd + s.back_usd))
                    if s.ended:
                        values["inflight"] = QC.c.inflight - 1
                row = conn.execute(update(QC).where(QC.c.scope == x.scope, QC.c.period_start == x.period_start)
                                   .values(**values).returning(*_RETURN)).first()
                if row is not None:
                    rows[le.lid] = _counter(row)
            conn.commit()
        return rows

    def _revoke(self, le: Lease) -> None:
        """Stop admitting against `le`; what its requests in flight use still counts as used."""
        with self.lock:
            le.revoked = True
            le.free_tokens, le.free_usd = 0, 0.0
            key = (le.limit.scope, le.limit.period_start)
            if self.leases.get(key) is le:
                del self.leases[key]
            if le.inflight and le not in self.retired:
                self.retired.append(le)

    def _give_back(self, limits, now: datetime) -> None:
        with self.lock:
            if not any((x.scope, x.period_start) in self.leases for x in limits):
                return
        try:
            self.flush(now, give_back_all=True, only={(x.scope, x.period_start) for x in limits})
        except Exception:       # noqa: BLE001 - the exact path will say what the database thinks
            log.warning("giving back quota leases failed", exc_info=True)

    def release_expired(self, now: datetime | None = None) -> int:
        """Release leases whose ledger row was not refreshed for QUOTA_LEASE_TTL (their worker
        died); returns how many."""
        now = now or utcnow()
        before = now - timedelta(seconds=self.ttl)
        with self.lock:
            mine = {le.lid for le in [*self.leases.values(), *self.retired]}
        with db.engine.connect() as conn:
            stale = conn.execute(select(RT.c.request_id, RT.c.counters, RT.c.tokens, RT.c.usd)
                                 .where(RT.c.settled_at.is_(None), RT.c.created_at < before,
                                        RT.c.request_id.startswith(PREFIX))).all()
        n = 0
        for rid, counters, t, u in stale:
            if rid in mine:
                continue
            lease = Reservation(rid, None, tuple(Limit(s, datetime.fromisoformat(p), None) for s, p in counters),
                                int(t), float(u))
            if self.exact.settle(lease, 0, 0.0, now) is not None:
                n += 1
        if n:
            log.warning("released %d quota leases of workers that stopped refreshing them", n)
        return n

    def close(self) -> None:
        """Write what was settled and give every lease's free room back (worker shutdown)."""
        try:
            with self.app.app_context():
                self.flush(give_back_all=True)
        except Exception:       # noqa: BLE001 - the ledger row expires after QUOTA_LEASE_TTL
            log.warning("giving back quota leases at shutdown failed", exc_info=True)

    def _flush_in_app(self) -> None:
        with self.app.app_context():
            self.flush()
            if time.monotonic() - self.last_expiry > self.ttl / 2:
                self.last_expiry = time.monotonic()
                self.release_expired()

    def _run(self) -> None:
        while True:
            time.sleep(self.interval)
            try:
                self._flush_in_app()
            except Exception:       # noqa: BLE001 - tried again at the next interval
                log.warning("quota lease flush failed", exc_info=True)
