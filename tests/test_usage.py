"""Usage records are never lost: database locked or down, and graceful shutdown."""
from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from dataclasses import asdict
from types import SimpleNamespace

import requests
from sqlalchemy import create_engine, text

from gateway import gunicorn_conf
from gateway.extensions import db
from gateway.services.accounting.usage import UsageEntry, new_request_id, recorder
from tests.helpers import ROOT, free_port, usage_records


def entry(**kw) -> UsageEntry:
    return UsageEntry(request_id=new_request_id(), endpoint="chat", status=200, **kw)


def test_records_wait_out_a_locked_database(sqlite_app, tmp_path):
    db_path = sqlite_app.config["SQLALCHEMY_DATABASE_URI"].removeprefix("sqlite:///")
    blocker = sqlite3.connect(db_path, timeout=0)
    blocker.execute("BEGIN EXCLUSIVE")      # nobody else may write now
    rec = recorder(sqlite_app)
    rec.record(entry(prompt_tokens=5))
    time.sleep(0.3)
    blocker.rollback()
    blocker.close()
    assert [r.prompt_tokens for r in usage_records(sqlite_app)] == [5]


def test_records_spool_to_disk_when_the_database_is_down_and_replay(sqlite_app):
    rec = recorder(sqlite_app)
    good_uri = sqlite_app.config["SQLALCHEMY_DATABASE_URI"]
    with sqlite_app.app_context():
        from gateway.extensions import db
        engine = db.engine
        db.engines[None] = create_engine("sqlite:////nonexistent-dir/down.db")   # "down"
        try:
            rec._write_batch([entry(prompt_tokens=1), entry(prompt_tokens=2)], attempts=2)
        finally:
            db.engines[None] = engine
    spooled = list(rec.spool_dir.glob("*.jsonl"))
    assert len(spooled) == 1
    rec.record(entry(prompt_tokens=3))      # the next successful write replays the spool
    assert sorted(r.prompt_tokens for r in usage_records(sqlite_app)) == [1, 2, 3]
    assert not list(rec.spool_dir.glob("*"))
    assert good_uri == sqlite_app.config["SQLALCHEMY_DATABASE_URI"]


def test_replayed_spool_never_duplicates(sqlite_app):
    rec = recorder(sqlite_app)
    e = entry(prompt_tokens=7)
    rec.record(e)
    usage_records(sqlite_app)
    rec._spool([asdict(e)])   # as if a crash had left it spooled after all
    rec.record(entry(prompt_tokens=8))
    assert sorted(r.prompt_tokens for r in usage_records(sqlite_app)) == [7, 8]


def test_a_burst_is_written_in_batches(sqlite_app):
    rec = recorder(sqlite_app)
    threads = [threading.Thread(target=lambda: [rec.record(entry()) for _ in range(100)]) for _ in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(usage_records(sqlite_app)) == 500


def test_graceful_shutdown_keeps_in_flight_stream_records(tmp_path, mock):
    """SIGTERM to gunicorn mid-stream: the stream finishes and its record is written."""
    url = f"sqlite:///{tmp_path}/g.db"
    env = {**os.environ, "DATABASE_URL": url, "GATEWAY_DEMO": "0", "GATEWAY_ALLOW_PRIVATE_UPSTREAMS": "1",
           "PYTHONPATH": str(ROOT)}
    flask = [sys.executable, "-m", "flask", "--app", "app"]
    subprocess.run(flask + ["providers", "add", "--name", "up", "--kind", "openai", "--base-url", mock + "/v1",
                            "--api-key", "k-123456789", "--models", "slow=echo+chunk_delay=150"],
                   cwd=ROOT, env=env, check=True, capture_output=True)
    key = subprocess.run(flask + ["keys", "create", "--name", "t"], cwd=ROOT, env=env, check=True,
                         capture_output=True, text=True).stdout.strip().splitlines()[-1]
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "gunicorn", "-c", "python:gateway.gunicorn_conf",
                               "-b", f"127.0.0.1:{port}", "-w", "1", "app:app"], cwd=ROOT, env=env,
                              stdout=open(tmp_path / "gunicorn.log", "w"), stderr=subprocess.STDOUT)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                requests.get(base + "/v1/models", timeout=5)
                break
            except requests.RequestException:
                time.sleep(0.2)
        r = requests.post(base + "/v1/chat/completions", stream=True, timeout=30,
                          headers={"Authorization": f"Bearer {key}"},
                          json={"model": "slow", "stream": True,
                                "messages": [{"role": "user", "content": "a b c d e f g h"}]})
        lines = r.iter_lines()
        next(line for line in lines if line.startswith(b"data: "))
        server.send_signal(signal.SIGTERM)      # mid-stream
        rest = [line for line in lines if line]
        assert rest[-1] == b"data: [DONE]"
        server.wait(timeout=30)
    finally:
        if server.poll() is None:
            server.kill()
    with create_engine(url).connect() as conn:
        rows = conn.execute(text("select status, stream, completion_tokens from usage_records")).all()
    assert rows == [(200, True, 9)]


def test_a_worker_exiting_waits_for_the_batch_the_writer_holds(sqlite_app, monkeypatch):
    """gunicorn's worker_exit: records already taken by the writer, mid-write, are not lost
    when the process ends (flushing the queue alone missed them under load)."""
    rec = recorder(sqlite_app)
    taken, real = threading.Event(), rec._insert

    def slow_insert(rows):
        taken.set()
        threading.Event().wait(1.0)     # the database is slow today
        real(rows)

    monkeypatch.setattr(rec, "_insert", slow_insert)
    rec.record(UsageEntry(request_id=new_request_id(), endpoint="chat", status=200))
    assert taken.wait(5)                 # the writer holds it; the queue is empty
    gunicorn_conf.worker_exit(None, SimpleNamespace(wsgi=sqlite_app))
    with sqlite_app.app_context():
        assert db.session.execute(text("SELECT count(*) FROM usage_records")).scalar() == 1


def _route(dep_id: int):
    return SimpleNamespace(deployment_id=dep_id, rpm_limit=None, tpm_limit=None)


def _events(app) -> list[tuple]:
    from gateway.models import DeploymentEvent
    with app.app_context():
        rows = db.session.execute(db.select(DeploymentEvent.deployment_id, DeploymentEvent.state,
                                            DeploymentEvent.reason).order_by(DeploymentEvent.id)).all()
        db.session.remove()
        return [tuple(r) for r in rows]


def test_breaker_transitions_reach_the_database_through_the_usage_writer(sqlite_app):
    """Opened, half-open and closed are buffered by the breaker and written by the writer's
    thread with the records, never by the request itself."""
    from gateway.services.routing.health import health
    app = sqlite_app
    app.config.update(CIRCUIT_FAILURES=2, CIRCUIT_COOLDOWN_SECONDS=0.05)
    h, route = health(app), _route(7)
    h.failure(route, 5.0, status=502)
    h.failure(route, 5.0, status=502)
    assert h.state(7) == "open"
    assert _events(app) == []                   # nothing written on the request path
    time.sleep(0.06)
    assert h.begin(route, 10)                   # the half-open probe goes
    h.success(route, 5.0)
    assert h.state(7) == "closed"
    assert [(e["deployment_id"], e["state"]) for e in app.extensions["breaker_log"].events] == [(7, "opened"), (7, "half_open"), (7, "closed")]
    recorder(app).record(entry())                # the writer runs with the next record
    assert recorder(app).drain()
    assert _events(app) == [(7, "opened", "2 consecutive failures (last HTTP 502)"),
                            (7, "half_open", "cool-down over: probe sent"), (7, "closed", "probe succeeded")]


def test_breaker_history_waits_out_a_database_outage_in_a_bounded_buffer(sqlite_app):
    from gateway.models import DeploymentEvent
    from gateway.services.routing.breaker_log import BreakerLog
    app = sqlite_app
    log = BreakerLog(app, size=3)
    with app.app_context():
        DeploymentEvent.__table__.drop(db.engine)          # the database can't take them now
    for i in range(5):
        log.note(i, "opened", "test")
    assert log.flush() == 0 and [e["deployment_id"] for e in log.events] == [2, 3, 4] and log.dropped == 2
    with app.app_context():
        DeploymentEvent.__table__.create(db.engine)
    app.extensions["db_locks"].until = 0.0      # the lock breaker's cool-down after the failure is over
    assert log.flush() == 3 and not log.events
    assert [e[0] for e in _events(app)] == [2, 3, 4]
