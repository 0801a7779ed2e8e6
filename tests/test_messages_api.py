"""POST /v1/messages: the official anthropic SDK through a live gateway onto OpenAI-kind and
Anthropic-kind deployments, usage records and errors, and the translation's tricky cases."""
from __future__ import annotations

import anthropic
import orjson
import pytest
import requests

from gateway.errors import InvalidRequest
from gateway.proxy.dialects import messages as dialect
from gateway.proxy.dialects.messages_answer import from_chat, to_events
from tests.helpers import LiveServer, add_provider, make_key, usage_records

TOOLS = [{"name": "search", "description": "Search the web",
          "input_schema": {"type": "object", "properties": {"query": {"type": "string"}}, "required": ["query"]}}]
PNG = "iVBORw0KGgo="
GPT4O = (0.0025, 0.01)      # the seeded price of the upstream model, per 1K tokens


@pytest.fixture
def app(sqlite_app):
    return sqlite_app


@pytest.fixture(params=["openai", "anthropic"])
def sdk(request, app, mock):
    """An anthropic client on a live gateway whose model `claude` is served by a deployment of
    the given kind (upstream model gpt-4o, so it has a price)."""
    add_provider(app, f"p-{request.param}", request.param, mock + "/v1", ["claude=gpt-4o"])
    server = LiveServer(app)
    client = anthropic.Anthropic(base_url=server.url, api_key=make_key(app), max_retries=0)
    client.kind, client.url, client.mock = request.param, server.url, mock
    yield client
    server.stop()


def _sent(sdk) -> list[dict]:
    """The requests the mock upstream received."""
    return requests.get(sdk.mock + "/_mock/requests", timeout=5).json()["requests"]


def _cost(rec) -> float:
    return (rec.prompt_tokens * GPT4O[0] + rec.completion_tokens * GPT4O[1]) / 1000


def test_create_plain(app, sdk):
    m = sdk.messages.create(model="claude", max_tokens=100, messages=[{"role": "user", "content": "hello there"}])
    assert m.type == "message" and m.role == "assistant" and m.id.startswith("msg_")
    assert m.model == "claude"
    assert [b.type for b in m.content] == ["text"] and m.content[0].text == "Echo: hello there"
    assert m.stop_reason == "end_turn" and m.stop_sequence is None
    assert m.usage.output_tokens == 3 and m.usage.input_tokens > 0
    [rec] = usage_records(app)
    assert rec.endpoint == "messages" and rec.status == 200 and rec.provider == f"p-{sdk.kind}"
    assert rec.prompt_tokens == m.usage.input_tokens and rec.completion_tokens == 3 and not rec.estimated
    assert rec.cost_usd == pytest.approx(_cost(rec)) and rec.cost_usd > 0


def test_create_with_system_and_blocks(app, sdk):
    m = sdk.messages.create(model="claude", max_tokens=100, system=[{"type": "text", "text": "Be brief."}],
                            extra_body={"temperature": 0.5, "top_k": 5}, stop_sequences=["\n\nHuman:"],
                            metadata={"user_id": "u-1"},
                            messages=[{"role": "user", "content": [{"type": "text", "text": "one two"}]}])
    assert m.content[0].text == "Echo: one two"
    sent = _sent(sdk)[-1]["body"]
    if sdk.kind == "anthropic":
        assert sent["system"] == "Be brief." and sent["top_k"] == 5 and sent["metadata"] == {"user_id": "u-1"}
    else:
        assert sent["messages"][0] == {"role": "system", "content": "Be brief."}
        assert "top_k" not in sent and "anthropic" not in sent and sent["user"] == "u-1"
    assert sent["stop" if sdk.kind == "openai" else "stop_sequences"] == ["\n\nHuman:"]


def test_tool_round_trip(app, sdk):
    ask = {"role": "user", "content": "weather in Paris"}
    m = sdk.messages.create(model="claude", max_tokens=100, tools=TOOLS, messages=[ask])
    assert m.stop_reason == "tool_use"
    [use] = m.content
    assert use.type == "tool_use" and use.name == "search" and use.input == {"query": "weather in Paris"}
    m2 = sdk.messages.create(model="claude", max_tokens=100, tools=TOOLS, messages=[
        ask, {"role": "assistant", "content": [b.model_dump() for b in m.content]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": '{"temp": 21}'}]}])
    assert m2.stop_reason == "end_turn" and m2.content[0].text == "Echo: weather in Paris"
    assert len(usage_records(app)) == 2


def test_forced_tool_choice(app, sdk):
    tools = TOOLS + [{"name": "other", "input_schema": {"type": "object"}}]
    m = sdk.messages.create(model="claude", max_tokens=100, tools=tools, tool_choice={"type": "tool", "name": "other"},
                            messages=[{"role": "user", "content": "x"}])
    assert m.content[0].name == "other"


def test_image(app, sdk):
    m = sdk.messages.create(model="claude", max_tokens=100, messages=[{"role": "user", "content": [
        {"type": "text", "text": "what is this"},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}}]}])
    assert m.content[0].text == "Echo: what is this"
    sent = _sent(sdk)[-1]["body"]
    image = sent["messages"][0]["content"][1]
    if sdk.kind == "anthropic":
        assert image == {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}}
    else:
        assert image == {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}}


def test_stream_text(app, sdk):
    with sdk.messages.stream(model="claude", max_tokens=100,
                             messages=[{"role": "user", "content": "one two three"}]) as stream:
        texts = list(stream.text_stream)
        final = stream.get_final_message()
    assert "".join(texts) == "Echo: one two three" and len(texts) > 1
    assert final.content[0].text == "Echo: one two three" and final.model == "claude"
    assert final.stop_reason == "end_turn" and final.usage.output_tokens == 4
    [rec] = usage_records(app)
    assert rec.endpoint == "messages" and rec.stream and rec.status == 200 and not rec.estimated
    assert final.usage.input_tokens == rec.prompt_tokens and rec.completion_tokens == 4
    assert rec.cost_usd == pytest.approx(_cost(rec))


def test_stream_event_sequence(app, sdk):
    r = requests.post(sdk.url + "/v1/messages", headers={"x-api-key": sdk.api_key, "anthropic-version": "2023-06-01"},
                      json={"model": "claude", "max_tokens": 50, "stream": True,
                            "messages": [{"role": "user", "content": "a b"}]}, timeout=10)
    assert r.headers["content-type"].startswith("text/event-stream")
    names = [line[7:] for line in r.text.splitlines() if line.startswith("event: ")]
    assert names[:3] == ["message_start", "ping", "content_block_start"]
    assert names[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert set(names[3:-3]) == {"content_block_delta"}


def test_stream_tool_call(app, sdk):
    with sdk.messages.stream(model="claude", max_tokens=100, tools=TOOLS,
                             messages=[{"role": "user", "content": "weather in Paris"}]) as stream:
        kinds = [e.delta.type for e in stream if e.type == "content_block_delta"]
        final = stream.get_final_message()
    assert "input_json_delta" in kinds
    [use] = final.content
    assert use.type == "tool_use" and use.name == "search" and use.input == {"query": "weather in Paris"}
    assert final.stop_reason == "tool_use"


def test_count_tokens(app, sdk):
    r = sdk.messages.count_tokens(model="claude", system="Be brief.", tools=TOOLS,
                                  messages=[{"role": "user", "content": "hello there " * 20}])
    bare = sdk.messages.count_tokens(model="claude", messages=[{"role": "user", "content": "hi"}])
    assert r.input_tokens > bare.input_tokens > 0
    assert _sent(sdk) == []     # nothing went upstream
    assert all(rec.cost_usd == 0 for rec in usage_records(app))
    with pytest.raises(anthropic.NotFoundError):
        sdk.messages.count_tokens(model="nope", messages=[{"role": "user", "content": "hi"}])
    bad = anthropic.Anthropic(base_url=sdk.url, api_key="sk-gw-wrong", max_retries=0)
    with pytest.raises(anthropic.AuthenticationError):
        bad.messages.count_tokens(model="claude", messages=[{"role": "user", "content": "hi"}])


def test_errors(app, sdk):
    msgs = [{"role": "user", "content": "x"}]
    bad = anthropic.Anthropic(base_url=sdk.url, api_key="sk-gw-wrong", max_retries=0)
    with pytest.raises(anthropic.AuthenticationError) as e:
        bad.messages.create(model="claude", max_tokens=10, messages=msgs)
    assert e.value.body["type"] == "error" and e.value.body["error"]["type"] == "authentication_error"
    with pytest.raises(anthropic.NotFoundError) as e:
        sdk.messages.create(model="nope", max_tokens=10, messages=msgs)
    assert e.value.body["error"]["type"] == "not_found_error"
    with pytest.raises(anthropic.BadRequestError) as e:
        sdk.with_options().post("/v1/messages", cast_to=object, body={"model": "claude", "messages": msgs})
    assert e.value.body["error"] == {"type": "invalid_request_error", "message": "max_tokens: Field required"}
    poor = anthropic.Anthropic(base_url=sdk.url, api_key=make_key(app, "poor", token_quota=1), max_retries=0)
    with pytest.raises(anthropic.RateLimitError) as e:
        poor.messages.create(model="claude", max_tokens=10, messages=msgs)
    assert e.value.body["error"]["type"] == "rate_limit_error"
    recs = usage_records(app)
    assert [r.status for r in recs] == [401, 404, 400, 429] and {r.endpoint for r in recs} == {"messages"}


def test_bearer_auth_and_unknown_path(app, sdk):
    r = requests.post(sdk.url + "/v1/messages", headers={"Authorization": f"Bearer {sdk.api_key}",
                                                         "anthropic-beta": "tools-2024-04-04"},
                      json={"model": "claude", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]},
                      timeout=10)
    assert r.status_code == 200 and r.json()["content"][0]["text"] == "Echo: hi"
    r = requests.get(sdk.url + "/v1/messages/nope", timeout=10)
    assert r.status_code == 404 and r.json()["error"]["type"] == "not_found_error"
