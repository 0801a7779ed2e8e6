"""The mock upstream, over real sockets: wire formats, SDK compatibility, faults, control API."""
import io
import json
import math
import time

import anthropic
import openai
import orjson
import pytest
import requests

from gateway import mock_upstream

OPENAI_AUTH = {"Authorization": "Bearer sk-test-1234"}
GEMINI_AUTH = {"x-goog-api-key": "gk-test-5678"}
USER = [{"role": "user", "content": "hello there world"}]


@pytest.fixture
def base(mock):
    return mock


@pytest.fixture
def oai(base):
    return openai.OpenAI(base_url=f"{base}/v1", api_key="sk-test", max_retries=0, timeout=5)


@pytest.fixture
def claude(base):
    return anthropic.Anthropic(base_url=base, api_key="ak-test", max_retries=0, timeout=5)


def sse_data(lines) -> list[str]:
    """The `data:` payloads of an SSE body, given its lines."""
    return [line[len("data: "):] for line in lines if line.startswith("data: ")]


def chat(base, model="echo", headers=OPENAI_AUTH, **body):
    return requests.post(f"{base}/v1/chat/completions", headers=headers, timeout=5,
                         stream=bool(body.get("stream")),
                         json={"model": model, "messages": USER, **body})


# Shared answer logic

def test_reply_words_join_back_and_truncate():
    words, cut = mock_upstream.reply_words("Echo:  a b ", None)
    assert "".join(words) == "Echo:  a b " and len(words) == 3 and not cut
    assert mock_upstream.reply_words("Echo: a b", 2) == (["Echo:", " a"], True)


def test_prompt_tokens_counts_words_and_messages():
    assert mock_upstream.prompt_tokens(["be brief", "hello there world"]) == 5 + 6


def test_directives_parse_from_model_and_reject_unknown():
    faults = mock_upstream.Faults()
    mock_upstream.model_faults(faults, "echo+latency=50+chunk_delay=10+fail=429+retry_after=2")
    assert (faults.latency_ms, faults.chunk_delay_ms, faults.fail, faults.retry_after) == (
        50, 10, 429, "2")
    faults = mock_upstream.Faults()
    mock_upstream.model_faults(faults, "fail-503")
    assert faults.fail == 503
    with pytest.raises(ValueError):
        mock_upstream.model_faults(mock_upstream.Faults(), "echo+explode")


# OpenAI

def test_openai_chat_via_sdk(oai):
    r = oai.chat.completions.create(model="echo", messages=[
        {"role": "system", "content": "be brief"}, *USER])
    assert r.object == "chat.completion" and r.model == "echo"
    assert r.choices[0].message.content == "Echo: hello there world"
    assert r.choices[0].finish_reason == "stop"
    assert (r.usage.prompt_tokens, r.usage.completion_tokens, r.usage.total_tokens) == (11, 4, 15)


def test_openai_content_parts_and_max_tokens(oai):
    parts = [{"type": "text", "text": "one two"}, {"type": "text", "text": "three"}]
    r = oai.chat.completions.create(model="echo", max_tokens=2,
                                    messages=[{"role": "user", "content": parts}])
    assert r.choices[0].message.content == "Echo: one"
    assert r.choices[0].finish_reason == "length"
    assert r.usage.completion_tokens == 2


def test_openai_stream_with_usage(oai):
    chunks = list(oai.chat.completions.create(
        model="echo", messages=USER, stream=True, stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Echo: hello there world"
    assert all(c.usage is None for c in chunks[:-1])
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 4
    assert chunks[-2].choices[0].finish_reason == "stop"


def test_openai_stream_wire_format(base):
    r = requests.post(f"{base}/v1/chat/completions", headers=OPENAI_AUTH, stream=True,
                      json={"model": "echo", "messages": USER, "stream": True}, timeout=5)
    assert r.headers["content-type"].startswith("text/event-stream")
    data = sse_data(r.iter_lines(decode_unicode=True))
    assert data[-1] == "[DONE]"
    chunks = [json.loads(d) for d in data[:-1]]
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert [c["choices"][0]["delta"].get("content") for c in chunks[1:-1]] == [
        "Echo:", " hello", " there", " world"]
    assert all("usage" not in c for c in chunks)


def test_openai_tool_call(oai):
    tools = [{"type": "function", "function": {"name": "search", "parameters": {}}},
             {"type": "function", "function": {"name": "lookup", "parameters": {}}}]
    r = oai.chat.completions.create(model="echo", messages=USER, tools=tools)
    call = r.choices[0].message.tool_calls[0]
    assert r.choices[0].finish_reason == "tool_calls" and r.choices[0].message.content is None
    assert call.function.name == "search"
    assert json.loads(call.function.arguments) == {"query": "hello there world"}

    named = {"type": "function", "function": {"name": "lookup"}}
    r = oai.chat.completions.create(model="echo", messages=USER, tools=tools, tool_choice=named)
    assert r.choices[0].message.tool_calls[0].function.name == "lookup"

    r = oai.chat.completions.create(model="echo", messages=USER, tools=tools, tool_choice="none")
    assert r.choices[0].message.content == "Echo: hello there world"

    after_tool = [*USER, {"role": "assistant", "tool_calls": [
        {"id": call.id, "type": "function", "function": {"name": "search", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": call.id, "content": "found it"}]
    r = oai.chat.completions.create(model="echo", messages=after_tool, tools=tools)
    assert r.choices[0].message.content == "Echo: hello there world"


def test_openai_tool_call_stream(oai):
    tools = [{"type": "function", "function": {"name": "search", "parameters": {}}}]
    chunks = list(oai.chat.completions.create(model="echo", messages=USER, tools=tools,
                                              stream=True))
    deltas = [c.choices[0].delta.tool_calls[0] for c in chunks if c.choices[0].delta.tool_calls]
    assert len(deltas) == 3
    assert deltas[0].id.startswith("call_") and deltas[0].function.name == "search"
    assert deltas[0].function.arguments == ""
    arguments = "".join(d.function.arguments for d in deltas)
    assert json.loads(arguments) == {"query": "hello there world"}
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


def test_openai_n_choices_and_json_mode(oai):
    r = oai.chat.completions.create(model="echo", messages=USER, n=2)
    assert [c.index for c in r.choices] == [0, 1]
    assert r.usage.completion_tokens == 8
    r = oai.chat.completions.create(model="echo", messages=USER,
                                    response_format={"type": "json_object"})
    assert json.loads(r.choices[0].message.content) == {"echo": "hello there world"}


def test_openai_embeddings(oai, base):
    r = oai.embeddings.create(model="text-embedding-3-small", input=["a b", "c"], dimensions=4)
    assert [len(d.embedding) for d in r.data] == [4, 4]
    assert math.isclose(sum(v * v for v in r.data[0].embedding), 1.0, rel_tol=1e-6)
    assert r.usage.prompt_tokens == 3
    again = oai.embeddings.create(model="text-embedding-3-small", input="a b", dimensions=4)
    assert again.data[0].embedding == pytest.approx(r.data[0].embedding)
    r8 = oai.embeddings.create(model="text-embedding-3-small", input="a b")
    assert len(r8.data[0].embedding) == 8

    raw = requests.post(f"{base}/v1/embeddings", headers=OPENAI_AUTH, timeout=5, json={
        "model": "e", "input": "a b", "dimensions": 4, "encoding_format": "base64"}).json()
    assert isinstance(raw["data"][0]["embedding"], str)


def test_openai_models(oai):
    assert "echo" in [m.id for m in oai.models.list()]


def test_azure_deployment_path(base):
    client = openai.AzureOpenAI(azure_endpoint=base, api_key="az-key", api_version="2024-10-21",
                                max_retries=0, timeout=5)
    r = client.chat.completions.create(model="my-deployment", messages=USER)
    assert r.model == "my-deployment"
    assert r.choices[0].message.content == "Echo: hello there world"
    e = client.embeddings.create(model="my-embedder", input="x")
    assert len(e.data[0].embedding) == 8
    seen = requests.get(f"{base}/_mock/requests", timeout=5).json()["requests"]
    assert seen[0]["path"] == "/openai/deployments/my-deployment/chat/completions"
    assert seen[0]["query"] == {"api-version": "2024-10-21"}
    assert seen[0]["headers"]["api-key"] == "...-key"


# Anthropic

def test_anthropic_message_via_sdk(claude):
    m = claude.messages.create(model="claude-x", max_tokens=100, system="be brief",
                               messages=USER)
    assert m.type == "message" and m.role == "assistant" and m.model == "claude-x"
    assert m.content[0].text == "Echo: hello there world"
    assert m.stop_reason == "end_turn" and m.stop_sequence is None
    assert (m.usage.input_tokens, m.usage.output_tokens) == (11, 4)
    assert m.usage.cache_read_input_tokens == 0


def test_anthropic_stream_via_sdk(claude):
    with claude.messages.stream(model="claude-x", max_tokens=3, messages=USER) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "Echo: hello there" == final.content[0].text
    assert final.stop_reason == "max_tokens"
    assert (final.usage.input_tokens, final.usage.output_tokens) == (6, 3)


def test_anthropic_stream_event_sequence(base):
    r = requests.post(f"{base}/v1/messages", headers={"x-api-key": "k"}, stream=True, timeout=5,
                      json={"model": "c", "max_tokens": 9, "messages": USER, "stream": True})
    events = [line[len("event: "):] for line in r.iter_lines(decode_unicode=True)
              if line.startswith("event: ")]
    assert events == ["message_start", "content_block_start", "ping",
                      *["content_block_delta"] * 4,
                      "content_block_stop", "message_delta", "message_stop"]


def test_anthropic_tool_use(claude):
    tools = [{"name": "search", "description": "s", "input_schema": {"type": "object"}}]
    m = claude.messages.create(model="c", max_tokens=50, messages=USER, tools=tools)
    assert m.stop_reason == "tool_use"
    assert (m.content[0].type, m.content[0].name) == ("tool_use", "search")
    assert m.content[0].input == {"query": "hello there world"}
    with claude.messages.stream(model="c", max_tokens=50, messages=USER, tools=tools) as s:
        final = s.get_final_message()
    assert final.content[0].input == {"query": "hello there world"}
    m = claude.messages.create(model="c", max_tokens=50, messages=USER, tools=tools,
                               tool_choice={"type": "none"})
    assert m.content[0].text == "Echo: hello there world"


# Gemini

def gemini(base, model, action, body, headers=GEMINI_AUTH, **kw):
    return requests.post(f"{base}/v1beta/models/{model}:{action}", headers=headers, json=body,
                         timeout=5, **kw)


GEMINI_BODY = {"contents": [{"role": "user", "parts": [{"text": "hello there world"}]}]}


def test_gemini_generate_content(base):
    r = gemini(base, "gemini-x", "generateContent", {
        **GEMINI_BODY, "generationConfig": {"maxOutputTokens": 2}}).json()
    candidate = r["candidates"][0]
    assert candidate["content"] == {"parts": [{"text": "Echo: hello"}], "role": "model"}
    assert candidate["finishReason"] == "MAX_TOKENS"
    assert r["usageMetadata"] == {"promptTokenCount": 6, "candidatesTokenCount": 2,
                                  "totalTokenCount": 8}
    assert r["modelVersion"] == "gemini-x"


def test_gemini_stream_sse(base):
    r = gemini(base, "gemini-x", "streamGenerateContent", GEMINI_BODY,
               params={"alt": "sse"}, stream=True)
    raw = r.content.decode()
    assert raw.endswith("\r\n\r\n")
    chunks = [json.loads(p[len("data: "):]) for p in raw.split("\r\n\r\n") if p]
    text = "".join(c["candidates"][0]["content"]["parts"][0]["text"] for c in chunks)
    assert text == "Echo: hello there world"
    assert "finishReason" not in chunks[0]["candidates"][0]
    assert chunks[-1]["candidates"][0]["finishReason"] == "STOP"
    assert chunks[-1]["usageMetadata"]["candidatesTokenCount"] == 4


def test_gemini_function_call(base):
    body = {**GEMINI_BODY, "tools": [{"functionDeclarations": [{"name": "search"}]}]}
    part = gemini(base, "g", "generateContent", body).json()["candidates"][0]["content"]["parts"][0]
    assert part == {"functionCall": {"name": "search", "args": {"query": "hello there world"}}}


def test_gemini_embeddings(base):
    r = gemini(base, "emb", "batchEmbedContents", {"requests": [
        {"model": "models/emb", "content": {"parts": [{"text": "a"}]}},
        {"model": "models/emb", "content": {"parts": [{"text": "b"}]}, "outputDimensionality": 3},
    ]}).json()
    assert [len(e["values"]) for e in r["embeddings"]] == [8, 3]
    one = gemini(base, "emb", "embedContent", {"content": {"parts": [{"text": "a"}]}},
                 headers={}, params={"key": "query-key"}).json()
    assert one["embedding"]["values"] == pytest.approx(r["embeddings"][0]["values"])


# Auth

def test_auth_errors_in_vendor_shapes(base, oai):
    r = chat(base, headers={})
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
    assert chat(base, headers={"Authorization": "Bearer "}).status_code == 401
    assert chat(base, headers={"api-key": "k"}).status_code == 200

    r = requests.post(f"{base}/v1/messages", json={"model": "c", "messages": USER}, timeout=5)
    assert r.status_code == 401
    assert r.json() == {"type": "error", "error": {"type": "authentication_error",
                                                   "message": "x-api-key header is required"}}

    r = gemini(base, "g", "generateContent", GEMINI_BODY, headers={})
    assert r.status_code == 403 and r.json()["error"]["status"] == "PERMISSION_DENIED"


# Faults

def test_fail_with_retry_after(base, oai):
    r = chat(base, model="echo+fail=429+retry_after=2")
    assert r.status_code == 429 and r.headers["retry-after"] == "2"
    assert r.json()["error"]["message"] == "mock failure 429"
    with pytest.raises(openai.InternalServerError):
        oai.chat.completions.create(model="fail-500", messages=USER)

    r = requests.post(f"{base}/v1/messages", headers={"x-api-key": "k", "x-mock-fault": "fail=529"},
                      json={"model": "c", "max_tokens": 5, "messages": USER}, timeout=5)
    assert r.status_code == 529 and r.json()["error"]["type"] == "overloaded_error"
    r = gemini(base, "g+fail=503", "generateContent", GEMINI_BODY)
    assert r.json() == {"error": {"code": 503, "message": "mock failure 503",
                                  "status": "UNAVAILABLE"}}


def test_unknown_directive_is_a_400(base):
    r = chat(base, model="echo+explode")
    assert r.status_code == 400 and "explode" in r.json()["error"]["message"]


def test_hang_trips_client_timeout(base):
    started = time.monotonic()
    with pytest.raises(requests.exceptions.ReadTimeout):
        requests.post(f"{base}/v1/chat/completions", headers=OPENAI_AUTH, timeout=0.2,
                      json={"model": "echo+hang", "messages": USER})
    assert time.monotonic() - started < 2


def test_reset_is_a_connection_error(base, oai):
    with pytest.raises(requests.exceptions.ConnectionError):
        chat(base, model="echo+reset")
    with pytest.raises(openai.APIConnectionError):
        oai.chat.completions.create(model="echo", messages=USER,
                                    extra_headers={"x-mock-fault": "reset"})
    assert chat(base).status_code == 200   # the server is still fine


def test_cut_ends_stream_early(base):
    r = chat(base, model="echo+cut=2", stream=True)
    lines = []
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        for line in r.iter_lines(decode_unicode=True):
            lines.append(line)
    data = sse_data(lines)
    assert "[DONE]" not in data
    contents = [json.loads(d)["choices"][0]["delta"].get("content") for d in data]
    assert contents == ["", "Echo:", " hello"]


def test_cut_in_anthropic_sdk_stream(claude):
    received = []
    with pytest.raises(Exception, match="reset"):   # the SDK lets the transport error through
        with claude.messages.stream(model="c+cut=1", max_tokens=9, messages=USER) as s:
            received.extend(s.text_stream)
    assert received == ["Echo:"]


def test_cut_non_stream_body(base):
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        chat(base, model="echo+cut=1")


def test_malformed_stream_line(base):
    r = chat(base, model="echo+malformed", stream=True)
    data = sse_data(r.iter_lines(decode_unicode=True))
    assert data[2] == "{not json"
    assert data[-1] == "[DONE]"


def test_latency_and_chunk_delay(base):
    started = time.monotonic()
    assert chat(base, headers={**OPENAI_AUTH, "x-mock-latency-ms": "100"}).status_code == 200
    assert time.monotonic() - started >= 0.1
    started = time.monotonic()
    r = chat(base, model="echo+chunk_delay=30", stream=True)
    assert sse_data(r.iter_lines(decode_unicode=True))[-1] == "[DONE]"
    assert time.monotonic() - started >= 0.09   # 3 pauses between 4 words


# Control API

def test_queued_faults_by_path(base):
    r = requests.post(f"{base}/_mock/faults", timeout=5,
                      json={"faults": ["fail=503", "reset"], "path": "embeddings"})
    assert r.json() == {"queued": 2}
    assert chat(base).status_code == 200   # not matched: the queue stays
    emb = {"model": "e", "input": "x"}
    post = lambda: requests.post(f"{base}/v1/embeddings", headers=OPENAI_AUTH, json=emb, timeout=5)
    assert post().status_code == 503
    with pytest.raises(requests.exceptions.ConnectionError):
        post()
    assert post().status_code == 200


def test_clear_queued_faults(base):
    requests.post(f"{base}/_mock/faults", json={"faults": ["fail=500"]}, timeout=5)
    assert requests.delete(f"{base}/_mock/faults", timeout=5).json() == {"cleared": 1}
    assert chat(base).status_code == 200
    r = requests.post(f"{base}/_mock/faults", json={"faults": ["boom"]}, timeout=5)
    assert r.status_code == 400


def test_requests_log_and_stats(base):
    chat(base, headers={"Authorization": "Bearer sk-secret-abcd"})
    chat(base, model="echo+latency=1")
    gemini(base, "gem", "generateContent", GEMINI_BODY)
    log = requests.get(f"{base}/_mock/requests", timeout=5).json()["requests"]
    assert [e["path"] for e in log] == ["/v1/chat/completions"] * 2 + [
        "/v1beta/models/gem:generateContent"]
    assert log[0]["headers"]["authorization"] == "Bearer ...abcd"
    assert log[0]["body"]["messages"] == USER
    assert log[2]["headers"]["x-goog-api-key"] == "...5678"
    stats = requests.get(f"{base}/_mock/stats", timeout=5).json()
    assert stats["paths"] == {"/v1/chat/completions": 2, "/v1beta/models/gem:generateContent": 1}
    assert stats["models"] == {"echo": 1, "echo+latency=1": 1, "gem": 1}


# In-process use, as the gateway's `mock` provider does

def call_app(app, path, body, fault=None):
    raw = orjson.dumps(body)
    environ = {"REQUEST_METHOD": "POST", "PATH_INFO": path, "QUERY_STRING": "",
               "CONTENT_LENGTH": str(len(raw)), "wsgi.input": io.BytesIO(raw),
               "HTTP_AUTHORIZATION": "Bearer k"}
    if fault:
        environ["HTTP_X_MOCK_FAULT"] = fault
    started = []
    chunks = app(environ, lambda status, headers: started.append(status))
    return started, chunks


def test_in_process_answers_and_faults():
    app = mock_upstream.MockUpstream()
    started, chunks = call_app(app, "/v1/chat/completions", {"model": "echo", "messages": USER})
    assert started == ["200 OK"]
    assert orjson.loads(b"".join(chunks))["choices"][0]["message"]["content"] == (
        "Echo: hello there world")

    started, chunks = call_app(app, "/v1/chat/completions",
                               {"model": "echo", "messages": USER}, fault="reset")
    with pytest.raises(ConnectionResetError):
        next(iter(chunks))
    assert started == []

    started, chunks = call_app(app, "/v1/chat/completions",
                               {"model": "echo+cut=1", "messages": USER, "stream": True})
    chunks = iter(chunks)
    assert b'"Echo:"' in next(chunks)
    with pytest.raises(ConnectionResetError):
        next(chunks)
