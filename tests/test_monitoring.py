"""/healthz, /readyz and /metrics: no login, no cookie; readiness names what is wrong; every
request counted once, from its usage record; gauges; gunicorn's workers added up."""
from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from gateway import create_app
from gateway.extensions import db
from gateway.services.accounting.usage import UsageEntry, recorder
from gateway.services.routing.health import health
from tests.helpers import (REDIS_URL, Gunicorn, add_provider, make_app, make_key, migrated_app, redis_or_skip,
                           usage_records)



def chat(client, key, model="echo", **body):
    return client.post("/v1/chat/completions", headers={"Authorization": f"Bearer {key}"},
                       json={"model": model, "messages": [{"role": "user", "content": "hello there"}], **body})


def samples(text: str) -> dict:
    """{(sample name, ((label, value), ...)): value} of a Prometheus exposition."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(found: dict, name: str, **labels) -> float:
    return found.get((name, tuple(sorted(labels.items()))), 0.0)


def scrape(client) -> dict:
    r = client.get("/metrics")
    assert r.status_code == 200 and r.content_type.startswith("text/plain")
    return samples(r.text)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def migrated(request, tmp_path):
    """An app on a database the migrations made, on SQLite and on Postgres."""
    url = f"sqlite:///{tmp_path}/m.db" if request.param == "sqlite" else request.getfixturevalue("empty_postgres")
    app = migrated_app(url, instance_path=str(tmp_path / "instance"))
    yield app
    with app.app_context():
        db.engine.dispose()


def test_the_endpoints_need_no_login_and_set_no_cookie(sqlite_app):
    client = sqlite_app.test_client()
    r = client.get("/healthz")
    assert r.status_code == 200 and r.json == {"status": "ok"}
    for url in ("/healthz", "/readyz", "/metrics"):
        r = client.get(url)
        assert r.status_code in (200, 503), url
        assert "Set-Cookie" not in r.headers and r.headers["Cache-Control"] == "no-store", url


def test_ready_on_a_migrated_database(migrated):
    r = migrated.test_client().get("/readyz")
    assert r.status_code == 200, r.json
    assert r.json == {"status": "ready", "checks": {"database": "ok", "migrations": "ok",
                                                    "redis": "not configured"}}


def test_not_ready_while_migrations_are_behind(sqlite_app):
    """create_all made these tables: no migration is recorded as applied."""
    r = sqlite_app.test_client().get("/readyz")
    assert r.status_code == 503
    assert r.json["status"] == "unavailable" and r.json["checks"]["database"] == "ok"
    assert r.json["checks"]["migrations"].startswith("behind: database at none")
    assert "migrations" in r.json["reason"]


def test_not_ready_without_the_database_and_the_details_stay_in_the_log(tmp_path, caplog):
    migrated_app(f"sqlite:///{tmp_path}/other.db")     # a migration in this process keeps loggers working
    app = create_app({"SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path}/no/such/dir/x.db", "TESTING": True},
                     instance_path=str(tmp_path / "instance"))
    r = app.test_client().get("/readyz")
    assert r.status_code == 503
    assert r.json["checks"]["database"] == "unreachable" and "migrations" not in r.json["checks"]
    assert str(tmp_path) not in r.text          # no paths or hosts for anonymous callers
    assert any("no/such/dir" in m and "database" in m for m in caplog.messages)


def test_not_ready_while_redis_is_down(tmp_path):
    app = migrated_app(f"sqlite:///{tmp_path}/m.db", instance_path=str(tmp_path / "i"),
                       REDIS_URL="redis://127.0.0.1:1/0")
    r = app.test_client().get("/readyz")
    assert r.status_code == 503
    assert r.json["checks"] == {"database": "ok", "migrations": "ok", "redis": "unreachable"}
    assert r.json["reason"] == "redis unreachable"


def test_ready_with_redis(tmp_path):
    redis_or_skip()
    app = migrated_app(f"sqlite:///{tmp_path}/m.db", instance_path=str(tmp_path / "i"), REDIS_URL=REDIS_URL)
    r = app.test_client().get("/readyz")
    assert r.status_code == 200 and r.json["checks"]["redis"] == "ok"


def test_every_request_is_counted_once_as_its_usage_record_says(app, mock):
    add_provider(app, "up", "openai", mock + "/v1", ["echo=gpt-4o-mini"])     # a listed price
    key = make_key(app)
    client = app.test_client()
    assert chat(client, key).status_code == 200
    assert chat(client, key, max_tokens=1).status_code == 200
    r = chat(client, key, stream=True, stream_options={"include_usage": True})
    assert r.status_code == 200 and b"[DONE]" in r.data
    assert chat(client, key, model="no-such-model").status_code == 404
    assert chat(client, "sk-gw-wrong").status_code == 401
    records = usage_records(app)
    found = scrape(client)

    assert value(found, "gateway_requests_total", endpoint="chat", model="echo", status="200") == 3
    # a model the catalog does not know is "other": clients cannot mint series
    assert value(found, "gateway_requests_total", endpoint="chat", model="other", status="404") == 1
    assert value(found, "gateway_requests_total", endpoint="chat", model="other", status="401") == 1
    assert sum(v for (name, _), v in found.items() if name == "gateway_requests_total") == len(records) == 5
    assert value(found, "gateway_request_duration_seconds_count", endpoint="chat", model="echo") == 3
    assert value(found, "gateway_time_to_first_token_seconds_count", model="echo") == 1
    served = [r for r in records if r.status == 200]
    assert value(found, "gateway_tokens_total", model="echo", kind="prompt") == sum(r.prompt_tokens for r in served)
    assert value(found, "gateway_tokens_total", model="echo", kind="completion") == \
        sum(r.completion_tokens for r in served)
    assert value(found, "gateway_cost_usd_total", model="echo") == pytest.approx(sum(r.cost_usd for r in served))
    assert sum(r.cost_usd for r in served) > 0
    assert value(found, "gateway_upstream_attempts_total", deployment_id="1", deployment="up/gpt-4o-mini",
                 outcome="ok") == 3


def test_upstream_attempts_by_deployment_and_outcome(sqlite_app, mock):
    add_provider(sqlite_app, "bad", "openai", mock + "/v1", ["broken=echo+fail=500"])
    add_provider(sqlite_app, "good", "openai", mock + "/v1", ["echo"])
    key = make_key(sqlite_app)
    client = sqlite_app.test_client()
    r = chat(client, key, model="broken", models=["broken", "echo"])     # falls back to echo
    assert r.status_code == 200 and r.headers["x-gateway-attempts"] == "2"
    found = scrape(client)
    assert value(found, "gateway_upstream_attempts_total", deployment_id="1", deployment="bad/echo+fail=500",
                 outcome="upstream_error") == 1
    assert value(found, "gateway_upstream_attempts_total", deployment_id="2", deployment="good/echo",
                 outcome="ok") == 1
    assert value(found, "gateway_requests_total", endpoint="chat", model="broken", status="200") == 1


def test_gauges_show_open_circuits(tmp_path, mock):
    app = make_app(f"sqlite:///{tmp_path}/t.db", instance_path=str(tmp_path / "i"),
                   CIRCUIT_FAILURES=2, MAX_ATTEMPTS=1)
    add_provider(app, "bad", "openai", mock + "/v1", ["broken=echo+fail=500"])
    add_provider(app, "good", "openai", mock + "/v1", ["echo"])
    key = make_key(app)
    client = app.test_client()
    for _ in range(2):
        assert chat(client, key, model="broken").status_code == 502
    assert chat(client, key).status_code == 200
    found = scrape(client)
    assert value(found, "gateway_deployment_circuit_state", deployment_id="1", deployment="bad/echo+fail=500") == 2
    assert value(found, "gateway_deployment_circuit_state", deployment_id="2", deployment="good/echo") == 0
    with app.app_context():
        health(app).forget()        # as after a restart: closed again
    assert value(scrape(client), "gateway_deployment_circuit_state", deployment_id="1",
                 deployment="bad/echo+fail=500") == 0
    with app.app_context():
        recorder(app).drain()
        db.engine.dispose()


def test_gauges_show_the_usage_queue_and_spool(sqlite_app):
    """No request was served, so no writer runs: what is queued or spooled stays there."""
    rec = recorder(sqlite_app)
    rec.queue.put(UsageEntry(request_id="queued", endpoint="chat", status=200))
    rec.spool_dir.mkdir(parents=True, exist_ok=True)
    (rec.spool_dir / "1-1.jsonl").write_bytes(b"{}\n" * 10)
    found = scrape(sqlite_app.test_client())
    assert value(found, "gateway_usage_queue_depth") == 1
    assert value(found, "gateway_usage_spool_files") == 1 and value(found, "gateway_usage_spool_bytes") == 30
    rec.queue.get_nowait()
    (rec.spool_dir / "1-1.jsonl").unlink()
    assert value(scrape(sqlite_app.test_client()), "gateway_usage_spool_files") == 0


def test_metrics_can_require_a_bearer_token(tmp_path, monkeypatch):
    monkeypatch.setenv("GATEWAY_METRICS_TOKEN", "12345")     # from_prefixed_env makes this an int
    app = create_app({"SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path}/t.db", "TESTING": True},
                     instance_path=str(tmp_path / "i"))
    client = app.test_client()
    for headers in ({}, {"Authorization": "Bearer 1234"}, {"Authorization": "12345"}):
        r = client.get("/metrics", headers=headers)
        assert r.status_code == 401 and r.headers["WWW-Authenticate"].startswith("Bearer")
        assert set(r.json["error"]) == {"message", "type", "param", "code"}
        assert r.json["error"]["code"] == "invalid_metrics_token"
    r = client.get("/metrics", headers={"Authorization": "Bearer 12345"})
    assert r.status_code == 200 and "gateway_requests_total" in r.text
    assert client.get("/healthz").status_code == 200      # the probes stay open


def _worker_pid(master: int) -> int:
    children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
    assert len(children) == 1, children
    return int(children[0])


def test_gunicorn_workers_share_their_values_and_a_dead_one_leaves_its_gauges(tmp_path):
    """Multiprocess mode: what a worker counted is still there after it was killed, added to what
    its replacement counts; its gauges go with it (child_exit)."""
    app = make_app(f"sqlite:///{tmp_path}/t.db", instance_path=str(tmp_path / "i"))
    add_provider(app, "demo", "mock", None, ["demo-chat"])
    key = make_key(app)
    shared = tmp_path / "prom"
    server = Gunicorn(app, f"sqlite:///{tmp_path}/t.db", 1, tmp_path, PROMETHEUS_MULTIPROC_DIR=str(shared))
    try:
        def send(n):
            for _ in range(n):
                r = requests.post(server.url + "/v1/chat/completions", timeout=10, json={
                    "model": "demo-chat", "messages": [{"role": "user", "content": "hi"}]},
                    headers={"Authorization": f"Bearer {key}"})
                assert r.status_code == 200

        def count():
            found = samples(requests.get(server.url + "/metrics", timeout=10).text)
            return value(found, "gateway_requests_total", endpoint="chat", model="demo-chat", status="200")

        send(3)
        assert count() == 3
        first = _worker_pid(server.proc.pid)
        assert (shared / f"gauge_livesum_{first}.db").exists()
        os.kill(first, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if _worker_pid(server.proc.pid) != first and \
                        requests.get(server.url + "/healthz", timeout=5).status_code == 200:
                    break
            except (AssertionError, requests.RequestException, OSError):
                pass
            time.sleep(0.2)
        assert not (shared / f"gauge_livesum_{first}.db").exists()      # marked dead
        assert (shared / f"counter_{first}.db").exists()                # its counts remain
        send(2)
        assert count() == 5
    finally:
        server.stop()
        with app.app_context():
            db.engine.dispose()
