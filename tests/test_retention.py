"""Retention: old usage records and stored prompts purged in batches by one process at a time,
on a schedule and by `gateway usage purge`; the usage charts of purged periods keep their totals."""
from __future__ import annotations

import random
import time
from datetime import timedelta

import pytest
from sqlalchemy import func, insert, select

from gateway.extensions import db
from gateway.models import DeploymentEvent, Reservation, Setting, UsageRecord, utcnow
from gateway.services.accounting import prompt_log, retention, rollup
from gateway.services.accounting.usage import UsageEntry, new_request_id, recorder
from gateway.services.admin import settings
from gateway.services.reporting import charts, filters
from tests.console_client import Console, make_user
from tests.helpers import make_app

NOW = utcnow()


def entry(days_ago: float, prompt: str | None = None, **kw) -> UsageEntry:
    return UsageEntry(request_id=new_request_id(), endpoint="chat", status=kw.pop("status", 200),
                      created_at=NOW - timedelta(days=days_ago), requested_model=kw.pop("model", "m1"),
                      provider="p", prompt_tokens=5, completion_tokens=7, total_tokens=12, cost_usd=0.01,
                      latency_ms=120.0, request_body=prompt, response_text=prompt and "answer", **kw)


def write(app, entries) -> None:
    """Through the usage writer, so the rollup is kept as in production."""
    rec = recorder(app)
    for e in entries:
        rec.record(e)
    with app.app_context():
        assert rec.drain()


def count(app, *where) -> int:
    with app.app_context():
        return db.session.scalar(select(func.count()).select_from(UsageRecord).where(*where))


def views(app) -> list:
    """What the usage page shows for a few ranges: totals and the per-model and per-key breakdowns."""
    out = []
    with app.app_context():
        for args in ({"range": "custom", "start": f"{NOW - timedelta(days=300):%Y-%m-%d}", "end": f"{NOW:%Y-%m-%d}"},
                     {"range": "custom", "start": f"{NOW - timedelta(days=200):%Y-%m-%d}",
                      "end": f"{NOW - timedelta(days=95):%Y-%m-%d}", "group": "key"},
                     {"range": "30d"}):
            f, _ = filters.parse_filter(args)
            out.append((charts.totals(f), sorted((r["group"], r["requests"], r["tokens"]) for r in charts.breakdown(f))))
    return out


def seeded(app, n_old=40, n_new=10):
    rng = random.Random(5)
    write(app, [entry(rng.uniform(92, 280), model=rng.choice(["m1", "m2"]), key_id=rng.choice([1, 2]),
                      status=rng.choice([200, 502])) for _ in range(n_old)]
          + [entry(rng.uniform(0, 20), key_id=1) for _ in range(n_new)])


def test_usage_purge_keeps_the_charts_and_deletes_in_batches(app, monkeypatch):
    monkeypatch.setattr(retention, "BATCH", 7)
    monkeypatch.setattr(retention, "PAUSE_SECONDS", 0)
    seeded(app)
    before = views(app)
    assert before[0][0]["requests"] == 50
    with app.app_context():
        done = retention.purge(90, None, now=NOW)
    assert done.usage == 40 and done.usage_before == retention.midnight(NOW - timedelta(days=90))
    assert count(app) == 10
    assert views(app) == before


def test_purge_completes_a_rollup_that_started_late(app):
    """An install that had records before the rollup existed: they are rolled up, then purged."""
    old = [dict(request_id=f"old{i}", endpoint="chat", status=200, created_at=NOW - timedelta(days=100 + i),
                requested_model="m1", provider="p", key_id=1, prompt_tokens=3, total_tokens=3, cost_usd=0.5,
                latency_ms=50.0, tags={}, attempts=[]) for i in range(30)]
    with app.app_context():
        db.session.execute(insert(UsageRecord), old)
        db.session.commit()
    write(app, [entry(1)])                  # the writer marks the rollup complete from the next hour
    with app.app_context():
        assert rollup.since() > NOW - timedelta(days=1)
    before = views(app)
    assert before[0][0]["requests"] == 31 and before[0][0]["cost"] == pytest.approx(15.01)
    with app.app_context():
        retention.purge(90, None, now=NOW)
        assert rollup.since() == rollup.EPOCH
    assert count(app) == 1 and views(app) == before


def test_prompts_only_erases_the_text_and_keeps_the_records(app):
    write(app, [entry(45, "old prompt"), entry(31, "old too"), entry(5, "recent prompt"), entry(40)])
    result = app.test_cli_runner().invoke(args=["usage", "purge", "--older-than", "30d", "--prompts-only"])
    assert result.exit_code == 0, result.output
    assert "erased the stored prompts of 2 records" in result.output
    with app.app_context():
        rows = db.session.execute(select(UsageRecord.request_body, UsageRecord.response_text)
                                  .order_by(UsageRecord.created_at)).all()
        fernet = app.extensions["fernet"]
        assert [(prompt_log.unseal(fernet, a), b and prompt_log.unseal(fernet, b)) for a, b in rows] == \
               [(None, None), (None, None), (None, None), ("recent prompt", "answer")]
    assert count(app) == 4


def test_cli_purge_deletes_records_and_settled_reservations(app):
    write(app, [entry(100, "x"), entry(10)])
    with app.app_context():
        db.session.add_all([Reservation(request_id="settled", counters=[], created_at=NOW - timedelta(days=100),
                                        settled_at=NOW - timedelta(days=100)),
                            Reservation(request_id="open", counters=[], created_at=NOW - timedelta(days=100))])
        db.session.commit()
    result = app.test_cli_runner().invoke(args=["usage", "purge", "--older-than", "90d"])
    assert result.exit_code == 0, result.output
    assert "deleted 1 usage records and 1 settled reservations" in result.output
    with app.app_context():
        assert set(db.session.scalars(select(Reservation.request_id))) == {"open"}     # reconcile frees it
    assert count(app) == 1
    bad = app.test_cli_runner().invoke(args=["usage", "purge", "--older-than", "soon"])
    assert bad.exit_code != 0 and "number of days" in bad.output


def test_breaker_transitions_go_with_the_usage_of_their_days(app):
    with app.app_context():
        db.session.add_all([DeploymentEvent(deployment_id=1, state="opened", at=NOW - timedelta(days=100)),
                            DeploymentEvent(deployment_id=1, state="closed", at=NOW - timedelta(days=99)),
                            DeploymentEvent(deployment_id=1, state="opened", at=NOW - timedelta(days=3))])
        db.session.commit()
        out = retention.purge(90, None, now=NOW)
        assert out.events == 2
        assert [e.at for e in db.session.scalars(select(DeploymentEvent))] == [NOW - timedelta(days=3)]


def test_a_late_replayed_prompt_is_still_erased(app):
    write(app, [entry(40, "first")])
    with app.app_context():
        assert retention.purge(None, 30, now=NOW).prompts == 1
    write(app, [entry(33, "replayed from a spool")])       # older than the last run's mark
    with app.app_context():
        assert retention.purge(None, 30, now=NOW).prompts == 1


def test_one_purge_at_a_time(app):
    with app.app_context():
        with retention.single_runner() as got:
            assert got
            with pytest.raises(retention.Busy):
                retention.purge(90, 30)
        assert retention.purge(90, 30).usage == 0         # free again


def test_schedule_runs_once_per_interval_across_processes(tmp_path):
    """Two apps on one database stand for two workers: only one purges per interval."""
    url = f"sqlite:///{tmp_path}/shared.db"
    one = make_app(url, instance_path=str(tmp_path / "i1"), RETENTION_INTERVAL_SECONDS=3600)
    other = make_app(url, instance_path=str(tmp_path / "i2"), RETENTION_INTERVAL_SECONDS=3600)
    with other.app_context():
        db.session.remove()
    write(one, [entry(400), entry(100, "old prompt")])
    first = one.extensions["retention"].run_if_due(now=NOW)
    assert first.usage == 1 and first.prompts == 1       # the defaults: 365 and 30 days
    assert other.extensions["retention"].run_if_due(now=NOW + timedelta(minutes=5)) is None
    write(one, [entry(500)])
    assert other.extensions["retention"].run_if_due(now=NOW + timedelta(hours=1, minutes=1)).usage == 1
    with one.app_context():
        assert retention.last_run() == NOW + timedelta(hours=1, minutes=1)
        db.engine.dispose()
    with other.app_context():
        db.engine.dispose()


def test_settings_turn_retention_off_or_shorter(app):
    write(app, [entry(400), entry(40, "prompt")])
    with app.app_context():
        settings.put("usage_retention_days", 0)     # keep for ever
        settings.put("prompt_retention_days", 60)
    assert app.extensions["retention"].run_if_due(now=NOW) is not None
    assert count(app) == 2 and count(app, UsageRecord.request_body.is_not(None)) == 1


def test_the_background_thread_purges(tmp_path):
    app = make_app(f"sqlite:///{tmp_path}/t.db", instance_path=str(tmp_path / "i"), RETENTION_INTERVAL_SECONDS=0.05)
    write(app, [entry(400), entry(1)])          # recording starts the writer and the retention thread
    deadline = time.monotonic() + 20
    while count(app) == 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert count(app) == 1
    job = app.extensions["retention"]
    assert job.thread.thread.is_alive()
    job.stop()
    job.thread.thread.join(timeout=10)
    with app.app_context():
        db.engine.dispose()


def test_console_settings_edit_retention(sqlite_app):
    make_user(sqlite_app, "admin@example.com", "admin")
    admin = Console(sqlite_app, "admin@example.com")
    page = admin.get("/settings").text
    assert 'name="usage_retention_days" type="number" min="0" step="1" value="365"' in page
    assert 'name="prompt_retention_days" type="number" min="0" step="1" value="30"' in page
    r = admin.post("/settings", {"usage_retention_days": "-3", "prompt_retention_days": "x"})
    assert r.status_code == 422
    assert 'id="usage_retention_days-error"' in r.text and 'id="prompt_retention_days-error"' in r.text
    assert admin.post("/settings", {"usage_retention_days": "730", "prompt_retention_days": "7"}).status_code == 200
    with sqlite_app.app_context():
        assert settings.get("usage_retention_days") == 730 and settings.get("prompt_retention_days") == 7
        assert db.session.get(Setting, "usage_retention_days").value == 730
