"""Anthropic Messages adapter, checked against payloads copied from Anthropic's documentation.

Fixtures in tests/fixtures/anthropic/, verbatim from the docs:
  message.json          Messages API reference, "Create a Message", example 200 response
                        (platform.claude.com/docs/en/api/messages)
  tool_use.json         Tool use guide, "Example API response with a tool_use content block"
                        (platform.claude.com/docs/en/agents-and-tools/tool-use/implement-tool-use)
  stream_text.sse       Streaming messages, "Basic streaming request" response
  stream_tool_use.sse   Streaming messages, "Streaming request with tool use" response
  stream_thinking.sse   Streaming messages, "Streaming request with extended thinking" response
  stream_error.sse      Streaming messages, "Error events" example
                        (the four .sse files: platform.claude.com/docs/en/build-with-claude/streaming)
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from gateway.errors import InvalidRequest
from gateway.providers import anthropic_messages as anthropic
from gateway.providers.base import StreamError, Target, Usage

FIXTURES = Path(__file__).parent / "fixtures" / "anthropic"
TARGET = Target(kind="anthropic", base_url="https://api.anthropic.com/v1/", api_key="sk-ant-test",
                model="claude-sonnet-4-5")
WEATHER_TOOL = {"type": "function", "function": {
    "name": "get_weather", "description": "Get the current weather in a given location",
    "parameters": {"type": "object", "properties": {"location": {"type": "string"}},
                   "required": ["location"]}}}


def fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def sse_events(raw: bytes) -> list[tuple[str | None, bytes]]:
    """Split an SSE body into (event name, data) pairs, one per blank-line-separated block."""
    events = []
    for block in raw.decode().split("\n\n"):
        name, data = None, []
        for line in block.splitlines():
            if line.startswith("event:"):
                name = line[6:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].lstrip())
        if data:
            events.append((name, "\n".join(data).encode()))
    return events


def request_json(body: dict, stream: bool = False, target: Target = TARGET) -> dict:
    return json.loads(anthropic.chat_request(target, body, stream).body)


def run_stream(name: str, body: dict | None = None) -> tuple[anthropic.ChatStream, list[dict]]:
    """Feed a recorded stream through ChatStream; every chunk must be one the OpenAI SDK reads."""
    stream = anthropic.ChatStream(TARGET, body or {})
    chunks = []
    for event, data in sse_events(fixture(name)):
        for payload in stream.feed(event, data):
            ChatCompletionChunk.model_validate_json(payload)
            chunks.append(json.loads(payload))
    return stream, chunks


def streamed_text(chunks: list[dict]) -> str:
    return "".join(choice["delta"].get("content") or "" for c in chunks for choice in c["choices"])


def streamed_tool_calls(chunks: list[dict]) -> dict[int, dict]:
    """Reassemble tool calls the way OpenAI clients do: by index, concatenating arguments."""
    calls: dict[int, dict] = {}
    parts = [p for c in chunks for choice in c["choices"] for p in choice["delta"].get("tool_calls") or ()]
    for part in parts:
        call = calls.setdefault(part["index"], {"id": None, "name": None, "arguments": ""})
        call["id"] = part.get("id") or call["id"]
        call["name"] = part["function"].get("name") or call["name"]
        call["arguments"] += part["function"].get("arguments") or ""
    return calls


def test_request_goes_to_messages_with_anthropic_headers():
    req = anthropic.chat_request(TARGET, {"messages": [{"role": "user", "content": "Hi"}]}, False)
    assert req.url == "https://api.anthropic.com/v1/messages"
    assert req.headers == {"x-api-key": "sk-ant-test", "anthropic-version": "2023-06-01",
                           "content-type": "application/json"}
    body = json.loads(req.body)
    assert body["model"] == "claude-sonnet-4-5"
    assert body["messages"] == [{"role": "user", "content": [{"type": "text", "text": "Hi"}]}]
    assert "stream" not in body


def test_anthropic_version_can_be_overridden():
    target = Target("anthropic", "https://api.anthropic.com/v1", "k", "m",
                    options={"anthropic_version": "2024-01-01"})
    req = anthropic.chat_request(target, {"messages": [{"role": "user", "content": "Hi"}]}, True)
    assert req.headers["anthropic-version"] == "2024-01-01"
    assert json.loads(req.body)["stream"] is True


def test_system_and_developer_messages_become_top_level_system():
    body = request_json({"messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "developer", "content": [{"type": "text", "text": "Answer in French."}]},
        {"role": "user", "content": "Hello"}]})
    assert body["system"] == "Be brief.\n\nAnswer in French."
    assert [m["role"] for m in body["messages"]] == ["user"]


def test_images_become_base64_and_url_sources():
    body = request_json({"messages": [{"role": "user", "content": [
        {"type": "text", "text": "Compare these."},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg", "detail": "low"}}]}]})
    assert body["messages"][0]["content"] == [
        {"type": "text", "text": "Compare these."},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                     "data": "iVBORw0KGgo="}},
        {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}}]


def test_unusable_image_url_is_rejected():
    with pytest.raises(InvalidRequest) as e:
        request_json({"messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "ftp://example.com/cat.jpg"}}]}]})
    assert e.value.param == "messages"


def test_tool_calls_and_results_translate_and_results_merge():
    body = request_json({"messages": [
        {"role": "user", "content": "Weather in SF and NYC?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "toolu_1", "type": "function",
             "function": {"name": "get_weather", "arguments": '{"location": "San Francisco, CA"}'}},
            {"id": "toolu_2", "type": "function",
             "function": {"name": "get_weather", "arguments": '{"location": "New York, NY"}'}}]},
        {"role": "tool", "tool_call_id": "toolu_1", "content": "15 degrees"},
        {"role": "tool", "tool_call_id": "toolu_2", "content": "20 degrees"},
        {"role": "user", "content": "Which is warmer?"}]})
    assert [m["role"] for m in body["messages"]] == ["user", "assistant", "user"]
    assert body["messages"][1]["content"] == [
        {"type": "tool_use", "id": "toolu_1", "name": "get_weather",
         "input": {"location": "San Francisco, CA"}},
        {"type": "tool_use", "id": "toolu_2", "name": "get_weather",
         "input": {"location": "New York, NY"}}]
    # Both results and the follow-up question share one user turn, results first.
    assert body["messages"][2]["content"] == [
        {"type": "tool_result", "tool_use_id": "toolu_1", "content": "15 degrees"},
        {"type": "tool_result", "tool_use_id": "toolu_2", "content": "20 degrees"},
        {"type": "text", "text": "Which is warmer?"}]


def test_tool_call_arguments_must_be_a_json_object():
    with pytest.raises(InvalidRequest):
        request_json({"messages": [{"role": "assistant", "tool_calls": [
            {"id": "t", "type": "function", "function": {"name": "f", "arguments": "not json"}}]}]})


def test_consecutive_same_role_messages_merge():
    body = request_json({"messages": [
        {"role": "user", "content": "First."},
        {"role": "user", "content": "Second."},
        {"role": "assistant", "content": "Reply."},
        {"role": "assistant", "content": ""},     # empty text is dropped, Anthropic rejects it
        {"role": "user", "content": "Third."}]})
    assert body["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "First."},
                                     {"type": "text", "text": "Second."}]},
        {"role": "assistant", "content": [{"type": "text", "text": "Reply."}]},
        {"role": "user", "content": [{"type": "text", "text": "Third."}]}]


def test_function_tools_get_an_input_schema():
    body = request_json({"messages": [{"role": "user", "content": "Hi"}], "tools": [WEATHER_TOOL]})
    assert body["tools"] == [{"name": "get_weather",
                              "description": "Get the current weather in a given location",
                              "input_schema": WEATHER_TOOL["function"]["parameters"]}]
    assert "tool_choice" not in body


@pytest.mark.parametrize("choice, expected", [
    ("auto", {"type": "auto"}),
    ("none", {"type": "none"}),
    ("required", {"type": "any"}),
    ({"type": "function", "function": {"name": "get_weather"}}, {"type": "tool", "name": "get_weather"}),
])
def test_tool_choice_maps_to_anthropic(choice, expected):
    body = request_json({"messages": [{"role": "user", "content": "Hi"}],
                         "tools": [WEATHER_TOOL], "tool_choice": choice})
    assert body["tool_choice"] == expected


def test_sampling_stop_and_user_translate():
    body = request_json({"messages": [{"role": "user", "content": "Hi"}], "temperature": 0.2,
                         "top_p": 0.9, "stop": "END", "user": "user-42"})
    assert (body["temperature"], body["top_p"]) == (0.2, 0.9)
    assert body["stop_sequences"] == ["END"]
    assert body["metadata"] == {"user_id": "user-42"}
    assert request_json({"messages": [], "stop": ["a", "b"]})["stop_sequences"] == ["a", "b"]
    assert request_json({"messages": [], "temperature": 1.7})["temperature"] == 1.0  # Anthropic's max


@pytest.mark.parametrize("limits, expected", [
    ({}, 4096),
    ({"max_tokens": 100}, 100),
    ({"max_completion_tokens": 200, "max_tokens": 100}, 200),
])
def test_max_tokens_defaults_because_anthropic_requires_it(limits, expected):
    assert request_json({"messages": [{"role": "user", "content": "Hi"}], **limits})["max_tokens"] == expected


def test_more_than_one_choice_is_rejected():
    with pytest.raises(InvalidRequest) as e:
        request_json({"messages": [{"role": "user", "content": "Hi"}], "n": 2})
    assert e.value.param == "n"


def test_json_response_format_asks_for_json_in_the_system_prompt():
    schema = {"type": "object", "properties": {"answer": {"type": "string"}}}
    body = request_json({"messages": [{"role": "system", "content": "Be brief."},
                                      {"role": "user", "content": "Hi"}],
                         "response_format": {"type": "json_schema",
                                             "json_schema": {"name": "a", "schema": schema}}})
    assert body["system"].startswith("Be brief.\n\n")
    assert "JSON" in body["system"] and '"answer"' in body["system"]


def test_text_response_translates_with_cache_usage():
    reply = anthropic.chat_response(fixture("message.json"), TARGET)
    ChatCompletion.model_validate_json(reply.body)
    out = json.loads(reply.body)
    assert out["id"] == "chatcmpl-msg_013Zva2CMHLNnXjNJJKqJ2EF"
    assert (out["object"], out["model"]) == ("chat.completion", "claude-opus-4-6")
    assert out["choices"][0]["message"] == {"role": "assistant", "content": "Hi! My name is Claude.",
                                            "refusal": None}
    assert out["choices"][0]["finish_reason"] == "stop"
    # OpenAI's prompt_tokens counts cached input too: 2095 fresh + 2051 read + 2051 written.
    assert out["usage"] == {"prompt_tokens": 6197, "completion_tokens": 503, "total_tokens": 6700,
                            "prompt_tokens_details": {"cached_tokens": 2051}}
    assert reply.usage == Usage(prompt_tokens=6197, completion_tokens=503, cached_tokens=2051)


def test_tool_use_response_translates_to_tool_calls():
    reply = anthropic.chat_response(fixture("tool_use.json"), TARGET)
    ChatCompletion.model_validate_json(reply.body)
    choice = json.loads(reply.body)["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] == "I'll check the current weather in San Francisco for you."
    (call,) = choice["message"]["tool_calls"]
    assert call["id"] == "toolu_01A09q90qw90lq917835lq9"
    assert call["type"] == "function"
    assert call["function"]["name"] == "get_weather"
    assert json.loads(call["function"]["arguments"]) == {"location": "San Francisco, CA",
                                                         "unit": "celsius"}
    assert reply.usage is None      # the docs example omits usage; real answers carry it


def test_only_tool_calls_gives_null_content():
    message = json.loads(fixture("tool_use.json"))
    message["content"] = message["content"][1:]
    choice = json.loads(anthropic.chat_response(json.dumps(message).encode(), TARGET).body)["choices"][0]
    assert choice["message"]["content"] is None
    assert len(choice["message"]["tool_calls"]) == 1


@pytest.mark.parametrize("stop_reason, finish_reason", [
    ("end_turn", "stop"), ("stop_sequence", "stop"), ("max_tokens", "length"),
    ("tool_use", "tool_calls"), ("refusal", "content_filter"),
])
def test_stop_reasons_map_to_finish_reasons(stop_reason, finish_reason):
    message = dict(json.loads(fixture("message.json")), stop_reason=stop_reason)
    out = json.loads(anthropic.chat_response(json.dumps(message).encode(), TARGET).body)
    assert out["choices"][0]["finish_reason"] == finish_reason


@pytest.mark.parametrize("data", [b"{not json", b"[]", b'{"type": "message"}'])
def test_unreadable_response_raises_stream_error(data):
    with pytest.raises(StreamError):
        anthropic.chat_response(data, TARGET)


def test_text_stream_translates():
    stream, chunks = run_stream("stream_text.sse")
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": "", "refusal": None}
    assert streamed_text(chunks) == "Hello!"
    assert chunks[-1]["choices"][0] == {"index": 0, "delta": {}, "logprobs": None,
                                        "finish_reason": "stop"}
    assert {(c["id"], c["created"], c["model"]) for c in chunks} == {
        ("chatcmpl-msg_1nZdL29xx5MUA1yADyHTEsnR8uuvGzszyY", chunks[0]["created"],
         "claude-sonnet-4-5-20250929")}
    assert stream.usage == Usage(prompt_tokens=25, completion_tokens=15)
    assert stream.done and stream.text_chars == len("Hello!")


def test_tool_use_stream_translates():
    stream, chunks = run_stream("stream_tool_use.sse")
    assert streamed_text(chunks) == "Okay, let's check the weather for San Francisco, CA:"
    # The tool call is content block 1 but the first tool call, so OpenAI index 0.
    assert streamed_tool_calls(chunks) == {0: {
        "id": "toolu_01T1x1fJ34qAmk2tNTrN7Up6", "name": "get_weather",
        "arguments": '{"location": "San Francisco, CA", "unit": "fahrenheit"}'}}
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"
    assert stream.usage == Usage(prompt_tokens=472, completion_tokens=89)
    assert stream.done


def test_thinking_is_left_out_of_the_stream():
    stream, chunks = run_stream("stream_thinking.sse")
    assert streamed_text(chunks) == "27 * 453 = 12,231"
    assert stream.text_chars == len("27 * 453 = 12,231")
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert stream.done and stream.usage is None     # this docs example carries no usage


@pytest.mark.parametrize("include_usage", [False, True])
def test_usage_chunk_only_when_the_client_asks(include_usage):
    _, chunks = run_stream("stream_text.sse", {"stream_options": {"include_usage": include_usage}})
    usage_chunks = [c for c in chunks if "usage" in c]
    if not include_usage:
        assert usage_chunks == []
        return
    assert usage_chunks == [chunks[-1]]
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"] == {"prompt_tokens": 25, "completion_tokens": 15, "total_tokens": 40,
                                   "prompt_tokens_details": {"cached_tokens": 0}}


def test_stream_usage_counts_cached_input():
    events = sse_events(fixture("stream_text.sse"))
    start = json.loads(events[0][1])
    start["message"]["usage"].update(cache_read_input_tokens=1000, cache_creation_input_tokens=200)
    stream = anthropic.ChatStream(TARGET, {})
    stream.feed("message_start", json.dumps(start).encode())
    for event, data in events[1:]:
        stream.feed(event, data)
    assert stream.usage == Usage(prompt_tokens=1225, completion_tokens=15, cached_tokens=1000)


def test_error_event_raises_stream_error():
    stream = anthropic.ChatStream(TARGET, {})
    ((event, data),) = sse_events(fixture("stream_error.sse"))
    with pytest.raises(StreamError, match="Overloaded"):
        stream.feed(event, data)
    assert not stream.done


@pytest.mark.parametrize("data", [b'{"type": "content_block_delta", "index": 0', b'"ping"'])
def test_malformed_stream_event_raises_stream_error(data):
    with pytest.raises(StreamError):
        anthropic.ChatStream(TARGET, {}).feed("content_block_delta", data)


def test_error_message_reads_anthropic_errors():
    failure = anthropic.error_message(529, sse_events(fixture("stream_error.sse"))[0][1])
    assert (failure.message, failure.type) == ("Overloaded", "overloaded_error")


@pytest.mark.parametrize("data", [b"<html>Bad Gateway</html>", b"{}", b'{"error": "x"}'])
def test_error_message_falls_back_to_the_status(data):
    assert anthropic.error_message(502, data).message == "upstream returned HTTP 502"


def test_embeddings_are_not_offered():
    with pytest.raises(InvalidRequest) as e:
        anthropic.embeddings_request(TARGET, {"input": "hi"})
    assert e.value.param == "model"
    with pytest.raises(InvalidRequest):
        anthropic.embeddings_response(b"{}", TARGET)
