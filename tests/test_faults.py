"""Upstream faults and client disconnects: the right status, a clean error, a record kept."""
from __future__ import annotations

import socket

import openai
import orjson
import pytest
import requests

from tests.helpers import add_provider, make_key, usage_records

SECRET = "sk-upstream-secret-123456"


@pytest.fixture
def gw(app, live, mock):
    """A gateway whose models map to mock-upstream fault directives."""
    models = ["ok=echo", "fail500=echo+fail=500", "fail429=echo+fail=429+retry_after=7",
              "fail400=echo+fail=400", "fail401=echo+fail=401", "hang=echo+hang", "reset=echo+reset",
              "cut=echo+cut=2", "malformed=echo+malformed", "slow=echo+chunk_delay=300"]
    add_provider(app, "up", "openai", mock + "/v1", models, api_key=SECRET)
    live.key = make_key(app)
    return live


def call(gw, model, stream=False, **kw):
    return requests.post(gw.url + "/v1/chat/completions", timeout=10, stream=stream,
                         headers={"Authorization": f"Bearer {gw.key}"},
                         json={"model": model, "stream": stream,
                               "messages": [{"role": "user", "content": "one two three four five"}]}, **kw)


@pytest.mark.parametrize("model,status,type_", [
    ("fail500", 502, "upstream_error"),
    ("fail429", 429, "rate_limit_exceeded"),
    ("fail400", 400, "invalid_request_error"),
    ("fail401", 502, "upstream_error"),
    ("hang", 504, "timeout"),
    ("reset", 502, "upstream_error"),
])
def test_upstream_failure_status(app, gw, model, status, type_, hostile):
    r = call(gw, model)
    hostile.case(f"upstream {model}", status, r.status_code)
    hostile.kept(1, len(usage_records(app)))
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["type"] == type_ and set(err) == {"message", "type", "param", "code"}
    assert SECRET not in r.text and "127.0.0.1" not in r.text
    [rec] = usage_records(app)
    assert rec.status == status and rec.error_type == type_ and rec.provider == "up"
    assert rec.attempts and rec.attempts[0]["provider"] == "up"


def test_upstream_message_is_sanitized(app, gw, mock):
    # The provider echoes our key and an internal URL in its error: neither reaches the client.
    requests.post(mock + "/_mock/faults", timeout=5, json={"faults": ["fail=400"]})
    add_provider(app, "leaky", "openai", mock + "/v1", ["leaky=echo"], api_key=SECRET)
    from gateway.services.routing.upstream import sanitize
    msg = sanitize(f"bad key {SECRET} at http://10.0.0.5:8000/v1?key=abc", SECRET)
    assert SECRET not in msg and "10.0.0.5" not in msg and "key=abc" not in msg
    r = call(gw, "leaky")
    assert r.status_code == 400 and SECRET not in r.text


def test_stream_cut_by_upstream_ends_with_error_event(app, gw, hostile):
    r = call(gw, "cut", stream=True)
    assert r.status_code == 200
    events = [line[6:] for line in r.iter_lines() if line.startswith(b"data: ")]
    assert events[-1] != b"[DONE]"
    last = orjson.loads(events[-1])
    assert last["error"]["code"] == "upstream_error" or last["error"]["type"] in ("upstream_error",)
    content = [orjson.loads(e) for e in events[:-1]]
    assert all(c["choices"][0].get("finish_reason") is None for c in content if c.get("choices"))
    rows = usage_records(app)
    hostile.kept(1, len(rows))
    [rec] = rows
    hostile.case("stream cut by the upstream (recorded status)", 502, rec.status)
    assert rec.status == 502 and rec.stream and rec.estimated and rec.completion_tokens > 0


def test_stream_cut_seen_by_the_sdk(app, gw):
    client = openai.OpenAI(base_url=gw.url + "/v1", api_key=gw.key, max_retries=0)
    stream = client.chat.completions.create(model="cut", stream=True,
                                            messages=[{"role": "user", "content": "a b c d e"}])
    with pytest.raises(openai.APIError):
        for _ in stream:
            pass


def test_malformed_stream_ends_with_error_event(app, gw):
    r = call(gw, "malformed", stream=True)
    events = [line[6:] for line in r.iter_lines() if line.startswith(b"data: ")]
    assert b"error" in events[-1] and events[-1] != b"[DONE]"
    [rec] = usage_records(app)
    assert rec.status == 502 and rec.error_type == "upstream_error"


def test_stream_failure_before_first_byte_is_a_plain_http_error(app, gw):
    r = call(gw, "fail500", stream=True)
    assert r.status_code == 502 and r.json()["error"]["type"] == "upstream_error"


def test_client_disconnect_mid_stream_still_records(app, gw, hostile):
    host, port = gw.url.removeprefix("http://").split(":")
    body = orjson.dumps({"model": "slow", "stream": True,
                         "messages": [{"role": "user", "content": "one two three four five six"}]})
    sock = socket.create_connection((host, int(port)), timeout=10)
    sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 b"Authorization: Bearer " + gw.key.encode() + b"\r\n"
                 b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
    got = b""
    while b"Echo" not in got:       # wait for the first content chunk, then leave
        got += sock.recv(65536)
    sock.close()
    import time
    deadline = time.monotonic() + 10
    rows = []
    while time.monotonic() < deadline and not rows:
        rows = usage_records(app)
        time.sleep(0.1)
    hostile.kept(1, len(rows))
    [rec] = rows
    hostile.case("client gone mid-stream (recorded status)", 499, rec.status)
    assert rec.status == 499 and rec.error_type == "client_disconnected" and rec.stream
    assert rec.ttft_ms is not None and rec.completion_tokens >= 1


def test_record_has_tags_from_metadata_and_header(app, gw):
    r = requests.post(gw.url + "/v1/chat/completions", timeout=10, headers={
        "Authorization": f"Bearer {gw.key}", "x-gateway-tags": "feature=chat, tenant=acme"},
        json={"model": "ok", "metadata": {"team": "search"},
              "messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 200
    [rec] = usage_records(app)
    assert rec.tags == {"team": "search", "feature": "chat", "tenant": "acme"}
    assert rec.cost_usd >= 0 and rec.latency_ms > 0
