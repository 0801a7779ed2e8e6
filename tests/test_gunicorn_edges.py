"""What only a real gunicorn gevent worker shows: a client leaving a non-streaming request stops
its upstream call and is recorded as 499, and a chunked upload past the cap is 413."""
from __future__ import annotations

import http.client
import socket
import time

import orjson
import pytest
import requests
from sqlalchemy import select

from gateway.extensions import db
from gateway.models import UsageRecord
from tests.helpers import Gunicorn, add_provider, make_key


@pytest.fixture
def served(sqlite_app, mock, tmp_path):
    """The gateway under gunicorn (one gevent worker) on the test app's database, a key, and the
    mock upstream behind a model that answers after 5 s."""
    add_provider(sqlite_app, "up", "openai", mock + "/v1", ["slow=echo+latency=5000", "fast=echo"])
    key = make_key(sqlite_app)
    server = Gunicorn(sqlite_app, sqlite_app.config["SQLALCHEMY_DATABASE_URI"], 1, tmp_path,
                      GATEWAY_MAX_REQUEST_BYTES="4000")
    yield server, key
    server.stop()


def _open(server: Gunicorn, key: str, body: bytes, extra: str = "") -> socket.socket:
    s = socket.create_connection(("127.0.0.1", server.port), timeout=30)
    s.sendall((f"POST /v1/chat/completions HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {key}\r\n"
               f"Content-Type: application/json\r\n{extra}\r\n").encode() + body)
    return s


def _records(app, n: int = 1) -> list[UsageRecord]:
    deadline = time.monotonic() + 30
    with app.app_context():
        while True:
            rows = db.session.scalars(select(UsageRecord).order_by(UsageRecord.id)).all()
            if len(rows) >= n or time.monotonic() > deadline:
                db.session.expunge_all()
                return rows
            db.session.remove()
            time.sleep(0.2)


def test_a_client_leaving_a_non_stream_request_stops_it_and_is_recorded_499(sqlite_app, served, mock):
    server, key = served
    body = orjson.dumps({"model": "slow", "messages": [{"role": "user", "content": "hi"}]})
    client = _open(server, key, body, f"Content-Length: {len(body)}\r\n")
    deadline = time.monotonic() + 30
    while not requests.get(mock + "/_mock/requests", timeout=5).json()["requests"]:
        assert time.monotonic() < deadline, "the request never reached the upstream"
        time.sleep(0.05)
    client.close()          # the upstream is still thinking
    [rec] = _records(sqlite_app)
    assert (rec.status, rec.error_type, rec.provider) == (499, "client_disconnected", "up")
    assert [a["status"] for a in rec.attempts] == [499]
    # The worker carries on serving.
    r = requests.post(server.url + "/v1/chat/completions", headers={"Authorization": f"Bearer {key}"},
                      json={"model": "fast", "messages": [{"role": "user", "content": "hi"}]}, timeout=30)
    assert r.status_code == 200
    assert [x.status for x in _records(sqlite_app, 2)] == [499, 200]


def test_an_over_limit_chunked_upload_is_413(sqlite_app, served):
    server, key = served
    big = orjson.dumps({"model": "fast", "messages": [{"role": "user", "content": "x" * 10000}]})
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(big[i:i + 500]), big[i:i + 500]) for i in range(0, len(big), 500))
    client = _open(server, key, chunks + b"0\r\n\r\n", "Transfer-Encoding: chunked\r\n")
    resp = http.client.HTTPResponse(client)
    resp.begin()
    error = orjson.loads(resp.read())["error"]
    client.close()
    assert resp.status == 413 and error["code"] == "request_too_large" and "4000 byte" in error["message"]
    assert [x.status for x in _records(sqlite_app)] == [413]
