"""The official openai SDK, changed only in base_url and api_key, through every adapter."""
from __future__ import annotations

import json

import openai
import pytest

from tests.helpers import add_provider, make_key, usage_records

KINDS = {
    # kind: (base URL under the mock upstream, or None for in-process, extra options)
    "openai": ("/v1", {}),
    "azure": ("", {"api_version": "2024-10-21"}),
    "anthropic": ("/v1", {}),
    "gemini": ("/v1beta", {}),
    "mock": (None, {}),
}
EMBEDDING_KINDS = ("openai", "azure", "gemini", "mock")
TOOLS = [{"type": "function", "function": {
    "name": "search", "description": "Search the web",
    "parameters": {"type": "object", "properties": {"query": {"type": "string"}}, "required": ["query"]}}}]


@pytest.fixture(params=list(KINDS))
def sdk(request, app, live, mock):
    kind = request.param
    path, options = KINDS[kind]
    embed = ["embed"] if kind in EMBEDDING_KINDS else None
    add_provider(app, f"p-{kind}", kind, None if path is None else mock + path, ["chat=echo-model"],
                 embedding_models=embed and ["embed=embed-model"], **options)
    client = openai.OpenAI(base_url=live.url + "/v1", api_key=make_key(app), max_retries=0)
    client.kind = kind
    return client


def test_chat(app, sdk):
    r = sdk.chat.completions.create(model="chat", messages=[
        {"role": "system", "content": "Be brief."}, {"role": "user", "content": "hello there"}])
    assert r.choices[0].message.content == "Echo: hello there"
    assert r.choices[0].finish_reason == "stop"
    assert r.usage.completion_tokens == 3 and r.usage.prompt_tokens > 0
    [rec] = usage_records(app)
    assert rec.status == 200 and rec.provider == f"p-{sdk.kind}" and rec.upstream_model == "echo-model"
    assert rec.prompt_tokens == r.usage.prompt_tokens and rec.completion_tokens == 3
    assert rec.total_tokens == rec.prompt_tokens + 3 and not rec.estimated


def test_streaming_chat(app, sdk):
    stream = sdk.chat.completions.create(model="chat", stream=True,
                                         messages=[{"role": "user", "content": "one two three"}])
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Echo: one two three"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert all(c.choices for c in chunks), "usage chunk leaked to a client that did not ask for it"
    [rec] = usage_records(app)
    assert rec.stream and rec.status == 200 and rec.completion_tokens == 4 and not rec.estimated
    assert rec.ttft_ms is not None and rec.ttft_ms <= rec.latency_ms


def test_streaming_usage_when_asked(app, sdk):
    stream = sdk.chat.completions.create(model="chat", stream=True, stream_options={"include_usage": True},
                                         messages=[{"role": "user", "content": "a b"}])
    chunks = list(stream)
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 3


def test_tools(app, sdk):
    r = sdk.chat.completions.create(model="chat", tools=TOOLS,
                                    messages=[{"role": "user", "content": "weather in Paris"}])
    [call] = r.choices[0].message.tool_calls
    assert call.function.name == "search"
    assert json.loads(call.function.arguments) == {"query": "weather in Paris"}
    assert r.choices[0].finish_reason == "tool_calls"
    # and the tool's answer goes back through the same adapter
    r2 = sdk.chat.completions.create(model="chat", tools=TOOLS, messages=[
        {"role": "user", "content": "weather in Paris"},
        {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
        {"role": "tool", "tool_call_id": call.id, "content": '{"temp": 21}'}])
    assert r2.choices[0].message.content == "Echo: weather in Paris"


def test_streaming_tools(app, sdk):
    stream = sdk.chat.completions.create(model="chat", tools=TOOLS, stream=True,
                                         messages=[{"role": "user", "content": "weather in Paris"}])
    args, name = "", None
    for c in stream:
        for tc in (c.choices[0].delta.tool_calls or []) if c.choices else []:
            name = name or tc.function.name
            args += tc.function.arguments or ""
    assert name == "search" and json.loads(args) == {"query": "weather in Paris"}


def test_image_input(app, sdk):
    r = sdk.chat.completions.create(model="chat", messages=[{"role": "user", "content": [
        {"type": "text", "text": "what is this"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}]}])
    assert r.choices[0].message.content == "Echo: what is this"


def test_embeddings(app, sdk):
    if sdk.kind not in EMBEDDING_KINDS:
        with pytest.raises(openai.BadRequestError):
            sdk.embeddings.create(model="chat", input="x")
        return
    r = sdk.embeddings.create(model="embed", input=["first text", "second"])
    assert len(r.data) == 2 and len(r.data[0].embedding) > 0
    assert r.data[0].embedding != r.data[1].embedding
    [rec] = usage_records(app)
    assert rec.endpoint == "embeddings" and rec.status == 200 and rec.prompt_tokens > 0


def test_models_list(app, sdk):
    ids = {m.id for m in sdk.models.list()}
    assert "chat" in ids
    assert sdk.models.retrieve("chat").id == "chat"
    with pytest.raises(openai.NotFoundError):
        sdk.models.retrieve("nope")


def test_sdk_errors_are_typed(app, sdk):
    with pytest.raises(openai.NotFoundError) as e:
        sdk.chat.completions.create(model="nope", messages=[{"role": "user", "content": "x"}])
    assert e.value.code == "model_not_found"
    bad = openai.OpenAI(base_url=sdk.base_url, api_key="sk-gw-wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.chat.completions.create(model="chat", messages=[{"role": "user", "content": "x"}])


def test_a_spent_quota_is_refused_once_to_the_sdk_with_its_default_retries(app, live):
    """The SDK retries a 429 twice by default; a spent quota does not come back in seconds, so the
    gateway says `x-should-retry: false` and the refusal is one request (one record), not three."""
    add_provider(app, "mockp", "mock", None, ["demo-chat"])
    client = openai.OpenAI(base_url=live.url + "/v1", api_key=make_key(app, token_quota=5))     # default retries
    with pytest.raises(openai.RateLimitError) as refused:
        client.chat.completions.create(model="demo-chat", messages=[{"role": "user", "content": "hello " * 20}])
    assert refused.value.code == "insufficient_quota"
    assert refused.value.response.headers["x-should-retry"] == "false"
    assert [r.status for r in usage_records(app)] == [429]
