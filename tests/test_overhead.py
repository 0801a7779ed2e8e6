"""x-gateway-overhead-ms on every /v1 response, and overhead_ms on the usage record: the
gateway's own time, with the waits on the provider taken out."""
from __future__ import annotations

import pytest

from tests.helpers import add_provider, make_key, usage_records

MSG = [{"role": "user", "content": "how long"}]


@pytest.fixture
def gw(sqlite_app, mock):
    add_provider(sqlite_app, "up", "openai", mock + "/v1",
                 ["chat=echo-model", "slow=echo-model+latency=300", "trickle=echo-model+chunk_delay=100",
                  "broken=fail-400"], embedding_models=["embed=embed-model"])
    return sqlite_app


def overhead(r) -> float:
    value = float(r.headers["x-gateway-overhead-ms"])
    assert value >= 0
    return value


def post(c, key, path="/v1/chat/completions", **body):
    return c.post(path, json=body, headers={"Authorization": f"Bearer {key}"})


def test_header_on_every_kind_of_response(gw):
    key = make_key(gw)
    c = gw.test_client()
    answers = [post(c, key, model="chat", messages=MSG),
               post(c, key, "/v1/embeddings", model="embed", input="hi"),
               post(c, key, model="chat", messages=MSG, stream=True),
               post(c, key, model="broken", messages=MSG),           # the provider refused
               post(c, key, model="nope", messages=MSG),             # before any upstream
               post(c, "sk-wrong", model="chat", messages=MSG),
               c.get("/v1/models", headers={"Authorization": f"Bearer {key}"}),
               c.get("/v1/no-such-route")]
    assert [r.status_code for r in answers] == [200, 200, 200, 400, 404, 401, 200, 404]
    for r in answers:
        overhead(r)


def test_upstream_wait_is_not_overhead(gw):
    key = make_key(gw)
    c = gw.test_client()
    r = post(c, key, model="slow", messages=MSG)
    assert r.status_code == 200
    s = post(c, key, model="trickle", messages=MSG, stream=True)
    assert b"[DONE]" in s.get_data()
    fast, stream = usage_records(gw)
    # the mock waited 300 ms before answering, and 100 ms between chunks
    assert fast.latency_ms - fast.overhead_ms >= 300
    assert overhead(r) < fast.latency_ms        # the header leaves the wait out too
    assert stream.latency_ms - stream.overhead_ms >= 200
    assert 0 <= stream.overhead_ms <= stream.latency_ms


def test_failures_record_their_overhead(gw):
    key = make_key(gw)
    c = gw.test_client()
    post(c, key, model="nope", messages=MSG)
    [r] = usage_records(gw)
    assert r.status == 404 and r.overhead_ms == pytest.approx(r.latency_ms)
