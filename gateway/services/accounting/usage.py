"""Usage records: queued by request greenlets, written in batches by one background writer.

Nothing is lost: a full queue makes producers wait (back-pressure), a failing database is
retried with backoff and then spooled to instance/usage-spool/, replayed once it answers,
and shutdown flushes the queue.
"""
from __future__ import annotations

import hashlib
import logging
import os
import queue
import random
import threading
import time
from dataclasses import dataclass, field, fields
from pathlib import Path

import orjson
from flask import Flask, has_app_context
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from gateway.database import bounded_session
from gateway.errors import GatewayError
from gateway.extensions import db
from gateway.metrics import metrics
from gateway.models import UsageRecord, utcnow
from gateway.services.accounting import alerts, prompt_log, quota, rollup
from gateway.threads import PerProcessThread

log = logging.getLogger("gateway.usage")


@dataclass(slots=True)
class UsageEntry:
    request_id: str
    endpoint: str
    status: int
    created_at: object = field(default_factory=utcnow)
    key_id: int | None = None
    key_prefix: str | None = None
    user_id: int | None = None
    requested_model: str | None = None
    provider_id: int | None = None
    provider: str | None = None
    upstream_model: str | None = None
    stream: bool = False
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    cached_tokens: int = 0
    estimated: bool = False
    cost_usd: float = 0.0
    units: float | None = None          # media requests: what they are billed by
    unit: str | None = None
    latency_ms: float = 0.0
    ttft_ms: float | None = None
    overhead_ms: float | None = None    # latency less the waits on providers and the client
    cached: bool = False                # answered from the response cache
    saved_usd: float = 0.0              # a cached answer: what the original cost
    error_type: str | None = None
    error_message: str | None = None
    tags: dict = field(default_factory=dict)
    attempts: list = field(default_factory=list)
    variant: str | None = None
    request_body: str | None = None     # stored only when log_prompts is on; encrypted when written
    response_text: str | None = None


_FIELDS = tuple(f.name for f in fields(UsageEntry))


def row(entry: UsageEntry) -> dict:
    """The entry as an insert row (a shallow copy: dataclasses.asdict deep-copies, slowly)."""
    return {name: getattr(entry, name) for name in _FIELDS}


def new_request_id() -> str:
    # Unique, not secret: os.urandom (uuid4) costs ~2 ms a call on these VMs.
    return f"req_{random.getrandbits(128):032x}"


def entry_for(req, key, status: int, waited_ms: float = 0.0, **fields) -> UsageEntry:
    """The usage record of `req` made by `key` (None: the console or a shadow), as it ended;
    `waited_ms`: how much of its latency was spent waiting on others (not overhead)."""
    latency = (time.perf_counter() - req.started) * 1000
    return UsageEntry(request_id=req.request_id, endpoint=req.endpoint, status=status,
                      key_id=key.id if key else None, key_prefix=key.prefix if key else None,
                      user_id=key.user_id if key else None, requested_model=req.model,
                      stream=req.stream, tags=req.tags, latency_ms=latency,
                      overhead_ms=max(0.0, latency - waited_ms), **fields)


def record(app: Flask, req, admission, entry: UsageEntry, capture: int = 0, redactor=None) -> None:
    """The one way a request's record is made: settle its reservation, fire the alerts that
    spend crossed, then queue the record. `capture`: characters of the prompt to keep;
    `redactor`: what redacts the stored text (None: redaction is off)."""
    try:
        if capture and entry.request_body is None:
            entry.request_body = prompt_log.request_text(req.body, capture, redactor)
        if redactor is not None and entry.error_message:
            entry.error_message = redactor.text(entry.error_message)
        if admission is not None and admission.reservation is not None:
            counters = quota.settle(app, admission, entry)
            if counters:
                _alert(app, admission.reservation, counters)
    finally:
        recorder(app).record(entry)
        _observe(app, entry)


def _observe(app: Flask, entry: UsageEntry) -> None:
    # Here, once per record, so nothing is counted twice; never at the record's expense.
    try:
        metrics(app).observe(entry)
    except Exception:       # noqa: BLE001
        log.exception("metrics update failed for %s", entry.request_id)


def _alert(app: Flask, reservation, counters: dict) -> None:
    try:
        if has_app_context():
            alerts.check(app, reservation, counters)
        else:
            with app.app_context():
                alerts.check(app, reservation, counters)
    except Exception:       # an alert never costs the request its record
        log.exception("budget alert check failed for %s", reservation.request_id)


def record_failure(app: Flask, req, admission, error: GatewayError, key=None, **fields) -> None:
    """Record a request that ended in `error` (before or after it was admitted)."""
    key = admission.key if admission is not None else key
    record(app, req, admission, entry_for(req, key, error.status, error_type=error.type,
                                          error_message=error.message[:500], **fields))


class UsageRecorder:
    """One per worker process."""

    def __init__(self, app: Flask):
        self.app = app
        self.batch_size = app.config["USAGE_BATCH_SIZE"]
        self.interval = app.config["USAGE_FLUSH_SECONDS"]
        self.queue: queue.Queue[UsageEntry] = queue.Queue(maxsize=app.config["USAGE_QUEUE_MAX"])
        # One folder per database: a spool is replayed only into the database it was meant for.
        db_id = hashlib.sha256(app.config["SQLALCHEMY_DATABASE_URI"].encode()).hexdigest()[:12]
        self.spool_dir = Path(app.instance_path) / "usage-spool" / db_id
        self.write_lock = threading.Lock()
        self.writer = PerProcessThread("usage-writer", self._run)
        self.pending = 0        # queued or being written
        self.hurry = threading.Event()      # drain() wakes the writer instead of waiting
        self.count_lock = threading.Lock()
        # Other buffered writes done by this thread beside the records (e.g. breaker history):
        # callables returning how many rows they wrote; they keep what they failed to write.
        self.also_flush: list = []

    def record(self, entry: UsageEntry) -> None:
        """Queue a record; waits only when the queue is full (the database is far behind)."""
        self._ensure_writer()
        with self.count_lock:
            self.pending += 1
        self.queue.put(entry)

    def _ensure_writer(self) -> None:
        self.writer.ensure()
        self.app.extensions["retention"].ensure()     # the scheduled purge runs beside the writer
        self.app.extensions["alert_checker"].ensure()     # and the health-alert check

    def _run(self) -> None:
        last_replay = float("-inf")
        while True:
            batch = self._take(block=True)
            self._flush_others()
            if batch:
                self._write(batch)
                # Let records gather before the next write: one insert per interval, not per
                # request (on SQLite a write blocks the whole gevent worker while it runs).
                self.hurry.wait(self.interval)
                self.hurry.clear()
            elif time.monotonic() - last_replay > 5.0:     # idle: retry what was spooled
                last_replay = time.monotonic()
                with self.write_lock:
                    self._replay_spool()

    def _take(self, block: bool) -> list[UsageEntry]:
        batch: list[UsageEntry] = []
        try:
            batch.append(self.queue.get(block=block, timeout=self.interval if block else None))
        except queue.Empty:
            return batch
        while len(batch) < self.batch_size:
            try:
                batch.append(self.queue.get_nowait())
            except queue.Empty:
                break
        return batch

    def flush(self) -> int:
        """Write everything queued now, in the caller's thread; returns how many were written."""
        written = 0
        while batch := self._take(block=False):
            self._write(batch)
            written += len(batch)
        self._flush_others()
        return written

    def _flush_others(self) -> None:
        for flush in self.also_flush:
            try:
                flush()
            except Exception:       # noqa: BLE001 (never at the usage records' expense)
                log.exception("background flush failed")

    def drain(self, timeout: float = 10.0) -> bool:
        """Flush, then wait until the writer finished what it had taken; True when idle."""
        self.hurry.set()
        self.flush()
        deadline = time.monotonic() + timeout
        while self.pending and time.monotonic() < deadline:
            time.sleep(0.01)
        return self.pending == 0

    def _write(self, batch: list[UsageEntry], attempts: int = 5) -> None:
        try:
            self._write_batch(batch, attempts)
        finally:
            with self.count_lock:
                self.pending -= len(batch)

    def _write_batch(self, batch: list[UsageEntry], attempts: int) -> None:
        rows = [row(e) for e in batch]
        prompt_log.seal_rows(self.app.extensions["fernet"], rows)     # the spool never holds plaintext
        delay = 0.05
        with self.write_lock:
            for attempt in range(attempts):
                try:
                    with self.app.app_context():
                        self._insert(rows)
                    self._replay_spool()
                    return
                except Exception:
                    log.warning("usage write failed (attempt %d of %d)", attempt + 1, attempts,
                                exc_info=attempt == attempts - 1)
                    time.sleep(delay)
                    delay = min(delay * 4, 2.0)
            self._spool(rows)

    @staticmethod
    def _insert(rows: list[dict]) -> None:
        # The hourly rollup is summed from the rows actually inserted, in the same transaction.
        try:
            with bounded_session():     # a locked SQLite must not hold the whole gevent worker
                rollup.mark_once()
                db.session.execute(UsageRecord.__table__.insert(), rows)
                rollup.add(rows)
                db.session.commit()
        except IntegrityError:
            # A replayed spool file may hold rows already written: insert the new ones only.
            db.session.rollback()
            ids = [r["request_id"] for r in rows]
            have = set(db.session.scalars(select(UsageRecord.request_id)
                                          .where(UsageRecord.request_id.in_(ids))))
            fresh = [r for r in rows if r["request_id"] not in have]
            if fresh:
                db.session.execute(UsageRecord.__table__.insert(), fresh)
                rollup.add(fresh)
            db.session.commit()
        finally:
            db.session.remove()

    def _spool(self, rows: list[dict]) -> None:
        self.spool_dir.mkdir(parents=True, exist_ok=True)
        path = self.spool_dir / f"{os.getpid()}-{time.time_ns()}.jsonl"
        with open(path, "wb") as f:
            for r in rows:
                f.write(orjson.dumps(r) + b"\n")
        log.error("database unavailable: spooled %d usage records to %s", len(rows), path)

    def spool_size(self) -> tuple[int, int]:
        """Spooled batches waiting for the database, and their bytes."""
        files = size = 0
        for path in self.spool_dir.glob("*.jsonl") if self.spool_dir.is_dir() else ():
            try:
                size += path.stat().st_size
                files += 1
            except OSError:     # replayed meanwhile
                pass
        return files, size

    def _replay_spool(self) -> None:
        """Insert spooled records; call with write_lock held, so writes never race."""
        if not self.spool_dir.is_dir():
            return
        for path in sorted(self.spool_dir.glob("*.jsonl")):
            claimed = path.with_suffix(f".{os.getpid()}.replaying")
            try:
                path.rename(claimed)    # only one process replays a given file
            except OSError:
                continue
            rows = [orjson.loads(line) for line in claimed.read_bytes().splitlines() if line.strip()]
            for r in rows:
                r["created_at"] = _parse_time(r["created_at"])
            try:
                with self.app.app_context():
                    self._insert(rows)
                claimed.unlink()
            except Exception:
                claimed.rename(path)
                log.warning("spool replay failed; will try again later", exc_info=True)
                return


def _parse_time(value):
    from datetime import datetime
    return datetime.fromisoformat(value) if isinstance(value, str) else value


def recorder(app: Flask) -> UsageRecorder:
    return app.extensions["usage"]
