"""Request parameters on /v1: wrong types and ranges, and fields that try to steer the upstream,
answer 400 naming the param and never reach the provider."""
from __future__ import annotations

import pytest
import requests

from tests.helpers import add_provider, make_key, usage_records

MSG = [{"role": "user", "content": "hi"}]
TOOL = {"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}

BAD_CHAT = [
    ({"max_tokens": 0}, "max_tokens", "integer_below_min_value"),
    ({"max_tokens": -5}, "max_tokens", "integer_below_min_value"),
    ({"max_tokens": True}, "max_tokens", "invalid_type"),
    ({"max_tokens": "100"}, "max_tokens", "invalid_type"),
    ({"max_tokens": 10.5}, "max_tokens", "invalid_type"),
    ({"max_completion_tokens": 0}, "max_completion_tokens", "integer_below_min_value"),
    ({"temperature": 2.5}, "temperature", "decimal_above_max_value"),
    ({"temperature": -0.1}, "temperature", "decimal_below_min_value"),
    ({"temperature": "hot"}, "temperature", "invalid_type"),
    ({"temperature": False}, "temperature", "invalid_type"),
    ({"top_p": 1.5}, "top_p", "decimal_above_max_value"),
    ({"n": 0}, "n", "integer_below_min_value"),
    ({"n": 129}, "n", "integer_above_max_value"),
    ({"n": True}, "n", "invalid_type"),
    ({"presence_penalty": 3}, "presence_penalty", "decimal_above_max_value"),
    ({"frequency_penalty": -2.01}, "frequency_penalty", "decimal_below_min_value"),
    ({"seed": 1.5}, "seed", "invalid_type"),
    ({"seed": "42"}, "seed", "invalid_type"),
    ({"logprobs": "yes"}, "logprobs", "invalid_type"),
    ({"logprobs": True, "top_logprobs": 21}, "top_logprobs", "integer_above_max_value"),
    ({"top_logprobs": 3}, "top_logprobs", "invalid_value"),
    ({"logit_bias": {"50256": 101}}, "logit_bias.50256", "decimal_above_max_value"),
    ({"logit_bias": {"word": 1}}, "logit_bias", "invalid_value"),
    ({"stop": 5}, "stop", "invalid_type"),
    ({"stop": ["a", "b", "c", "d", "e"]}, "stop", "array_above_max_length"),
    ({"stop": ["a", 1]}, "stop[1]", "invalid_type"),
    ({"stream": "yes"}, "stream", "invalid_type"),
    ({"stream_options": {"include_usage": True}}, "stream_options", "invalid_value"),
    ({"stream": True, "stream_options": {"include_usage": "yes"}}, "stream_options.include_usage", "invalid_type"),
    ({"stream": True, "stream_options": []}, "stream_options", "invalid_type"),
    ({"tools": {"type": "function"}}, "tools", "invalid_type"),
    ({"tools": [{"type": "function"}]}, "tools[0].function", "missing_required_parameter"),
    ({"tools": [{"type": "function", "function": {"name": "bad name!"}}]}, "tools[0].function.name", "invalid_value"),
    ({"tools": [{"type": "retrieval"}]}, "tools[0].type", "invalid_value"),
    ({"tools": [TOOL] * 129}, "tools", "array_above_max_length"),
    ({"tools": [TOOL], "tool_choice": "always"}, "tool_choice", "invalid_value"),
    ({"tools": [TOOL], "tool_choice": {"type": "function"}}, "tool_choice.function", "missing_required_parameter"),
    ({"tools": [TOOL], "tool_choice": 3}, "tool_choice", "invalid_type"),
    ({"tool_choice": "auto"}, "tool_choice", "invalid_value"),
    ({"parallel_tool_calls": "true"}, "parallel_tool_calls", "invalid_type"),
    ({"response_format": {"type": "xml"}}, "response_format.type", "invalid_value"),
    ({"response_format": "json"}, "response_format", "invalid_type"),
    ({"response_format": {"type": "json_schema"}}, "response_format.json_schema", "missing_required_parameter"),
    ({"response_format": {"type": "json_schema", "json_schema": {"schema": {}}}},
     "response_format.json_schema.name", "missing_required_parameter"),
    ({"user": 7}, "user", "invalid_type"),
    ({"modalities": ["smell"]}, "modalities[0]", "invalid_value"),
]


@pytest.fixture
def upstream(sqlite_app, mock):
    """A key, and a chat and an embedding model on the real mock upstream, whose request log
    shows whether anything reached it."""
    add_provider(sqlite_app, "up", "openai", mock + "/v1", ["chat=echo"], embedding_models=["embed=echo-embed"])
    return make_key(sqlite_app), lambda: requests.get(mock + "/_mock/requests", timeout=5).json()["requests"]


def _post(app, key, path, body, **kw):
    return app.test_client().post(path, json=body, headers={"Authorization": f"Bearer {key}"}, **kw)


@pytest.mark.parametrize("extra,param,code", BAD_CHAT)
def test_bad_chat_parameters_are_400_and_never_go_upstream(sqlite_app, upstream, extra, param, code):
    key, seen = upstream
    r = _post(sqlite_app, key, "/v1/chat/completions", {"model": "chat", "messages": MSG, **extra})
    assert r.status_code == 400, r.json
    assert r.json["error"] | {"message": None} == {"message": None, "type": "invalid_request_error",
                                                   "param": param, "code": code}
    assert seen() == []
    [rec] = usage_records(sqlite_app)
    assert rec.status == 400


@pytest.mark.parametrize("extra", [
    {"max_tokens": 5, "temperature": 0, "top_p": 1, "n": 2, "presence_penalty": -2, "frequency_penalty": 2.0,
     "seed": -1, "logprobs": True, "top_logprobs": 0, "stop": "x", "user": "u1", "logit_bias": {"50256": -100}},
    {"max_completion_tokens": 5, "stop": ["a", "b", "c", "d"], "temperature": None, "seed": None},
    {"tools": [TOOL], "tool_choice": {"type": "function", "function": {"name": "lookup"}},
     "parallel_tool_calls": False},
    {"tools": [TOOL], "tool_choice": "required"},
    {"response_format": {"type": "json_schema", "json_schema": {"name": "out", "schema": {"type": "object"},
                                                                "strict": True}}},
    {"response_format": {"type": "json_object"}},
    {"stream": True, "stream_options": {"include_usage": True}},
    {"top_k": 40, "repetition_penalty": 1.1},       # vendor extensions pass through
])
def test_good_chat_parameters_reach_the_upstream(sqlite_app, upstream, extra):
    key, seen = upstream
    r = _post(sqlite_app, key, "/v1/chat/completions", {"model": "chat", "messages": MSG, **extra})
    assert r.status_code == 200, r.data
    sent = seen()[0]["body"]
    assert {k: sent.get(k) for k in extra if k != "stream_options"} == \
        {k: v for k, v in extra.items() if k != "stream_options"}


@pytest.mark.parametrize("field", ["api_base", "base_url", "api_key", "api_version", "extra_headers",
                                   "extra_body", "headers", "organization", "custom_llm_provider", "API_BASE"])
def test_steering_fields_are_refused_by_name(sqlite_app, upstream, field):
    key, seen = upstream
    for path, body in (("/v1/chat/completions", {"model": "chat", "messages": MSG}),
                       ("/v1/embeddings", {"model": "embed", "input": "hi"})):
        r = _post(sqlite_app, key, path, dict(body, **{field: "http://127.0.0.1:9/v1"}))
        assert r.status_code == 400, r.json
        assert r.json["error"]["param"] == field and r.json["error"]["code"] == "unsupported_parameter"
        assert field in r.json["error"]["message"]
    assert seen() == []


@pytest.mark.parametrize("extra,param,code", [
    ({"dimensions": 0}, "dimensions", "integer_below_min_value"),
    ({"dimensions": "256"}, "dimensions", "invalid_type"),
    ({"dimensions": True}, "dimensions", "invalid_type"),
    ({"encoding_format": "int8"}, "encoding_format", "invalid_value"),
    ({"input": ["a", 1]}, "input", None),
    ({"input": [""]}, "input", None),
    ({"input": [[1, -2]]}, "input", None),
    ({"input": ["x"] * 2049}, "input", None),
])
def test_bad_embedding_parameters_are_400(sqlite_app, upstream, extra, param, code):
    key, seen = upstream
    r = _post(sqlite_app, key, "/v1/embeddings", {"model": "embed", "input": "hi", **extra})
    assert r.status_code == 400, r.json
    assert r.json["error"]["param"] == param and r.json["error"]["code"] == code
    assert seen() == []


def test_good_embedding_parameters_reach_the_upstream(sqlite_app, upstream):
    key, seen = upstream
    for body in ({"input": ["a", "b"], "dimensions": 8, "encoding_format": "base64"}, {"input": [1, 2, 3]},
                 {"input": [[1, 2], [3]], "encoding_format": "float"}):
        r = _post(sqlite_app, key, "/v1/embeddings", {"model": "embed", **body})
        assert r.status_code == 200, r.data
    assert len(seen()) == 3
