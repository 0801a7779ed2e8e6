"""What real clients run into: unknown paths and methods, CORS, gzip both ways, Retry-After,
the model name translated answers report, and base64 embeddings from every adapter."""
from __future__ import annotations

import base64
import gzip
import struct
import zlib
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime

import orjson
import pytest
import requests

from gateway import create_app
from gateway.extensions import db
from gateway.services.admin import catalog_admin
from gateway.services.routing import upstream
from tests.helpers import TEST_CONFIG, LiveServer, add_provider, make_key, usage_records

ORIGIN = "https://app.example"
CHAT = {"model": "demo-chat", "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture
def gw(sqlite_app, mock):
    """The app with a mock provider of each kind, a key, and CORS on for ORIGIN."""
    app = sqlite_app
    app.config["CORS_ORIGINS"] = f"{ORIGIN}, https://other.example"
    add_provider(app, "demo", "mock", None, ["demo-chat"], embedding_models=["demo-embed"])
    add_provider(app, "oa", "openai", mock + "/v1",
                 ["pub=echo", "echo", "limited=echo+fail=429+retry_after=30+retry_after_ms=29500",
                  "limited-s=echo+fail=429+retry_after=40"],
                 embedding_models=["oa-embed=text-embedding-3-small"])
    add_provider(app, "gem", "gemini", mock + "/v1beta", ["gem-chat=gemini-2.0-flash"],
                 embedding_models=["gem-embed=text-embedding-004"])
    add_provider(app, "claude", "anthropic", mock + "/v1", ["claude-chat=claude-x"])
    with app.app_context():
        catalog_admin.set_alias("fast", "pub")
    app.key = make_key(app)
    return app


def auth(app, **more) -> dict:
    return {"Authorization": f"Bearer {app.key}", **more}


# Unknown paths and wrong methods

def test_unknown_path_is_openai_404_listing_served_endpoints(gw):
    r = gw.test_client().post("/v1/foo", json={}, headers=auth(gw))
    assert r.status_code == 404
    err = r.json["error"]
    assert (err["type"], err["code"], err["param"]) == ("invalid_request_error", "unknown_url", None)
    assert err["message"].startswith("Invalid URL (POST /v1/foo)")
    assert "POST /v1/chat/completions" in err["message"] and "GET /v1/models" in err["message"]


def test_endpoint_list_comes_from_the_url_map(tmp_path):
    app = create_app(overrides={**TEST_CONFIG, "SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path}/t.db"})
    app.add_url_rule("/v1/brand-new", "brand_new", lambda: "", methods=["PUT"])
    with app.app_context():
        db.create_all()
    message = app.test_client().get("/v1/nothing-here").json["error"]["message"]
    assert "PUT /v1/brand-new" in message and message.startswith("Invalid URL (GET /v1/nothing-here)")


def test_wrong_method_is_openai_405(gw):
    r = gw.test_client().get("/v1/chat/completions", headers=auth(gw))
    assert r.status_code == 405 and "POST" in r.headers["Allow"]
    err = r.json["error"]
    assert (err["type"], err["code"]) == ("invalid_request_error", "method_not_allowed")
    assert "GET" in err["message"] and "POST" in err["message"]


def test_console_404_stays_html(gw):
    r = gw.test_client().get("/no-such-page")
    assert r.status_code == 404 and not r.is_json


# CORS

def preflight(client, path="/v1/chat/completions", origin=ORIGIN):
    return client.options(path, headers={"Origin": origin, "Access-Control-Request-Method": "POST",
                                         "Access-Control-Request-Headers":
                                         "authorization, content-type, x-stainless-os, openai-beta"})


def test_cors_is_off_by_default(sqlite_app):
    add_provider(sqlite_app, "demo", "mock", None, ["demo-chat"])
    key = make_key(sqlite_app)
    client = sqlite_app.test_client()
    assert "Access-Control-Allow-Origin" not in preflight(client).headers
    r = client.post("/v1/chat/completions", json=CHAT, headers={"Authorization": f"Bearer {key}",
                                                                 "Origin": ORIGIN})
    assert r.status_code == 200 and "Access-Control-Allow-Origin" not in r.headers


def test_preflight_is_204_without_auth(gw):
    for path in ("/v1/chat/completions", "/v1/some/future/endpoint"):
        r = preflight(gw.test_client(), path)
        assert r.status_code == 204, path
        h = r.headers
        assert h["Access-Control-Allow-Origin"] == ORIGIN
        assert "POST" in h["Access-Control-Allow-Methods"]
        allowed = {x.strip() for x in h["Access-Control-Allow-Headers"].split(",")}
        assert {"authorization", "content-type", "x-api-key", "anthropic-version", "idempotency-key",
                "x-stainless-os", "openai-beta"} <= allowed
        assert int(h["Access-Control-Max-Age"]) > 0 and "Origin" in h["Vary"]
    assert usage_records(gw) == []      # a preflight is no API request


def test_answers_errors_and_streams_carry_cors_headers(gw):
    client = gw.test_client()
    ok = client.post("/v1/chat/completions", json=CHAT, headers=auth(gw, Origin=ORIGIN))
    denied = client.post("/v1/chat/completions", json=CHAT, headers={"Origin": ORIGIN})
    stream = client.post("/v1/chat/completions", json=dict(CHAT, stream=True), headers=auth(gw, Origin=ORIGIN))
    assert (ok.status_code, denied.status_code, stream.status_code) == (200, 401, 200)
    for r in (ok, denied, stream):
        assert r.headers["Access-Control-Allow-Origin"] == ORIGIN and "Origin" in r.headers["Vary"]
        exposed = {x.strip() for x in r.headers["Access-Control-Expose-Headers"].split(",")}
        assert {"x-request-id", "retry-after", "x-ratelimit-remaining-requests"} <= exposed
    assert "x-gateway-deployment" in ok.headers["Access-Control-Expose-Headers"]


def test_other_origins_and_console_get_no_cors(gw):
    client = gw.test_client()
    assert "Access-Control-Allow-Origin" not in preflight(client, origin="https://evil.example").headers
    r = client.post("/v1/chat/completions", json=CHAT, headers=auth(gw, Origin="https://evil.example"))
    assert r.status_code == 200 and "Access-Control-Allow-Origin" not in r.headers
    assert "Origin" in r.headers["Vary"]     # the answer depends on Origin: caches must know
    page = client.get("/login", headers={"Origin": ORIGIN})
    assert "Access-Control-Allow-Origin" not in page.headers
    assert "Access-Control-Allow-Origin" not in preflight(client, "/login").headers


def test_star_allows_any_origin(gw):
    gw.config["CORS_ORIGINS"] = "*"
    r = preflight(gw.test_client(), origin="https://anything.example")
    assert r.status_code == 204 and r.headers["Access-Control-Allow-Origin"] == "https://anything.example"


# gzip and deflate

def chat_bytes(**kw) -> bytes:
    return orjson.dumps(dict(CHAT, **kw))


@pytest.mark.parametrize("encoding,pack", [
    ("gzip", gzip.compress),
    ("deflate", zlib.compress),
    ("deflate", lambda b: (lambda c: c.compress(b) + c.flush())(zlib.compressobj(wbits=-15))),  # raw
])
def test_compressed_request_bodies_are_read(gw, encoding, pack):
    r = gw.test_client().post("/v1/chat/completions", data=pack(chat_bytes()), content_type="application/json",
                              headers=auth(gw, **{"Content-Encoding": encoding}))
    assert r.status_code == 200, r.data
    assert r.json["choices"][0]["message"]["content"]


def test_zip_bomb_is_413_and_recorded(gw, hostile):
    gw.config["MAX_REQUEST_BYTES"] = 64 * 1024
    bomb = gzip.compress(chat_bytes(padding=" " * (20 * 1024 * 1024)))
    assert len(bomb) < 64 * 1024        # the compressed body is well within the cap
    r = gw.test_client().post("/v1/chat/completions", data=bomb, content_type="application/json",
                              headers=auth(gw, **{"Content-Encoding": "gzip"}))
    assert hostile.case("gzip bomb", 413, r.status_code)
    assert r.json["error"]["code"] == "request_too_large" and "decompressed" in r.json["error"]["message"]
    [rec] = usage_records(gw)
    hostile.kept(1, 1)
    assert rec.status == 413


@pytest.mark.parametrize("encoding,body,status", [
    ("gzip", b"\x1f\x8b\x08\x00garbage", 400),
    ("gzip", gzip.compress(chat_bytes(), mtime=0)[:-12], 400),     # cut short
    ("deflate", b"not deflate at all", 400),
    ("br", b"\x0b\x02\x80{}\x03", 415),
], ids=["gzip-garbage", "gzip-cut", "deflate-garbage", "brotli"])
def test_corrupt_or_unknown_encodings_are_refused(gw, hostile, encoding, body, status):
    r = gw.test_client().post("/v1/chat/completions", data=body, content_type="application/json",
                              headers=auth(gw, **{"Content-Encoding": encoding}))
    assert hostile.case(f"Content-Encoding {encoding}", status, r.status_code)
    assert set(r.json["error"]) == {"message", "type", "param", "code"}


def embed(gw, model="demo-embed", headers=None, **body):
    return gw.test_client().post("/v1/embeddings", json={"model": model, "input": ["a b", "c"], **body},
                                 headers=auth(gw, **(headers or {})))


def test_large_json_answers_are_gzipped_when_accepted(gw):
    r = embed(gw, headers={"Accept-Encoding": "gzip, deflate, br"}, dimensions=64)
    assert r.status_code == 200 and r.headers["Content-Encoding"] == "gzip"
    assert "Accept-Encoding" in r.headers["Vary"]
    out = orjson.loads(gzip.decompress(r.data))
    assert len(out["data"]) == 2 and int(r.headers["Content-Length"]) == len(r.data)
    plain = embed(gw, dimensions=64)
    assert "Content-Encoding" not in plain.headers and orjson.loads(plain.data)["data"] == out["data"]
    refused = embed(gw, headers={"Accept-Encoding": "gzip;q=0"}, dimensions=64)
    assert "Content-Encoding" not in refused.headers


def test_small_answers_and_streams_are_not_gzipped(gw):
    client = gw.test_client()
    small = client.post("/v1/chat/completions", json=CHAT, headers=auth(gw, **{"Accept-Encoding": "gzip"}))
    assert small.status_code == 200 and "Content-Encoding" not in small.headers
    stream = client.post("/v1/chat/completions", json=dict(CHAT, stream=True),
                         headers=auth(gw, **{"Accept-Encoding": "gzip"}))
    assert "Content-Encoding" not in stream.headers and stream.data.endswith(b"data: [DONE]\n\n")


# Retry-After

def test_upstream_retry_after_reaches_the_client(gw):
    r = gw.test_client().post("/v1/chat/completions", json=dict(CHAT, model="limited"), headers=auth(gw))
    assert r.status_code == 429 and r.json["error"]["type"] == "rate_limit_exceeded"
    assert (r.headers["retry-after"], r.headers["retry-after-ms"]) == ("30", "29500")
    r = gw.test_client().post("/v1/chat/completions", json=dict(CHAT, model="limited-s"), headers=auth(gw))
    assert r.status_code == 429 and r.headers["retry-after"] == "40"
    assert r.headers["retry-after-ms"] == "40000"


def test_retry_after_as_an_http_date_counts_too():
    soon = format_datetime(datetime.now(timezone.utc) + timedelta(seconds=30), usegmt=True)
    assert 0 < upstream._retry_after(soon) <= 30
    assert upstream._retry_after("Mon, 01 Jan 2001 00:00:00 GMT") == 0
    assert upstream._retry_after("soon") is None and upstream._retry_after("nan") is None


def test_gateway_rate_limit_sends_both_retry_headers(gw):
    key = make_key(gw, "limited", rpm=1)
    client = gw.test_client()
    first = client.post("/v1/chat/completions", json=CHAT, headers={"Authorization": f"Bearer {key}"})
    second = client.post("/v1/chat/completions", json=CHAT, headers={"Authorization": f"Bearer {key}"})
    assert (first.status_code, second.status_code) == (200, 429)
    seconds = int(second.headers["retry-after"])
    assert seconds >= 1 and second.headers["retry-after-ms"] == str(seconds * 1000)


# The model an answer names

def chat(gw, model, **kw):
    return gw.test_client().post("/v1/chat/completions", json=dict(CHAT, model=model, **kw), headers=auth(gw))


def sse_chunks(r) -> list[dict]:
    return [orjson.loads(line[6:]) for line in r.data.split(b"\n")
            if line.startswith(b"data: {")]


@pytest.mark.parametrize("model", ["gem-chat", "claude-chat"])
def test_translated_answers_name_the_requested_model(gw, model):
    r = chat(gw, model)
    assert r.status_code == 200, r.data
    out = r.json
    assert out["model"] == model
    choice = out["choices"][0]
    assert choice["logprobs"] is None and choice["message"]["refusal"] is None
    chunks = sse_chunks(chat(gw, model, stream=True, stream_options={"include_usage": True}))
    assert len(chunks) > 2 and {c["model"] for c in chunks} == {model}
    first = chunks[0]["choices"][0]
    assert first["delta"]["refusal"] is None and first["logprobs"] is None


@pytest.mark.parametrize("asked", ["pub", "fast"])     # public=upstream mapping, and an alias of it
def test_pass_through_answers_renamed_when_names_differ(gw, asked):
    assert chat(gw, asked).json["model"] == asked
    chunks = sse_chunks(chat(gw, asked, stream=True))
    assert chunks and {c["model"] for c in chunks} == {asked}
    assert embed(gw, "oa-embed").json["model"] == "oa-embed"


def test_pass_through_keeps_the_upstream_name_when_the_same(gw):
    assert chat(gw, "echo").json["model"] == "echo"


# base64 embeddings from every adapter that serves them

@pytest.mark.parametrize("model", ["demo-embed", "oa-embed", "gem-embed"])
def test_base64_embeddings_decode_to_the_float_vectors(gw, model):
    floats = embed(gw, model).json["data"]
    encoded = embed(gw, model, encoding_format="base64").json["data"]
    assert [d["index"] for d in encoded] == [0, 1]
    for f, e in zip(floats, encoded):
        assert isinstance(e["embedding"], str)
        raw = base64.b64decode(e["embedding"])
        decoded = struct.unpack(f"<{len(raw) // 4}f", raw)
        assert decoded == pytest.approx(f["embedding"], rel=1e-6)


def test_sdk_style_live_request_with_gzip(gw):
    """Over a real socket: requests sends Accept-Encoding: gzip and decodes the answer itself."""
    server = LiveServer(gw)
    try:
        r = requests.post(server.url + "/v1/embeddings", json={"model": "gem-embed", "input": ["x"] * 4,
                                                                    "dimensions": 64},
                          headers=auth(gw), timeout=10)
        assert r.status_code == 200 and r.headers["Content-Encoding"] == "gzip"
        assert len(r.json()["data"]) == 4
    finally:
        server.stop()
