"""A slow first byte is covered by SSE comments; failures and leaving clients still recorded once."""
from __future__ import annotations

import socket
import time

import orjson
import pytest
import requests

from tests.helpers import add_provider, make_key, usage_records


@pytest.fixture
def gw(sqlite_app, mock):
    from tests.helpers import LiveServer
    sqlite_app.config["STREAM_KEEPALIVE_SECONDS"] = 0.2
    add_provider(sqlite_app, "up", "openai", mock + "/v1",
                 ["slow=echo+latency=900", "slowfail=echo+latency=900+fail=500", "fast=echo",
                  "slowish=echo+latency=700"])
    server = LiveServer(sqlite_app)
    server.key = make_key(sqlite_app)
    yield server
    server.stop()


def stream(gw, model):
    return requests.post(gw.url + "/v1/chat/completions", stream=True, timeout=10,
                         headers={"Authorization": f"Bearer {gw.key}"},
                         json={"model": model, "stream": True,
                               "messages": [{"role": "user", "content": "one two three"}]})


def test_slow_first_byte_gets_keepalive_comments(gw):
    r = stream(gw, "slow")
    lines = [line for line in r.iter_lines() if line]
    assert r.status_code == 200 and lines[0] == b": keepalive"
    text = "".join(orjson.loads(line[6:])["choices"][0]["delta"].get("content") or ""
                   for line in lines if line.startswith(b"data: {"))
    assert text == "Echo: one two three" and lines[-1] == b"data: [DONE]"
    [rec] = usage_records(gw.app)
    assert rec.status == 200 and rec.ttft_ms >= 800


def test_first_comment_comes_after_one_keepalive_period_not_two(gw):
    # The first byte takes 0.7 s: a comment due at 0.4 s comes first; one due at 0.8 s
    # (the wait counted twice) would never come.
    gw.app.config["STREAM_KEEPALIVE_SECONDS"] = 0.4
    lines = [line for line in stream(gw, "slowish").iter_lines() if line]
    assert lines[0] == b": keepalive" and lines[-1] == b"data: [DONE]"


def test_fast_streams_send_no_comment(gw):
    r = stream(gw, "fast")
    assert not any(line.startswith(b":") for line in r.iter_lines())


def test_failure_after_keepalive_is_an_error_event_recorded_once(gw):
    r = stream(gw, "slowfail")
    lines = [line for line in r.iter_lines() if line]
    assert r.status_code == 200 and lines[0] == b": keepalive"
    err = orjson.loads(lines[-1][6:])["error"]
    assert err["type"] == "upstream_error"
    [rec] = usage_records(gw.app)
    assert rec.status == 502


def test_client_leaving_during_the_wait_is_recorded(gw):
    host, port = gw.url.removeprefix("http://").split(":")
    body = orjson.dumps({"model": "slow", "stream": True, "messages": [{"role": "user", "content": "a b"}]})
    sock = socket.create_connection((host, int(port)), timeout=10)
    sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 b"Authorization: Bearer " + gw.key.encode() + b"\r\nContent-Length: "
                 + str(len(body)).encode() + b"\r\n\r\n" + body)
    got = b""
    while b"keepalive" not in got:
        got += sock.recv(4096)
    sock.close()        # gone before the first token
    deadline = time.monotonic() + 10
    rows = []
    while not rows and time.monotonic() < deadline:
        time.sleep(0.2)
        rows = usage_records(gw.app)
    [rec] = rows
    assert rec.status == 499 and rec.error_type == "client_disconnected"
