"""POST /v1/messages onto Anthropic-kind deployments passes the client's own body through and
its answer back untouched but for `model`: what chat cannot carry (cache_control, documents,
thinking and signatures, stop_sequence, cache usage) survives, while usage records, quotas,
redaction and fallbacks to translated deployments still work."""
from __future__ import annotations

import anthropic
import orjson
import pytest
import requests

from gateway.providers import anthropic_native
from gateway.providers.base import StreamError, Target
from tests.helpers import LiveServer, add_provider, make_key, usage_records

PDF = "JVBERi0xLjQK"
CACHED_SYSTEM = [{"type": "text", "text": "You are a careful reader.", "cache_control": {"type": "ephemeral"}}]


@pytest.fixture
def app(sqlite_app):
    return sqlite_app


@pytest.fixture
def gw(app, mock):
    """A live gateway whose `claude` is an Anthropic-kind deployment (upstream gpt-4o)."""
    add_provider(app, "p-anthropic", "anthropic", mock + "/v1", ["claude=gpt-4o"])
    server = LiveServer(app)
    server.mock = mock
    yield server
    server.stop()


def _client(gw, key: str, **headers) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=gw.url, api_key=key, max_retries=0, default_headers=headers or None)


def _sent(gw) -> list[dict]:
    return requests.get(gw.mock + "/_mock/requests", timeout=5).json()["requests"]


def test_cache_control_and_document_reach_the_upstream_unchanged(app, gw):
    messages = [{"role": "user", "content": [
        {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": PDF},
         "title": "Report", "citations": {"enabled": True}, "cache_control": {"type": "ephemeral"}},
        {"type": "text", "text": "summarise it", "cache_control": {"type": "ephemeral", "ttl": "1h"}}]}]
    key = make_key(app)
    client = _client(gw, key, **{"anthropic-beta": "extended-cache-ttl-2025-04-11"})
    m = client.messages.create(model="claude", max_tokens=100, system=CACHED_SYSTEM, messages=messages,
                               metadata={"user_id": "u-7"}, extra_body={"models": ["claude"]})
    [sent] = _sent(gw)
    assert sent["body"]["messages"] == messages and sent["body"]["system"] == CACHED_SYSTEM
    assert sent["body"]["model"] == "gpt-4o" and "models" not in sent["body"]
    assert sent["body"]["metadata"] == {"user_id": "u-7"}
    assert sent["headers"]["anthropic-beta"] == "extended-cache-ttl-2025-04-11"
    assert key not in orjson.dumps(sent["headers"]).decode()     # the client's key never goes on
    assert m.model == "claude" and m.content[0].text == "Echo: summarise it"
    assert m.usage.cache_creation_input_tokens > 0
    [rec] = usage_records(app)
    assert rec.status == 200 and rec.provider == "p-anthropic" and not rec.estimated
    assert rec.prompt_tokens == m.usage.input_tokens + m.usage.cache_creation_input_tokens
    assert rec.completion_tokens == m.usage.output_tokens and rec.cost_usd > 0


def test_thinking_with_signature_and_stop_sequence_come_back(app, gw):
    client = _client(gw, make_key(app))
    m = client.messages.create(model="claude", max_tokens=2048, stop_sequences=["three"],
                               thinking={"type": "enabled", "budget_tokens": 1024},
                               messages=[{"role": "user", "content": "one two three four"}])
    thinking, text = m.content
    assert thinking.type == "thinking" and thinking.signature == "mock-signature" and thinking.thinking
    assert text.text == "Echo: one two "
    assert m.stop_reason == "stop_sequence" and m.stop_sequence == "three"
    # the thinking block goes back in the next turn, signature and all
    history = [{"role": "user", "content": "one two three four"},
               {"role": "assistant", "content": [b.model_dump() for b in m.content]},
               {"role": "user", "content": "and then?"}]
    client.messages.create(model="claude", max_tokens=2048, thinking={"type": "enabled", "budget_tokens": 1024},
                           messages=history)
    assert _sent(gw)[-1]["body"]["messages"][1]["content"][0] == {
        "type": "thinking", "thinking": thinking.thinking, "signature": "mock-signature"}


def test_stream_passes_every_event_through(app, gw):
    client = _client(gw, make_key(app))
    with client.messages.stream(model="claude", max_tokens=2048, system=CACHED_SYSTEM,
                                thinking={"type": "enabled", "budget_tokens": 1024},
                                messages=[{"role": "user", "content": "a b c"}]) as stream:
        deltas = [e.delta.type for e in stream if e.type == "content_block_delta"]
        final = stream.get_final_message()
    assert {"thinking_delta", "signature_delta", "text_delta"} <= set(deltas)
    assert final.model == "claude" and [b.type for b in final.content] == ["thinking", "text"]
    assert final.content[0].signature == "mock-signature" and final.content[1].text == "Echo: a b c"
    assert final.usage.cache_creation_input_tokens > 0
    [rec] = usage_records(app)
    assert rec.stream and rec.status == 200 and not rec.estimated
    assert rec.prompt_tokens == final.usage.input_tokens + final.usage.cache_creation_input_tokens
    assert rec.completion_tokens == final.usage.output_tokens
    r = requests.post(gw.url + "/v1/messages", headers={"x-api-key": make_key(app, "raw")}, timeout=10,
                      json={"model": "claude", "max_tokens": 50, "stream": True,
                            "messages": [{"role": "user", "content": "x y"}]})
    events = [e.split("\n") for e in r.text.split("\n\n") if e.strip()]
    names = [name.removeprefix("event: ") for name, _ in events]
    assert names == ["message_start", "content_block_start", "ping", "content_block_delta",
                     "content_block_delta", "content_block_delta", "content_block_stop",
                     "message_delta", "message_stop"]      # the upstream's own sequence, no [DONE]
    start = orjson.loads(events[0][1].removeprefix("data: "))
    assert start["message"]["model"] == "claude"


def test_upstream_redaction_redacts_the_native_body(app, gw):
    client = _client(gw, make_key(app, redact="upstream"))
    client.messages.create(model="claude", max_tokens=50, system="Write to ops@example.com",
                           messages=[{"role": "user", "content": [
                               {"type": "text", "text": "mail bob@example.com", "cache_control": {"type": "ephemeral"}},
                               {"type": "tool_result", "tool_use_id": "t1", "content": "card 4111 1111 1111 1111"}]},
                           {"role": "assistant", "content": [
                               {"type": "thinking", "thinking": "a@b.example.org", "signature": "s"},
                               {"type": "tool_use", "id": "t2", "name": "mail", "input": {"to": "eve@example.com"}}]},
                           {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t2", "content": "ok"}]}])
    [sent] = _sent(gw)
    body = orjson.dumps(sent["body"]).decode()
    assert "example.com" not in body and "4111" not in body
    thinking, use = sent["body"]["messages"][1]["content"]
    assert thinking["thinking"] == "a@b.example.org"       # signed by the model: left as it is
    assert use["input"] == {"to": "[EMAIL]"}
    assert sent["body"]["system"] == "Write to [EMAIL]"
    assert sent["body"]["messages"][0]["content"][0] == {"type": "text", "text": "mail [EMAIL]",
                                                          "cache_control": {"type": "ephemeral"}}


def test_prompt_log_keeps_the_passed_through_answer(app, gw):
    from tests.test_prompt_logging import enable, stored
    enable(app)
    client = _client(gw, make_key(app))
    client.messages.create(model="claude", max_tokens=50, messages=[{"role": "user", "content": "red green"}])
    with client.messages.stream(model="claude", max_tokens=50,
                                messages=[{"role": "user", "content": "blue"}]) as stream:
        stream.get_final_message()
    (_, whole), (_, streamed) = stored(app)
    assert whole == "Echo: red green" and streamed == "Echo: blue"


def test_quota_cap_applies_to_the_native_body(app, gw):
    client = _client(gw, make_key(app, token_quota=200))
    client.messages.create(model="claude", max_tokens=1000, thinking={"type": "enabled", "budget_tokens": 1024},
                           messages=[{"role": "user", "content": "hi"}])
    [sent] = _sent(gw)
    assert sent["body"]["max_tokens"] < 200
    assert "thinking" not in sent["body"]      # its budget no longer fits: dropped, as the chat path does


def test_rate_limited_anthropic_falls_back_to_openai_with_the_translated_body(app, gw):
    add_provider(app, "p-limited", "anthropic", gw.mock + "/v1", ["primary=fail-429"])
    add_provider(app, "p-openai", "openai", gw.mock + "/v1", ["backup=gpt-4o"])
    client = _client(gw, make_key(app))
    m = client.messages.create(model="primary", max_tokens=50, system=CACHED_SYSTEM,
                               messages=[{"role": "user", "content": "hello"}], extra_body={"models": ["backup"]})
    assert m.content[0].text == "Echo: hello" and m.model == "primary"
    sent = _sent(gw)
    assert sent[0]["body"]["system"] == CACHED_SYSTEM       # the Anthropic attempt: as-is
    last = sent[-1]
    assert last["path"].endswith("/chat/completions")
    assert last["body"]["messages"][0] == {"role": "system", "content": "You are a careful reader."}
    assert "cache_control" not in orjson.dumps(last["body"]).decode()
    [rec] = usage_records(app)
    assert rec.status == 200 and rec.provider == "p-openai" and len(rec.attempts) >= 2


def test_content_only_anthropic_takes_is_refused_elsewhere(app, gw):
    add_provider(app, "p-openai", "openai", gw.mock + "/v1", ["gpt=gpt-4o"])
    client = _client(gw, make_key(app))
    doc = {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "notes"}}
    with pytest.raises(anthropic.BadRequestError) as e:
        client.messages.create(model="gpt", max_tokens=50, messages=[{"role": "user", "content": [
            doc, {"type": "text", "text": "read"}]}])
    assert e.value.body["error"]["type"] == "invalid_request_error"
    assert "messages.0.content.0" in e.value.body["error"]["message"]
    assert _sent(gw) == []
    n = client.messages.count_tokens(model="claude", messages=[{"role": "user", "content": [doc]}])
    assert n.input_tokens > 0
    [rec] = usage_records(app)
    assert rec.status == 400


def test_native_stream_reader_unit():
    target = Target("anthropic", "http://up/v1", "k", "claude-x")
    s = anthropic_native.NativeStream(target, "asked")
    start = {"type": "message_start", "message": {"id": "msg_1", "model": "claude-x",
                                                   "usage": {"input_tokens": 5, "cache_read_input_tokens": 7}}}
    [frame] = s.feed("message_start", orjson.dumps(start))
    name, data = frame.decode().strip().split("\n")
    assert name == "event: message_start" and orjson.loads(data[6:])["message"]["model"] == "asked"
    s.feed("message_delta", b'{"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":3}}')
    assert s.usage.prompt_tokens == 12 and s.usage.cached_tokens == 7 and s.usage.completion_tokens == 3
    s.feed("message_stop", b'{"type":"message_stop"}')
    assert s.done
    with pytest.raises(StreamError):
        s.feed("error", b'{"type":"error","error":{"type":"overloaded_error","message":"busy"}}')
    req = anthropic_native.native_request(target, {"model": "asked", "max_tokens": 5}, "messages",
                                          {"anthropic-beta": "b1", "authorization": "Bearer sk-client"})
    assert orjson.loads(req.body)["model"] == "claude-x" and req.headers["anthropic-beta"] == "b1"
    assert "authorization" not in {k.lower() for k in req.headers} and req.headers["x-api-key"] == "k"
    assert anthropic_native.native_request(target, {}, "responses", {}) is None
