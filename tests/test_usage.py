"""Usage records are never lost: database locked or down, and graceful shutdown."""
from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from dataclasses import asdict

import requests
from sqlalchemy import create_engine, text

from gateway.services.accounting.usage import UsageEntry, new_request_id, recorder
from tests.helpers import ROOT, usage_records


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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
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


def test_worker_exit_waits_for_the_batch_the_writer_holds(sqlite_app, monkeypatch):
    # Under gevent the writer is a greenlet: whatever batch it is writing when the worker exits
    # dies with the process unless worker_exit waits for it.
    from types import SimpleNamespace

    from gateway import gunicorn_conf
    from gateway.services.accounting.usage import UsageRecorder
    taken, go = threading.Event(), threading.Event()
    real = UsageRecorder._insert

    def held(rows):
        taken.set()
        go.wait(10)
        real(rows)
    monkeypatch.setattr(UsageRecorder, "_insert", staticmethod(held))
    rec = recorder(sqlite_app)
    rec.record(entry(prompt_tokens=5))
    assert taken.wait(10)       # the writer took the record; the queue is empty
    threading.Thread(target=lambda: (time.sleep(0.2), go.set()), daemon=True).start()
    gunicorn_conf.worker_exit(None, SimpleNamespace(wsgi=sqlite_app))
    with sqlite_app.app_context():
        from gateway.extensions import db
        assert db.session.execute(text("SELECT count(*) FROM usage_records")).scalar() == 1
