"""Idempotency-Key on POST /v1: replay billed once, 409 on another body or while the first is
in flight (streams too), 24 h expiry on a moved clock, 5xx not kept."""
from __future__ import annotations

import threading
import time

import pytest
import requests

from gateway.services.admin import catalog_admin
from gateway.services.response_store import store
from tests.helpers import LiveServer, add_provider, make_key, usage_records

CHAT = {"model": "chat", "messages": [{"role": "user", "content": "pay me once"}], "max_tokens": 20}


@pytest.fixture
def gw(sqlite_app, mock):
    add_provider(sqlite_app, "up", "openai", mock + "/v1",
                 ["chat=echo-model", "slow=echo-model+latency=800", "trickle=echo-model+chunk_delay=300",
                  "broken=fail-500"])
    with sqlite_app.app_context():
        catalog_admin.save_price("echo-model", 0.5, 1.0)
    return sqlite_app


def post(client, key, idem, body=None):
    return client.post("/v1/chat/completions", json=body or CHAT,
                       headers={"Authorization": f"Bearer {key}", "Idempotency-Key": idem})


def upstream_calls(mock) -> int:
    return requests.get(mock + "/_mock/stats", timeout=5).json()["total"]


def test_replay_is_the_same_response_billed_once(gw, mock):
    key = make_key(gw, token_quota=10_000)
    c = gw.test_client()
    first, again = post(c, key, "k-1"), post(c, key, "k-1")
    assert again.status_code == first.status_code == 200
    assert again.get_data() == first.get_data()
    assert again.headers["idempotent-replayed"] == "true" and "idempotent-replayed" not in first.headers
    assert again.headers["x-gateway-deployment"] == first.headers["x-gateway-deployment"]
    assert float(again.headers["x-gateway-overhead-ms"]) >= 0
    assert upstream_calls(mock) == 1
    [record] = usage_records(gw)
    assert record.cost_usd > 0
    # another API key with the same Idempotency-Key is another request
    assert "idempotent-replayed" not in post(c, make_key(gw, name="b"), "k-1").headers
    assert upstream_calls(mock) == 2


def test_another_body_is_a_conflict(gw, mock):
    key = make_key(gw)
    c = gw.test_client()
    post(c, key, "k-2")
    r = post(c, key, "k-2", {**CHAT, "max_tokens": 21})
    assert r.status_code == 409 and r.json["error"]["code"] == "idempotency_key_reused"
    assert r.json["error"]["param"] == "Idempotency-Key"
    assert upstream_calls(mock) == 1


def test_in_flight_is_a_conflict(gw, mock):
    live = LiveServer(gw)
    key = make_key(gw)
    url = live.url + "/v1/chat/completions"
    headers = {"Authorization": f"Bearer {key}", "Idempotency-Key": "k-3"}
    body = {**CHAT, "model": "slow"}
    out = {}
    try:
        t = threading.Thread(target=lambda: out.update(r=requests.post(url, json=body, headers=headers, timeout=10)))
        t.start()
        deadline = time.monotonic() + 5
        while upstream_calls(mock) < 1 and time.monotonic() < deadline:
            time.sleep(0.02)
        r = requests.post(url, json=body, headers=headers, timeout=10)
        assert r.status_code == 409 and r.json()["error"]["code"] == "idempotency_key_in_flight"
        t.join()
        assert out["r"].status_code == 200
        replay = requests.post(url, json=body, headers=headers, timeout=10)
        assert replay.status_code == 200 and replay.content == out["r"].content
    finally:
        live.stop()
    assert upstream_calls(mock) == 1 and len(usage_records(gw)) == 1


def test_stream_replayed_once_finished(gw, mock):
    live = LiveServer(gw)
    key = make_key(gw)
    url = live.url + "/v1/chat/completions"
    headers = {"Authorization": f"Bearer {key}", "Idempotency-Key": "k-4"}
    body = {**CHAT, "model": "trickle", "stream": True}
    try:
        with requests.post(url, json=body, headers=headers, timeout=10, stream=True) as first:
            lines = first.iter_lines()
            assert next(lines).startswith(b"data: ")        # started, not finished
            busy = requests.post(url, json=body, headers=headers, timeout=10)
            assert busy.status_code == 409 and busy.json()["error"]["code"] == "idempotency_key_in_flight"
            whole = b"\n".join([b""] + list(lines))
        replay = requests.post(url, json=body, headers=headers, timeout=10)
    finally:
        live.stop()
    assert replay.status_code == 200 and replay.headers["content-type"].startswith("text/event-stream")
    assert replay.content.endswith(b"data: [DONE]\n\n") and b"Echo" in replay.content
    assert b"[DONE]" in whole
    assert upstream_calls(mock) == 1


def test_kept_24_hours(gw, mock):
    clock = [2_000_000.0]
    store(gw).clock = lambda: clock[0]
    key = make_key(gw)
    c = gw.test_client()
    post(c, key, "k-5")
    clock[0] += 24 * 3600 - 60
    assert post(c, key, "k-5").headers.get("idempotent-replayed") == "true"
    clock[0] += 120
    assert "idempotent-replayed" not in post(c, key, "k-5").headers
    assert upstream_calls(mock) == 2


def test_server_errors_are_not_kept(gw, mock):
    key = make_key(gw)
    c = gw.test_client()
    body = {**CHAT, "model": "broken"}
    assert post(c, key, "k-6", body).status_code >= 500
    again = post(c, key, "k-6", body)
    assert again.status_code >= 500 and "idempotent-replayed" not in again.headers
    bad = post(c, key, "k-7", {**CHAT, "temperature": "hot"})
    assert bad.status_code == 400
    assert post(c, key, "k-7", {**CHAT, "temperature": "hot"}).headers.get("idempotent-replayed") == "true"


def test_bad_header(gw):
    r = post(gw.test_client(), make_key(gw), "x" * 300)
    assert r.status_code == 400 and r.json["error"]["param"] == "Idempotency-Key"


def test_on_redis(tmp_path, mock):
    import uuid

    from tests.helpers import REDIS_URL, make_app, redis_or_skip
    r = redis_or_skip()
    prefix = f"gw:test:{uuid.uuid4().hex[:8]}:"
    app = make_app(f"sqlite:///{tmp_path}/t.db", instance_path=str(tmp_path / "i"), REDIS_URL=REDIS_URL,
                   RESPONSE_STORE_REDIS_PREFIX=prefix, QUOTA_REDIS_PREFIX=prefix + "q:", HEALTH_SYNC_SECONDS=3600)
    add_provider(app, "up", "openai", mock + "/v1", ["chat=echo-model"])
    clock = [3_000_000.0]
    store(app).clock = lambda: clock[0]
    key = make_key(app)
    c = app.test_client()
    try:
        first = post(c, key, "r-1")
        again = post(c, key, "r-1")
        assert again.headers.get("idempotent-replayed") == "true" and again.get_data() == first.get_data()
        assert post(c, key, "r-1", {**CHAT, "max_tokens": 3}).json["error"]["code"] == "idempotency_key_reused"
        assert len(list(r.scan_iter(match=prefix + "*"))) == 1
        clock[0] += 24 * 3600 + 1
        assert "idempotent-replayed" not in post(c, key, "r-1").headers
        assert upstream_calls(mock) == 2 and len(usage_records(app)) == 2
    finally:
        for k in r.scan_iter(match=prefix + "*"):
            r.delete(k)
