"""Every /v1 error comes back in OpenAI's shape with the right status, and is recorded."""
from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select, update

from gateway.extensions import db
from gateway.models import ApiKey, utcnow
from gateway.services.accounting import keys
from tests.helpers import add_provider, make_key, usage_records

CHAT = {"model": "demo-chat", "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture
def key(app):
    add_provider(app, "demo", "mock", None, ["demo-chat", "other-chat"], embedding_models=["demo-embed"])
    return make_key(app)


def post(client, key, body=None, **kw):
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    headers.update(kw.pop("headers", {}))
    return client.post("/v1/chat/completions", json=body if body is not None else CHAT,
                       headers=headers, **kw)


def assert_error(r, status, type_, code=None, param=None, hostile=None):
    if hostile is not None:
        hostile.case(code or param or type_, status, r.status_code)
    assert r.status_code == status, r.data
    err = r.json["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert err["type"] == type_ and err["message"]
    if code:
        assert err["code"] == code
    if param:
        assert err["param"] == param
    assert r.headers["x-request-id"]


def test_missing_key_is_401(client, key, hostile):
    assert_error(post(client, None), 401, "invalid_request_error", "invalid_api_key", hostile=hostile)


def test_wrong_key_is_401(client, key, hostile):
    assert_error(post(client, "sk-gw-not-a-real-key"), 401, "invalid_request_error", "invalid_api_key",
                 hostile=hostile)
    assert_error(post(client, "nonsense"), 401, "invalid_request_error", "invalid_api_key", hostile=hostile)


def test_x_api_key_header_authenticates(client, key):
    r = client.post("/v1/chat/completions", json=CHAT, headers={"x-api-key": key})
    assert r.status_code == 200, r.data


def test_revoked_key_is_401(app, client, key):
    with app.app_context():
        row = db.session.scalar(select(ApiKey))
        keys.revoke_key(row)
    assert_error(post(client, key), 401, "invalid_request_error", "key_revoked")


def test_expired_key_is_401(app, client):
    add_provider(app, "demo", "mock", None, ["demo-chat"])
    past = make_key(app, expires_at=utcnow() + timedelta(seconds=30))
    with app.app_context():     # keys.check refuses a past expiry: move it there directly
        db.session.execute(update(ApiKey).where(ApiKey.key_hash == keys.hash_secret(past))
                           .values(expires_at=utcnow() - timedelta(seconds=1)))
        db.session.commit()
    future = make_key(app, expires_at=utcnow() + timedelta(days=1))
    assert_error(post(client, past), 401, "invalid_request_error", "key_expired")
    assert post(client, future).status_code == 200


def test_key_is_stored_only_as_hash(app, key):
    with app.app_context():
        row = db.session.scalar(select(ApiKey))
        assert row.key_hash == keys.hash_secret(key) and key not in (row.key_hash, row.prefix)
        assert key.startswith(row.prefix) and len(row.prefix) < len(key) // 3


def test_malformed_json_is_400(app, client, key, hostile):
    r = client.post("/v1/chat/completions", data=b"{not json", headers={
        "Authorization": f"Bearer {key}", "Content-Type": "application/json"})
    assert_error(r, 400, "invalid_request_error", hostile=hostile)
    hostile.kept(1, len(usage_records(app)))


@pytest.mark.parametrize("body,param", [
    ({"messages": [{"role": "user", "content": "x"}]}, "model"),
    ({"model": "demo-chat"}, "messages"),
    ({"model": "demo-chat", "messages": []}, "messages"),
    ({"model": "demo-chat", "messages": ["x"]}, "messages[0]"),
    ({"model": "demo-chat", "messages": [{"role": "user", "content": "x"}], "stream": "yes"}, "stream"),
    ({"model": "demo-chat", "messages": [{"role": "user", "content": "x"}], "n": 0}, "n"),
])
def test_missing_or_bad_fields_are_400(app, client, key, body, param, hostile):
    assert_error(post(client, key, body), 400, "invalid_request_error", param=param, hostile=hostile)
    hostile.kept(1, len(usage_records(app)))


def test_json_array_body_is_400(client, key, hostile):
    assert_error(post(client, key, [1, 2]), 400, "invalid_request_error", hostile=hostile)


def test_unknown_model_is_404(client, key, hostile):
    assert_error(post(client, key, dict(CHAT, model="nope")), 404, "invalid_request_error", "model_not_found",
                 hostile=hostile)


def test_model_not_allowed_is_403(app, client, key, hostile):
    limited = make_key(app, models=["other-chat"])
    assert_error(post(client, limited), 403, "permission_error", "model_not_allowed", hostile=hostile)
    assert post(client, limited, dict(CHAT, model="other-chat")).status_code == 200


def test_chat_model_on_embeddings_is_400(client, key):
    r = client.post("/v1/embeddings", json={"model": "demo-chat", "input": "x"},
                    headers={"Authorization": f"Bearer {key}"})
    assert_error(r, 400, "invalid_request_error", param="model")


def test_body_over_limit_is_413(app, client, key, hostile):
    app.config["MAX_REQUEST_BYTES"] = 1000
    big = dict(CHAT, messages=[{"role": "user", "content": "x" * 2000}])
    assert_error(post(client, key, big), 413, "invalid_request_error", hostile=hostile)


def test_unknown_route_and_method_are_json(client, key):
    r = client.get("/v1/nothing-here")
    assert_error(r, 404, "invalid_request_error")
    r = client.get("/v1/chat/completions")
    assert_error(r, 405, "invalid_request_error")


def test_every_failure_leaves_a_record(app, client, key, hostile):
    post(client, None)
    post(client, key, dict(CHAT, model="nope"))
    post(client, key)
    rows = usage_records(app)
    hostile.kept(3, len(rows))
    assert [r.status for r in rows] == [401, 404, 200]
    assert rows[1].error_type == "invalid_request_error" and rows[1].key_prefix == key[:14]
    assert len({r.request_id for r in rows}) == 3


def test_request_id_is_echoed_when_given(client, key):
    r = post(client, key, headers={"x-request-id": "my-trace-123"})
    assert r.headers["x-request-id"] == "my-trace-123"
    r = post(client, key, headers={"x-request-id": "bad id with spaces"})
    assert r.headers["x-request-id"].startswith("req_")
