"""The pure translations of gateway/proxy/dialects/: Responses and legacy completion bodies to
chat and back, and a chat stream as Responses events."""
from __future__ import annotations

import orjson
import pytest

from gateway.errors import InvalidRequest
from gateway.proxy.dialects import completions
from gateway.proxy.dialects import responses as dialect
from gateway.proxy.dialects.responses_stream import ResponsesStream


def test_tool_items_become_assistant_tool_calls_and_tool_messages():
    chat = dialect.to_chat({"model": "m", "instructions": "sys", "input": [
        {"role": "developer", "content": "be terse"},
        {"role": "user", "content": [{"type": "input_text", "text": "weather?"}]},
        {"type": "reasoning", "id": "rs_1", "summary": []},
        {"type": "function_call", "call_id": "c1", "name": "get", "arguments": '{"q": "Paris"}'},
        {"type": "function_call", "call_id": "c2", "name": "get", "arguments": '{"q": "Rome"}'},
        {"type": "function_call_output", "call_id": "c1", "output": "21C"},
        {"type": "function_call_output", "call_id": "c2", "output": [{"type": "input_text", "text": "25C"}]},
        {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Warm."}]}]})
    assert chat["messages"] == [
        {"role": "system", "content": "sys"},
        {"role": "system", "content": "be terse"},
        {"role": "user", "content": [{"type": "text", "text": "weather?"}]},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "get", "arguments": '{"q": "Paris"}'}},
            {"id": "c2", "type": "function", "function": {"name": "get", "arguments": '{"q": "Rome"}'}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "21C"},
        {"role": "tool", "tool_call_id": "c2", "content": "25C"},
        {"role": "assistant", "content": "Warm."}]


def test_images_by_url_and_data_url():
    chat = dialect.to_chat({"model": "m", "input": [{"role": "user", "content": [
        {"type": "input_text", "text": "what is this"},
        {"type": "input_image", "image_url": "https://example.com/a.png", "detail": "low"},
        {"type": "input_image", "image_url": "data:image/png;base64,iVBORw0KGgo="}]}]})
    assert chat["messages"][0]["content"][1:] == [
        {"type": "image_url", "image_url": {"url": "https://example.com/a.png", "detail": "low"}},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}]
    with pytest.raises(InvalidRequest) as e:
        dialect.to_chat({"model": "m", "input": [{"role": "user", "content": [
            {"type": "input_image", "file_id": "file-1"}]}]})
    assert e.value.param == "input[0].content[0].image_url"


def test_json_schema_tools_and_settings():
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    chat = dialect.to_chat({
        "model": "m", "input": "hi", "max_output_tokens": 50, "temperature": 0.2, "top_p": 0.9,
        "text": {"format": {"type": "json_schema", "name": "out", "schema": schema, "strict": True}},
        "tools": [{"type": "function", "name": "f", "parameters": {"type": "object"}, "strict": True}],
        "tool_choice": {"type": "function", "name": "f"}, "parallel_tool_calls": False,
        "reasoning": {"effort": "low"}, "metadata": {"team": "x"}, "store": True, "user": "u1",
        "truncation": "auto", "include": ["reasoning.encrypted_content"], "top_k": 5})
    assert chat == {
        "model": "m", "temperature": 0.2, "top_p": 0.9, "parallel_tool_calls": False, "user": "u1",
        "top_k": 5, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 50,
        "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"},
                                                    "strict": True}}],
        "tool_choice": {"type": "function", "function": {"name": "f"}},
        "response_format": {"type": "json_schema", "json_schema": {"name": "out", "schema": schema,
                                                                   "strict": True}},
        "reasoning_effort": "low"}
    assert dialect.to_chat({"model": "m", "input": "x", "text": {"format": {"type": "json_object"}}})[
        "response_format"] == {"type": "json_object"}
    assert dialect.to_chat({"model": "m", "input": "x", "stream": True})["stream_options"] == {"include_usage": True}
    # without tools, the tool settings some clients always send are not passed (chat refuses them)
    assert "parallel_tool_calls" not in dialect.to_chat({"model": "m", "input": "x", "parallel_tool_calls": True,
                                                         "tool_choice": "auto"})


@pytest.mark.parametrize("body, param", [
    ({"input": []}, "input"),
    ({"input": [{"role": "robot", "content": "x"}]}, "input[0].role"),
    ({"input": [{"type": "item_reference", "id": "x"}]}, "input[0].type"),
    ({"input": [{"type": "function_call_output", "output": "x"}]}, "input[0].call_id"),
    ({"input": "x", "tools": [{"type": "file_search"}]}, "tools[0].type"),
    ({"input": "x", "tool_choice": {"type": "web_search"}}, "tool_choice"),
    ({"input": "x", "text": {"format": {"type": "yaml"}}}, "text.format.type"),
    ({"input": "x", "background": True}, "background"),
])
def test_bad_input_names_its_param(body, param):
    with pytest.raises(InvalidRequest) as e:
        dialect.to_chat({"model": "m", **body})
    assert e.value.param == param


def test_from_chat_with_text_and_tool_calls():
    chat = {"created": 5, "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
        "role": "assistant", "content": "Looking.", "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]}}],
        "usage": {"prompt_tokens": 10, "completion_tokens": 4, "total_tokens": 14,
                  "prompt_tokens_details": {"cached_tokens": 6},
                  "completion_tokens_details": {"reasoning_tokens": 2}}}
    r = dialect.from_chat(chat, "asked", {"instructions": "sys"}, "resp_1")
    assert (r["id"], r["model"], r["status"], r["created_at"], r["instructions"]) == \
        ("resp_1", "asked", "completed", 5, "sys")
    message, call = r["output"]
    assert message["content"] == [{"type": "output_text", "text": "Looking.", "annotations": [], "logprobs": []}]
    assert (call["type"], call["call_id"], call["name"], call["arguments"]) == ("function_call", "call_1", "f", "{}")
    assert r["usage"] == {"input_tokens": 10, "input_tokens_details": {"cached_tokens": 6}, "output_tokens": 4,
                          "output_tokens_details": {"reasoning_tokens": 2}, "total_tokens": 14}


def _chunk(delta: dict | None = None, finish: str | None = None, usage: dict | None = None) -> bytes:
    choices = [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish}]
    return b"data: " + orjson.dumps({"choices": choices, "usage": usage}) + b"\n\n"


def _events(frames: list[bytes]) -> list[dict]:
    out = []
    for frame in frames:
        if frame.startswith(b"event: "):
            head, data = frame.split(b"\n", 1)
            event = orjson.loads(data.removeprefix(b"data: "))
            assert head == b"event: " + event["type"].encode()
            out.append(event)
    return out


class Inner:
    """An inner stream that notes being closed."""

    def __init__(self, frames):
        self.frames, self.closed = iter(frames), False

    def __iter__(self):
        return self.frames

    def close(self):
        self.closed = True


def test_stream_text_then_parallel_calls_then_usage():
    ended = []
    inner = Inner([b": keepalive\n\n", _chunk({"role": "assistant", "content": ""}), _chunk({"content": "Hi"}),
                   _chunk({"tool_calls": [{"index": 0, "id": "c1", "function": {"name": "f", "arguments": '{"a"'}}]}),
                   _chunk({"tool_calls": [{"index": 1, "id": "c2", "function": {"name": "g", "arguments": "{}"}}]}),
                   _chunk({"tool_calls": [{"index": 0, "function": {"arguments": ": 1}"}}]}, "tool_calls"),
                   _chunk(usage={"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}),
                   b"data: [DONE]\n\n"])
    frames = list(ResponsesStream({"model": "m"}, "asked", "resp_1", ended.append).frames(inner))
    assert frames[2] == b": keepalive\n\n" and inner.closed
    events = _events(frames)
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    assert [e["type"] for e in events] == [
        "response.created", "response.in_progress", "response.output_item.added",
        "response.content_part.added", "response.output_text.delta", "response.output_text.done",
        "response.content_part.done", "response.output_item.done", "response.output_item.added",
        "response.function_call_arguments.delta", "response.output_item.added",
        "response.function_call_arguments.delta", "response.function_call_arguments.delta",
        "response.function_call_arguments.done", "response.output_item.done",
        "response.function_call_arguments.done", "response.output_item.done", "response.completed"]
    [final] = ended
    assert final["status"] == "completed" and events[-1]["response"]["id"] == final["id"] == "resp_1"
    assert [i["type"] for i in final["output"]] == ["message", "function_call", "function_call"]
    assert final["output"][1]["arguments"] == '{"a": 1}' and final["output"][2]["name"] == "g"
    assert final["usage"]["total_tokens"] == 5 and final["model"] == "asked"


def test_stream_failure_is_an_error_event_then_response_failed():
    ended = []
    inner = Inner([_chunk({"content": "Hi"}), b'data: {"error": {"message": "cut", "type": "upstream_error", '
                                              b'"param": null, "code": "stream_error"}}\n\n'])
    events = _events(list(ResponsesStream({}, "m", "resp_1", ended.append).frames(inner)))
    assert [e["type"] for e in events[-2:]] == ["error", "response.failed"]
    assert events[-2]["code"] == "stream_error" and events[-1]["response"]["status"] == "failed"
    assert ended == [] and inner.closed


def test_stream_closes_inner_when_the_client_leaves():
    inner = Inner([_chunk({"content": "Hi"}), _chunk({"content": " there"})])
    frames = ResponsesStream({}, "m", "resp_1").frames(inner)
    next(frames)
    frames.close()
    assert inner.closed


def test_completions_translation():
    assert completions.to_chat({"model": "m", "prompt": ["hi"], "max_tokens": 5, "stop": "\n", "n": 2}) == {
        "model": "m", "max_tokens": 5, "stop": "\n", "n": 2, "messages": [{"role": "user", "content": "hi"}]}
    out = completions.from_chat({"created": 1, "choices": [
        {"index": 0, "finish_reason": "stop", "message": {"content": "a"}},
        {"index": 1, "finish_reason": "length", "message": {"content": "b"}}], "usage": {"total_tokens": 3}}, "m")
    assert [(c["text"], c["index"], c["finish_reason"]) for c in out["choices"]] == [("a", 0, "stop"), ("b", 1, "length")]
    assert out["object"] == "text_completion" and out["usage"] == {"total_tokens": 3}
