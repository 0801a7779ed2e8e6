"""Quota leases (services/accounting/leases.py): two gunicorn workers admitting from blocks of
one SQLite counter never spend past the quota and give their blocks back on shutdown; a lease
whose worker died is released after QUOTA_LEASE_TTL, and its worker, if it comes back, stops
admitting from it while what it already settled still counts."""
from __future__ import annotations

from datetime import timedelta

from sqlalchemy import func, select

from gateway.extensions import db
from gateway.models import QuotaCounter, Reservation as LedgerRow, utcnow
from gateway.services.accounting import leases, quota
from gateway.services.accounting.counters import DbCounters
from gateway.services.accounting.limits import Limit, Reservation
from tests.helpers import Gunicorn, add_provider, check_quota, fire, make_app, make_key, records_when_written

BODY = {"model": "echo", "max_tokens": 20, "messages": [{"role": "user", "content": "hello there friend"}]}


def _counter(app, scope="key:1"):
    with app.app_context():
        c = db.session.scalar(select(QuotaCounter).where(QuotaCounter.scope == scope))
        db.session.expunge_all()
        return c


def _open_rows(app) -> int:
    with app.app_context():
        return db.session.scalar(select(func.count()).select_from(LedgerRow).where(LedgerRow.settled_at.is_(None)))


def test_two_gevent_workers_never_overspend_and_give_leases_back(mock, tmp_path):
    url = f"sqlite:///{tmp_path}/t.db"
    app = make_app(url, instance_path=str(tmp_path / "instance"))
    add_provider(app, "up", "openai", mock + "/v1", ["echo"])
    key = make_key(app, token_quota=3000)
    with app.app_context():
        db.engine.dispose()
    server = Gunicorn(app, url, 2, tmp_path, GATEWAY_QUOTA_LEASE_FLUSH_SECONDS="0.2")
    try:
        results = fire([server.url], key, 400, 32, BODY)
        with app.app_context():     # while serving, the workers held blocks in the ledger
            leased = db.session.scalar(select(func.count()).select_from(LedgerRow)
                                       .where(LedgerRow.request_id.startswith(leases.PREFIX)))
    finally:
        server.stop()
    assert leased >= 1
    c = _counter(app)
    check_quota(results, records_when_written(app, 400), c.used_tokens, c.reserved_tokens, 3000)
    assert c.inflight == 0 and c.reserved_usd < 1e-9 and _open_rows(app) == 0


def _store(app, **config) -> leases.LeasedCounters:
    app.config.update({"QUOTA_LEASE_TTL": 60, **config})
    return leases.LeasedCounters(app, DbCounters(app))


def _res(rid: str, limit: Limit, tokens: int = 100) -> Reservation:
    return Reservation(rid, 1, (limit,), tokens, 0.0)


def test_leased_usage_reaches_the_database_and_small_quotas_stay_exact(sqlite_app):
    now = utcnow()
    big = Limit("key:1", now.replace(day=1, hour=0, minute=0, second=0, microsecond=0), None, tokens=1_000_000)
    small = Limit("key:2", big.period_start, None, tokens=1_000)
    with sqlite_app.app_context():
        store = _store(sqlite_app)
        held = [_res(f"r{i}", big) for i in range(5)]
        for r in held:
            assert store.reserve(r, now) is not None and r.store == "lease"
        for r in held:
            store.settle(r, 30, 0.0, now)
        c = _counter(sqlite_app)
        assert c.used_tokens == 0 and c.reserved_tokens == 100 * 100    # one block, nothing flushed yet
        store.flush(now)
        c = _counter(sqlite_app)
        assert c.used_tokens == 150 and c.reserved_tokens == 100 * 100 - 150
        tiny = _res("t1", small)
        assert store.reserve(tiny, now) is not None and tiny.store == "db"     # 10% of 1000 < 2 requests
        assert _counter(sqlite_app, "key:2").reserved_tokens == 100
        assert _counter(sqlite_app).reserved_tokens == 100 * 100 - 150      # key:1 keeps its lease
        store.close()
        c = _counter(sqlite_app)
        assert (c.used_tokens, c.reserved_tokens, c.inflight) == (150, 0, 0)
        assert _open_rows(sqlite_app) == 1      # only the exact reservation t1, still in flight


def test_a_dead_workers_lease_expires_and_its_worker_stops_using_it(sqlite_app):
    now = utcnow()
    limit = Limit("key:1", now.replace(day=1, hour=0, minute=0, second=0, microsecond=0), None, tokens=1_000_000)
    with sqlite_app.app_context():
        dead, other = _store(sqlite_app), _store(sqlite_app)
        first = _res("a1", limit)
        assert dead.reserve(first, now) is not None and first.store == "lease"
        assert _counter(sqlite_app).reserved_tokens == 10_000
        assert other.release_expired(now + timedelta(seconds=30)) == 0      # not expired yet
        assert other.release_expired(now + timedelta(seconds=61)) == 1
        c = _counter(sqlite_app)
        assert (c.reserved_tokens, c.inflight) == (0, 0) and _open_rows(sqlite_app) == 0
        # The worker was only slow: what it settles still counts, and it leases afresh.
        dead.settle(first, 40, 0.0, now)
        dead.flush(now)
        c = _counter(sqlite_app)
        assert (c.used_tokens, c.reserved_tokens) == (40, 0)
        again = _res("a2", limit)
        assert dead.reserve(again, now) is not None and again.store == "lease"
        dead.settle(again, 10, 0.0, now)
        dead.close()
        c = _counter(sqlite_app)
        assert (c.used_tokens, c.reserved_tokens, c.inflight) == (50, 0, 0) and _open_rows(sqlite_app) == 0


def test_leases_are_off_unless_gevent_serves(sqlite_app):
    assert not leases.enabled(sqlite_app)
    assert not isinstance(quota.backend(sqlite_app), leases.LeasedCounters)
    sqlite_app.config["QUOTA_LEASES"] = "on"
    assert leases.enabled(sqlite_app)
