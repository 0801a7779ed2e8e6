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
        # passed through as the client sent it (tests/test_messages_passthrough.py)
        assert sent["system"] == [{"type": "text", "text": "Be brief."}]
        assert sent["top_k"] == 5 and sent["metadata"] == {"user_id": "u-1"}
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
    # translated: ping right after message_start; passed through: where the upstream sent it
    assert names[0] == "message_start" and sorted(names[1:3]) == ["content_block_start", "ping"]
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
    narrow = anthropic.Anthropic(base_url=sdk.url, api_key=make_key(app, "narrow", models=["other"]), max_retries=0)
    with pytest.raises(anthropic.PermissionDeniedError) as e:
        narrow.messages.create(model="claude", max_tokens=10, messages=msgs)
    assert e.value.body["error"]["type"] == "permission_error"
    recs = usage_records(app)
    assert [r.status for r in recs] == [401, 404, 400, 429, 403] and {r.endpoint for r in recs} == {"messages"}


def test_bearer_auth_and_unknown_path(app, sdk):
    r = requests.post(sdk.url + "/v1/messages", headers={"Authorization": f"Bearer {sdk.api_key}",
                                                         "anthropic-beta": "tools-2024-04-04"},
                      json={"model": "claude", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]},
                      timeout=10)
    assert r.status_code == 200 and r.json()["content"][0]["text"] == "Echo: hi"
    r = requests.get(sdk.url + "/v1/messages/nope", timeout=10)
    assert r.status_code == 404 and r.json()["error"]["type"] == "not_found_error"


def test_stream_cut_midway_ends_with_error_event(app, sdk):
    requests.post(sdk.mock + "/_mock/faults", json={"faults": ["cut=1"]}, timeout=5)
    r = requests.post(sdk.url + "/v1/messages", headers={"x-api-key": sdk.api_key},
                      json={"model": "claude", "max_tokens": 50, "stream": True,
                            "messages": [{"role": "user", "content": "a b c d"}]}, timeout=10)
    events = [e for e in r.text.split("\n\n") if e.strip()]
    assert events[0].startswith("event: message_start")
    name, data = events[-1].split("\n", 1)
    assert name == "event: error" and "message_stop" not in r.text
    body = orjson.loads(data.removeprefix("data: "))
    assert body["type"] == "error" and body["error"]["type"] == "api_error"
    [rec] = usage_records(app)
    assert rec.endpoint == "messages" and rec.status == 502


def test_client_fallback_models(app, sdk):
    add_provider(app, "p-broken", sdk.kind, sdk.mock + "/v1", ["broken=fail-500"])
    m = sdk.messages.create(model="broken", max_tokens=20, messages=[{"role": "user", "content": "hi"}],
                            extra_body={"models": ["claude"]})
    assert m.content[0].text == "Echo: hi"
    [rec] = usage_records(app)
    assert rec.status == 200 and rec.upstream_model == "gpt-4o" and len(rec.attempts) >= 2


# The translation on its own: the cases where the two formats do not line up one to one.

def _chat(**body) -> dict:
    return dialect.to_chat({"model": "m", "max_tokens": 10, **body})


def test_tool_results_come_first_and_carry_errors_and_images():
    chat = _chat(messages=[
        {"role": "user", "content": "go"},
        {"role": "assistant", "content": [{"type": "thinking", "thinking": "hm", "signature": "s"},
                                          {"type": "text", "text": "Calling."},
                                          {"type": "tool_use", "id": "t1", "name": "f", "input": {"a": 1}},
                                          {"type": "tool_use", "id": "t2", "name": "g", "input": {}}]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "t1", "content": [
                {"type": "text", "text": "shot"},
                {"type": "image", "source": {"type": "url", "url": "https://example.com/a.png"}}]},
            {"type": "tool_result", "tool_use_id": "t2", "is_error": True, "content": "boom"},
            {"type": "text", "text": "and?"}]}])
    user, assistant, r1, r2, rest = chat["messages"]
    assert assistant == {"role": "assistant", "content": "Calling.", "tool_calls": [
        {"id": "t1", "type": "function", "function": {"name": "f", "arguments": '{"a":1}'}},
        {"id": "t2", "type": "function", "function": {"name": "g", "arguments": "{}"}}]}
    assert r1 == {"role": "tool", "tool_call_id": "t1", "content": "shot"}
    assert r2 == {"role": "tool", "tool_call_id": "t2", "content": "Error: boom"}
    assert rest == {"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}, {"type": "text", "text": "and?"}]}


def test_request_fields():
    chat = _chat(system=[{"type": "text", "text": "A"}, {"type": "text", "text": "B"}], stream=True,
                 stop_sequences=["X"], metadata={"user_id": "u"}, top_k=3, models=["other"],
                 tools=TOOLS, tool_choice={"type": "any", "disable_parallel_tool_use": True},
                 thinking={"type": "enabled", "budget_tokens": 5},
                 messages=[{"role": "user", "content": "hi"}])
    assert chat["messages"][0] == {"role": "system", "content": "A\n\nB"}
    assert chat["stop"] == ["X"] and chat["user"] == "u" and chat["models"] == ["other"]
    assert chat["stream"] is True and chat["stream_options"] == {"include_usage": True}
    assert chat["tool_choice"] == "required" and chat["parallel_tool_calls"] is False
    assert chat["tools"][0]["function"]["parameters"] == TOOLS[0]["input_schema"]
    assert chat["anthropic"] == {"top_k": 3, "thinking": {"type": "enabled", "budget_tokens": 5}}
    assert "metadata" not in chat and "top_k" not in chat and "thinking" not in chat
    schema = {"type": "object", "properties": {"a": {"type": "string"}}}
    structured = _chat(output_config={"format": {"type": "json_schema", "schema": schema}},
                       messages=[{"role": "user", "content": "x"}])
    assert structured["response_format"] == {"type": "json_schema", "json_schema": {"name": "output", "schema": schema}}
    named = _chat(tools=TOOLS, tool_choice={"type": "tool", "name": "search"}, messages=[{"role": "user", "content": "x"}])
    assert named["tool_choice"] == {"type": "function", "function": {"name": "search"}}


def test_thinking_is_left_out_once_tools_were_called():
    chat = _chat(thinking={"type": "enabled", "budget_tokens": 5}, messages=[
        {"role": "user", "content": "x"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "t", "name": "f", "input": {}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", "content": "ok"}]}])
    assert "anthropic" not in chat


@pytest.mark.parametrize("body, param", [
    ({"max_tokens": None}, "max_tokens"),
    ({"temperature": 1.5}, "temperature"),
    ({"messages": []}, "messages"),
    ({"messages": [{"role": "system", "content": "x"}]}, "messages.0.role"),
    ({"messages": [{"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "document"}]}]},
     "messages.0.content.1"),
    ({"messages": [{"role": "user", "content": [{"type": "image", "source": {"type": "file"}}]}]},
     "messages.0.content.0.source"),
    ({"tools": [{"type": "web_search_20250305", "name": "web_search"}]}, "tools.0.type"),
    ({"tools": TOOLS, "tool_choice": {"type": "sometimes"}}, "tool_choice.type"),
    ({"api_base": "http://evil"}, "api_base"),
])
def test_bad_requests_name_their_param(body, param):
    with pytest.raises(InvalidRequest) as e:
        _chat(**{"messages": [{"role": "user", "content": "x"}], **body})
    assert e.value.param == param


def test_answer_from_chat():
    chat = {"id": "chatcmpl-abc", "choices": [{"finish_reason": "length", "message": {
        "role": "assistant", "content": "partial",
        "tool_calls": [{"id": "c1", "function": {"name": "f", "arguments": "not json"}}]}}],
        "usage": {"prompt_tokens": 10, "completion_tokens": 4, "prompt_tokens_details": {"cached_tokens": 6}}}
    m = from_chat(chat, "asked")
    assert m["id"] == "msg_abc" and m["model"] == "asked" and m["stop_reason"] == "tool_use"
    assert m["content"] == [{"type": "text", "text": "partial"},
                            {"type": "tool_use", "id": "c1", "name": "f", "input": {}}]
    assert m["usage"] == {"input_tokens": 4, "output_tokens": 4, "cache_creation_input_tokens": 0,
                          "cache_read_input_tokens": 6}
    plain = from_chat({"id": "chatcmpl-msg_x", "choices": [{"finish_reason": "length",
                                                            "message": {"content": "a"}}]}, "asked")
    assert plain["id"] == "msg_x" and plain["stop_reason"] == "max_tokens"


def _chunk(delta: dict | None = None, finish: str | None = None, usage: dict | None = None) -> bytes:
    obj = {"id": "chatcmpl-1", "choices": [] if delta is None else [{"index": 0, "delta": delta,
                                                                    "finish_reason": finish}]}
    if usage:
        obj["usage"] = usage
    return b"data: " + orjson.dumps(obj) + b"\n\n"


def _events(out) -> list[tuple[str, dict]]:
    pairs = []
    for frame in out:
        name, data = frame.decode().strip().split("\n")
        pairs.append((name.removeprefix("event: "), orjson.loads(data.removeprefix("data: "))))
    return pairs


def test_stream_text_then_tool_call():
    frames = [b": keepalive\n\n", _chunk({"role": "assistant", "content": ""}), _chunk({"content": "Hi"}),
              _chunk({"tool_calls": [{"index": 0, "id": "c1", "function": {"name": "f", "arguments": ""}}]}),
              _chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"a":'}}]}),
              _chunk({"tool_calls": [{"index": 0, "function": {"arguments": "1}"}}]}),
              _chunk({}, "tool_calls"), _chunk(usage={"prompt_tokens": 7, "completion_tokens": 3}),
              b"data: [DONE]\n\n"]
    events = _events(to_events(iter(frames), "asked", 5))
    assert [n for n, _ in events] == [
        "ping", "message_start", "ping", "content_block_start", "content_block_delta",
        "content_block_stop", "content_block_start", "content_block_delta", "content_block_delta",
        "content_block_stop", "message_delta", "message_stop"]
    start = events[1][1]["message"]
    assert start["model"] == "asked" and start["usage"]["input_tokens"] == 5 and start["content"] == []
    assert events[3][1] == {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}
    assert events[6][1]["content_block"] == {"type": "tool_use", "id": "c1", "name": "f", "input": {}}
    assert events[7][1]["index"] == 1 and events[7][1]["delta"] == {"type": "input_json_delta", "partial_json": '{"a":'}
    assert events[10][1]["delta"]["stop_reason"] == "tool_use"
    assert events[10][1]["usage"]["input_tokens"] == 7 and events[10][1]["usage"]["output_tokens"] == 3


def test_stream_error_and_close():
    closed = []

    def frames():
        try:
            yield _chunk({"content": "a"})
            yield b'data: {"error": {"message": "slow down", "type": "rate_limit_exceeded"}}\n\n'
            yield _chunk({"content": "never"})
        finally:
            closed.append(True)

    events = _events(to_events(frames(), "asked", 1))
    assert events[-1] == ("error", {"type": "error", "error": {"type": "rate_limit_error", "message": "slow down"}})
    assert closed == [True]
    left = to_events(frames(), "asked", 1)
    next(left)
    left.close()            # the client went away: the inner stream is closed too
    assert closed == [True, True]


def test_only_the_anthropic_adapter_sends_the_extras():
    from gateway.providers import anthropic_messages, openai_chat
    from gateway.providers.base import Target
    chat = _chat(top_k=3, thinking={"type": "enabled", "budget_tokens": 1024},
                 messages=[{"role": "user", "content": "x"}])
    target = Target("anthropic", "http://up/v1", "k", "claude-x")
    sent = orjson.loads(anthropic_messages.chat_request(target, {**chat, "max_tokens": 2048}, False).body)
    assert sent["top_k"] == 3 and sent["thinking"] == {"type": "enabled", "budget_tokens": 1024}
    # a quota that lowered max_tokens under the thinking budget: thinking goes, the request stays valid
    capped = orjson.loads(anthropic_messages.chat_request(target, chat, False).body)
    assert capped["top_k"] == 3 and "thinking" not in capped
    plain = orjson.loads(openai_chat.chat_request(Target("openai", "http://up/v1", "k", "gpt"), chat, False).body)
    assert "anthropic" not in plain and "top_k" not in plain
