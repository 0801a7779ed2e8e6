"""Retention: usage records (with settled reservations and breaker transitions) older than `usage_retention_days` are
deleted, stored prompts and answers older than `prompt_retention_days` erased, a batch per
transaction so no table is ever loaded whole and writers wait at most one batch.

The rollup (rollup.py) is kept and completed before any record goes, so usage charts of a
purged period show the same totals as before. Usage is deleted up to a midnight (UTC): the
rollup's day rows and `gateway usage rebuild-rollup` work in whole days.

One process purges at a time: a Postgres advisory lock, or on SQLite a file lock beside the
database (every process sharing an SQLite file is on its host). A scheduled run starts only
when the last one, in any process, is RETENTION_INTERVAL_SECONDS old.
"""
from __future__ import annotations

import contextlib
import fcntl
import logging
import random
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

from flask import Flask, current_app
from sqlalchemy import delete, or_, select, text, update

from gateway.extensions import db
from gateway.models import DeploymentEvent, Reservation, Setting, StoredResponse, UsageRecord, utcnow
from gateway.services.accounting import rollup
from gateway.services.admin import settings
from gateway.services.response_store import store
from gateway.threads import PerProcessThread

log = logging.getLogger("gateway.retention")

BATCH = 1000
PAUSE_SECONDS = 0.05            # between batches: other writers get their turn
LAST_RUN = "retention_last_run"
ERASED_BEFORE = "prompts_erased_before"     # no stored prompt is older (but late spool replays)
REPLAY_MARGIN = timedelta(days=7)           # how far before that mark an erase still looks
LOCK_KEY = 0x67770001           # pg_try_advisory_lock key ("gw" + 1)
_local_lock = threading.Lock()  # SQLite in memory: this process is the only one


class Busy(RuntimeError):
    """Another process is purging right now."""


@dataclass
class Purged:
    usage: int = 0              # usage records deleted
    prompts: int = 0            # records whose stored prompt and answer were erased
    responses: int = 0          # stored Responses API answers deleted (they hold prompts too)
    reservations: int = 0       # settled reservations deleted
    cached: int = 0             # expired cached and idempotent responses deleted (database store)
    events: int = 0             # breaker transitions (downtime history) deleted with the usage
    usage_before: datetime | None = None
    prompts_before: datetime | None = None


def midnight(t: datetime) -> datetime:
    return t.replace(hour=0, minute=0, second=0, microsecond=0)


def purge(usage_days: int | None, prompt_days: int | None, now: datetime | None = None,
          echo=None) -> Purged:
    """Delete usage records older than `usage_days` (from midnight) and erase stored prompts
    older than `prompt_days`; None or 0 keeps them. Takes the single-runner lock; Busy when
    another process holds it."""
    now = now or utcnow()
    with single_runner() as got:
        if not got:
            raise Busy("another process is purging usage records right now")
        return _purge(usage_days, prompt_days, now, echo)


def _purge(usage_days: int | None, prompt_days: int | None, now: datetime, echo) -> Purged:
    out = Purged()
    if store(current_app).kind == "database":      # Redis expires its own
        out.cached = store(current_app).purge_expired()
    if prompt_days:
        out.prompts_before = now - timedelta(days=prompt_days)
        out.prompts = _erase_prompts(out.prompts_before)
        out.responses = _in_batches(
            select(StoredResponse.id).where(StoredResponse.created_at < out.prompts_before),
            lambda ids: delete(StoredResponse).where(StoredResponse.id.in_(ids)))
    if usage_days:
        out.usage_before = midnight(now - timedelta(days=usage_days))
        read = rollup.complete(echo=echo)       # the charts keep what is deleted below
        if read:
            log.info("usage rollup completed from %d records before purging", read)
        out.usage = _in_batches(select(UsageRecord.id).where(UsageRecord.created_at < out.usage_before)
                                .order_by(UsageRecord.created_at), lambda ids: delete(UsageRecord)
                                .where(UsageRecord.id.in_(ids)))
        out.reservations = _in_batches(
            select(Reservation.request_id).where(Reservation.settled_at.is_not(None),
                                                 Reservation.created_at < out.usage_before),
            lambda ids: delete(Reservation).where(Reservation.request_id.in_(ids)))
        out.events = _in_batches(
            select(DeploymentEvent.id).where(DeploymentEvent.at < out.usage_before),
            lambda ids: delete(DeploymentEvent).where(DeploymentEvent.id.in_(ids)))
    if out.usage or out.prompts:
        log.info("retention: deleted %d usage records, erased %d stored prompts", out.usage, out.prompts)
    return out


def _erase_prompts(before: datetime) -> int:
    # From the last run's mark on: the older records hold no prompt, and scanning them again
    # every hour would read most of the table.
    mark = _time_setting(ERASED_BEFORE)
    stored = or_(UsageRecord.request_body.is_not(None), UsageRecord.response_text.is_not(None))
    pick = select(UsageRecord.id).where(UsageRecord.created_at < before, stored)
    if mark is not None:
        pick = pick.where(UsageRecord.created_at >= mark - REPLAY_MARGIN)
    n = _in_batches(pick.order_by(UsageRecord.created_at),
                    lambda ids: update(UsageRecord).where(UsageRecord.id.in_(ids))
                    .values(request_body=None, response_text=None))
    if mark is None or before > mark:
        _put_time_setting(ERASED_BEFORE, before)
    return n


def _in_batches(pick, change) -> int:
    """Run `change(ids)` on BATCH ids of `pick` a transaction, until none is left; the count."""
    done = 0
    while True:
        ids = list(db.session.scalars(pick.limit(BATCH)))
        if not ids:
            return done
        db.session.execute(change(ids))
        db.session.commit()
        done += len(ids)
        if len(ids) < BATCH:
            return done
        time.sleep(PAUSE_SECONDS)


@contextlib.contextmanager
def single_runner():
    """Yield True while this process holds the purge lock, False when another one does."""
    engine = db.engine
    if engine.dialect.name == "postgresql":
        with engine.connect() as conn:
            got = bool(conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": LOCK_KEY}).scalar())
            conn.commit()
            try:
                yield got
            finally:
                if got:
                    conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": LOCK_KEY})
                    conn.commit()
        return
    path = engine.url.database
    if not path or path == ":memory:":
        got = _local_lock.acquire(blocking=False)
        try:
            yield got
        finally:
            if got:
                _local_lock.release()
        return
    with open(path + ".purge-lock", "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def last_run() -> datetime | None:
    """When a scheduled purge last finished, in any process."""
    return _time_setting(LAST_RUN)


def _time_setting(name: str) -> datetime | None:
    value = db.session.scalar(select(Setting.value).where(Setting.name == name))
    return datetime.fromisoformat(value) if isinstance(value, str) else None


def _put_time_setting(name: str, t: datetime) -> None:
    """Internal state beside the console settings (written under the purge lock)."""
    row = db.session.get(Setting, name)
    if row is None:
        db.session.add(Setting(name=name, value=t.isoformat()))
    else:
        row.value = t.isoformat()
    db.session.commit()


class RetentionJob:
    """The scheduled purge: one thread per process that looks every few minutes whether a run
    is due, and runs it by the console's retention settings."""

    def __init__(self, app: Flask):
        self.app = app
        self.interval = float(app.config["RETENTION_INTERVAL_SECONDS"])
        self.thread = PerProcessThread("retention", self._loop)
        self.stopped = threading.Event()

    def ensure(self) -> None:
        """Start the thread in this process (unless the interval is 0: scheduling is off)."""
        if self.interval > 0 and not self.stopped.is_set():
            self.thread.ensure()

    def stop(self) -> None:
        """End the thread after its current look (tests; a process exit ends it anyway)."""
        self.stopped.set()

    def _loop(self) -> None:
        check = min(self.interval, 300.0)
        # Spread out: workers started together look at different times.
        while not self.stopped.wait(check * random.uniform(0.5, 1.0)):
            try:
                self.run_if_due()
            except Exception:       # the next look tries again
                log.warning("scheduled usage purge failed", exc_info=True)

    def run_if_due(self, now: datetime | None = None) -> Purged | None:
        """Purge when the last run (in any process) is an interval old; None when not due or
        another process is at it."""
        now = now or utcnow()
        with self.app.app_context():
            try:
                with single_runner() as got:
                    last = last_run() if got else None
                    if not got or last is not None and (now - last).total_seconds() < self.interval:
                        return None
                    done = _purge(settings.get("usage_retention_days"), settings.get("prompt_retention_days"),
                                  now, None)
                    _put_time_setting(LAST_RUN, now)
                    return done
            finally:
                db.session.remove()
