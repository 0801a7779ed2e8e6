"""Prompts and completions kept with request logs: only while the admin turned it on, cut to a
cap, for plain and streamed answers, encrypted at rest, and shown only to whoever may open the
log entry."""
from __future__ import annotations

import orjson
import pytest
from sqlalchemy import select

from gateway.extensions import db
from gateway.models import ApiKey, UsageRecord
from gateway.services.accounting import keys, prompt_log
from gateway.services.admin import settings
from gateway.services.accounting.usage import recorder
from tests.helpers import add_provider, make_key
from tests.console_client import Console, make_user

TOOLS = [{"type": "function", "function": {"name": "search", "parameters": {
    "type": "object", "properties": {"query": {"type": "string"}}}}}]


def chat(app, secret, text="one two three", **extra):
    body = {"model": "chat", "messages": [{"role": "system", "content": "Be brief."},
                                          {"role": "user", "content": text}], **extra}
    r = app.test_client().post("/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {secret}"})
    r.get_data()        # a stream records when it ends
    return r


def raw_stored(app) -> list[tuple]:
    """(request_body, response_text) of every record as the database holds them, oldest first."""
    with app.app_context():
        assert recorder(app).drain()
        return [tuple(r) for r in db.session.execute(select(UsageRecord.request_body, UsageRecord.response_text)
                                                     .order_by(UsageRecord.id))]


def stored(app) -> list[tuple]:
    """raw_stored(), decrypted."""
    fernet = app.extensions["fernet"]
    return [tuple(prompt_log.unseal(fernet, v) for v in row) for row in raw_stored(app)]


def enable(app, on=True):
    with app.app_context():
        settings.put("log_prompts", on)


@pytest.fixture
def demo(app):
    add_provider(app, "demo", "mock", None, ["chat=echo-model"])
    return app


def test_off_by_default_nothing_is_stored(demo):
    secret = make_key(demo)
    assert chat(demo, secret).status_code == 200
    assert chat(demo, secret, stream=True).status_code == 200
    assert stored(demo) == [(None, None), (None, None)]


def test_on_stores_prompt_and_answer_plain_and_streamed(demo):
    enable(demo)
    secret = make_key(demo)
    assert chat(demo, secret).status_code == 200
    assert chat(demo, secret, text="four five", stream=True).status_code == 200
    (req1, out1), (req2, out2) = stored(demo)
    assert orjson.loads(req1) == [{"role": "system", "content": "Be brief."},
                                  {"role": "user", "content": "one two three"}]
    assert out1 == "Echo: one two three"
    assert orjson.loads(req2)[1]["content"] == "four five" and out2 == "Echo: four five"
    assert secret not in req1 + out1 + req2 + out2


def test_tool_calls_are_stored_plain_and_streamed(sqlite_app):
    add_provider(sqlite_app, "demo", "mock", None, ["chat=echo-model"])
    enable(sqlite_app)
    secret = make_key(sqlite_app)
    chat(sqlite_app, secret, text="weather", tools=TOOLS)
    chat(sqlite_app, secret, text="weather", tools=TOOLS, stream=True)
    (_, plain), (_, streamed) = stored(sqlite_app)
    assert plain == streamed == '[tool call] search {"query":"weather"}' 


def test_turning_it_off_stops_storing(sqlite_app):
    add_provider(sqlite_app, "demo", "mock", None, ["chat=echo-model"])
    secret = make_key(sqlite_app)
    enable(sqlite_app)
    chat(sqlite_app, secret)
    enable(sqlite_app, False)
    chat(sqlite_app, secret)
    first, second = stored(sqlite_app)
    assert first[0] and first[1] and second == (None, None)


def test_failed_upstream_keeps_the_prompt(sqlite_app):
    add_provider(sqlite_app, "demo", "mock", None, ["chat=echo+fail=500"])
    enable(sqlite_app)
    assert chat(sqlite_app, make_key(sqlite_app)).status_code == 502
    [(req, out)] = stored(sqlite_app)
    assert "one two three" in req and out is None


def test_truncation(sqlite_app):
    sqlite_app.config["PROMPT_LOG_MAX_CHARS"] = 100
    add_provider(sqlite_app, "demo", "mock", None, ["chat=echo-model"])
    enable(sqlite_app)
    secret = make_key(sqlite_app)
    words = " ".join(f"w{i}" for i in range(200))
    chat(sqlite_app, secret, text=words)
    chat(sqlite_app, secret, text=words, stream=True)
    for req, out in stored(sqlite_app):
        assert req.endswith("…[truncated]") and len(req) <= 100 + len(" …[truncated]")
        assert out.startswith("Echo: w0 w1") and out.endswith("…[truncated]")
        assert len(out) <= 100 + len(" …[truncated]")


def test_setting_is_cached_and_a_change_applies_at_once_here(sqlite_app, monkeypatch):
    calls = []
    real = settings.get
    monkeypatch.setattr(settings, "get", lambda name: calls.append(name) or real(name))
    sqlite_app.config["SETTINGS_CACHE_SECONDS"] = 60
    assert settings.cached(sqlite_app, "log_prompts") is False
    assert settings.cached(sqlite_app, "log_prompts") is False
    assert calls == ["log_prompts"]     # one database read, then the cache
    enable(sqlite_app)
    assert settings.cached(sqlite_app, "log_prompts") is True


def _seed_drawer(app):
    """Two keys (a member's and the admin's), one stored request each; their record ids."""
    add_provider(app, "demo", "mock", None, ["chat=echo-model"])
    make_user(app, "admin@example.com", "admin")
    member = make_user(app, "member@example.com", "member")
    make_user(app, "viewer@example.com", "viewer")
    enable(app)
    mine = make_key(app, "mine", user_id=member)
    other = make_key(app, "other")
    chat(app, mine, text="<script>alert(1)</script>")
    chat(app, other, text="admin secret plans")
    with app.app_context():
        assert recorder(app).drain()
        ids = {}
        for k in db.session.scalars(select(ApiKey)):
            ids[k.name] = db.session.scalar(select(UsageRecord.id).where(UsageRecord.key_id == k.id))
        return ids


def test_drawer_shows_stored_text_escaped_per_role(sqlite_app):
    ids = _seed_drawer(sqlite_app)
    admin = Console(sqlite_app, "admin@example.com")
    page = admin.get(f"/logs/{ids['mine']}").text
    assert 'id="log-request-body"' in page and 'id="log-response-text"' in page
    assert "<script>alert(1)</script>" not in page
    assert "Echo: &lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert 'id="prompts-off"' not in page
    viewer = Console(sqlite_app, "viewer@example.com")
    assert "admin secret plans" in viewer.get(f"/logs/{ids['other']}").text     # viewers read every log
    member = Console(sqlite_app, "member@example.com")
    assert "alert(1)" in member.get(f"/logs/{ids['mine']}").text
    r = member.get(f"/logs/{ids['other']}")
    assert r.status_code == 404 and "admin secret plans" not in r.text
    assert "admin secret plans" not in member.get("/logs").text
    assert Console(sqlite_app).get(f"/logs/{ids['other']}").status_code in (302, 401)


def test_drawer_says_when_storage_is_off(sqlite_app):
    ids = _seed_drawer(sqlite_app)
    enable(sqlite_app, False)
    admin = Console(sqlite_app, "admin@example.com")
    page = admin.get(f"/logs/{ids['other']}").text
    assert 'id="prompts-off"' in page and "stored while it was on" in page
    assert "admin secret plans" in page
    secret = make_key(sqlite_app, "later")
    chat(sqlite_app, secret)
    with sqlite_app.app_context():
        assert recorder(sqlite_app).drain()
        rid = db.session.scalar(select(UsageRecord.id).order_by(UsageRecord.id.desc()))
    page = admin.get(f"/logs/{rid}").text
    assert 'id="prompts-off"' in page and 'id="log-request-body"' not in page


def test_the_key_cache_and_settings_share_one_listener(sqlite_app):
    """No REDIS_URL: no bus thread, nothing published."""
    with sqlite_app.app_context():
        settings.cached(sqlite_app, "log_prompts")
        keys.cache()
    b = sqlite_app.extensions.get("pubsub")
    assert b is None or b.listener.thread is None


def test_stored_text_is_encrypted_at_rest(demo):
    enable(demo)
    secret = make_key(demo)
    chat(demo, secret, text="my secret plan")
    chat(demo, secret, text="my secret plan", stream=True)
    for row in raw_stored(demo):
        assert all(v.startswith(prompt_log.SEALED) and "secret plan" not in v for v in row)
    assert all("my secret plan" in req and out == "Echo: my secret plan" for req, out in stored(demo))


def test_the_spool_holds_no_plaintext(sqlite_app, monkeypatch):
    from gateway.services.accounting.usage import UsageEntry, UsageRecorder, new_request_id
    monkeypatch.setattr(UsageRecorder, "_insert", staticmethod(lambda rows: 1 / 0))   # the database is down
    monkeypatch.setattr("time.sleep", lambda s: None)
    rec = recorder(sqlite_app)
    rec._write_batch([UsageEntry(request_id=new_request_id(), endpoint="chat", status=200,
                                 request_body='[{"role":"user","content":"my secret plan"}]',
                                 response_text="Echo: my secret plan")], attempts=1)
    [spooled] = list(rec.spool_dir.glob("*.jsonl"))
    data = spooled.read_text()
    assert "secret plan" not in data and prompt_log.SEALED in data
    monkeypatch.undo()
    with sqlite_app.app_context():
        rec._replay_spool()
    assert stored(sqlite_app) == [('[{"role":"user","content":"my secret plan"}]', "Echo: my secret plan")]


def test_nothing_is_encrypted_while_storage_is_off(demo, monkeypatch):
    from cryptography.fernet import Fernet
    calls = []
    real = Fernet.encrypt
    monkeypatch.setattr(Fernet, "encrypt", lambda self, data: calls.append(1) or real(self, data))
    secret = make_key(demo)
    for _ in range(3):
        chat(demo, secret)
    assert stored(demo) == [(None, None)] * 3 and calls == []


def test_rows_stored_before_encryption_still_show(sqlite_app):
    ids = _seed_drawer(sqlite_app)
    with sqlite_app.app_context():
        row = db.session.get(UsageRecord, ids["other"])
        row.request_body, row.response_text = '[{"role": "user", "content": "plain old row"}]', "plain answer"
        db.session.commit()
    page = Console(sqlite_app, "admin@example.com").get(f"/logs/{ids['other']}").text
    assert "plain old row" in page and "plain answer" in page


def test_a_changed_encryption_key_shows_a_notice_not_an_error(sqlite_app):
    from cryptography.fernet import Fernet
    ids = _seed_drawer(sqlite_app)
    sqlite_app.extensions["fernet"] = Fernet(Fernet.generate_key())
    r = Console(sqlite_app, "admin@example.com").get(f"/logs/{ids['other']}")
    assert r.status_code == 200 and "cannot be decrypted" in r.text and "admin secret plans" not in r.text
