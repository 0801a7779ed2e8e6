"""The /v1 body: 413 past the cap also without Content-Length (chunked), 415 for a body that is
not JSON, and what the official SDK sends keeps working."""
from __future__ import annotations

import io

import openai
import orjson
import pytest

from tests.helpers import add_provider, make_key, usage_records

CHAT = {"model": "demo-chat", "messages": [{"role": "user", "content": "hi"}]}


class ChunkedInput(io.RawIOBase):
    """A request body as a WSGI server hands over a chunked upload: no Content-Length, and
    each read returns at most one chunk."""

    def __init__(self, data: bytes, chunk: int = 100):
        self.data, self.chunk = data, chunk

    def readable(self) -> bool:
        return True

    def readinto(self, buf) -> int:
        n = min(len(buf), self.chunk, len(self.data))
        buf[:n], self.data = self.data[:n], self.data[n:]
        return n


@pytest.fixture
def key(sqlite_app):
    add_provider(sqlite_app, "demo", "mock", None, ["demo-chat"])
    return make_key(sqlite_app)


def chunked(app, key, body: bytes):
    return app.test_client().post("/v1/chat/completions", headers={
        "Authorization": f"Bearer {key}", "Content-Type": "application/json", "Transfer-Encoding": "chunked"},
        environ_overrides={"wsgi.input": ChunkedInput(body), "wsgi.input_terminated": True})


def test_an_over_limit_chunked_body_is_413_and_recorded(sqlite_app, key):
    sqlite_app.config["MAX_REQUEST_BYTES"] = 1000
    big = orjson.dumps(dict(CHAT, messages=[{"role": "user", "content": "x" * 5000}]))
    r = chunked(sqlite_app, key, big)
    assert r.status_code == 413 and r.json["error"]["code"] == "request_too_large"
    assert "1000 byte" in r.json["error"]["message"]
    assert [rec.status for rec in usage_records(sqlite_app)] == [413]


def test_a_chunked_body_within_the_limit_is_read_whole(sqlite_app, key):
    sqlite_app.config["MAX_REQUEST_BYTES"] = 1000
    body = orjson.dumps(dict(CHAT, messages=[{"role": "user", "content": "y " * 300}]))
    assert 600 < len(body) < 1000
    r = chunked(sqlite_app, key, body)
    assert r.status_code == 200, r.json


@pytest.mark.parametrize("ctype", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x",
                                   "application/xml", "text/json"])
def test_a_body_that_is_not_json_is_415(sqlite_app, key, ctype):
    r = sqlite_app.test_client().post("/v1/chat/completions", data=orjson.dumps(CHAT), headers={
        "Authorization": f"Bearer {key}", "Content-Type": ctype})
    assert r.status_code == 415
    assert r.json["error"] | {"message": None} == {"message": None, "type": "invalid_request_error",
                                                   "param": None, "code": "unsupported_media_type"}
    assert [rec.status for rec in usage_records(sqlite_app)] == [415]


@pytest.mark.parametrize("ctype", ["application/json", "application/json; charset=utf-8", "Application/JSON",
                                   "application/vnd.api+json", None])
def test_json_with_or_without_parameters_and_no_content_type_are_read(sqlite_app, key, ctype):
    headers = {"Authorization": f"Bearer {key}"} | ({"Content-Type": ctype} if ctype else {})
    r = sqlite_app.test_client().post("/v1/chat/completions", data=orjson.dumps(CHAT), headers=headers)
    assert r.status_code == 200, r.json


def test_the_openai_sdk_keeps_working_and_gets_param_errors(app, live):
    add_provider(app, "demo", "mock", None, ["demo-chat"], embedding_models=["demo-embed"])
    client = openai.OpenAI(base_url=live.url + "/v1", api_key=make_key(app), max_retries=0)
    r = client.chat.completions.create(model="demo-chat", messages=CHAT["messages"], max_tokens=5, temperature=0.2,
                                       top_p=0.9, n=1, seed=7, stop=["\n\n"], presence_penalty=0.1, user="u")
    assert r.choices[0].message.content.startswith("Echo")
    assert len(client.embeddings.create(model="demo-embed", input=["a", "b"], dimensions=8).data) == 2
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="demo-chat", messages=CHAT["messages"], temperature=5)
    assert e.value.param == "temperature" and e.value.code == "decimal_above_max_value"
    with pytest.raises(openai.BadRequestError) as e:       # the SDK merges extra_body into the JSON body
        client.chat.completions.create(model="demo-chat", messages=CHAT["messages"],
                                       extra_body={"api_base": "http://127.0.0.1:9"})
    assert e.value.param == "api_base" and e.value.code == "unsupported_parameter"
