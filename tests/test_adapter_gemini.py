"""The Gemini adapter against payloads Google recorded from its own API.

Fixtures in tests/fixtures/gemini/ are copied verbatim from Google's SDK test data
(github.com/FirebaseExtended/vertexai-sdk-test-data, mock-responses/googleai/ unless noted):
  generate_text.json                  unary-success-basic-reply-short.txt
  generate_function_call.json         unary-success-thinking-function-call-thought-summary-
                                      signature.json
  generate_parallel_calls.json        vertexai/unary-success-function-call-different-
                                      parallel-calls.json
  generate_implicit_caching.json      vertexai/unary-success-implicit-caching.json
  generate_safety.json                unary-failure-finish-reason-safety.txt
  generate_only_prompt_feedback.json  unary-failure-only-prompt-feedback.json
  generate_prompt_blocked.json        last event of streaming-failure-prompt-blocked-safety.txt
  stream_text.sse                     streaming-success-basic-reply-short.txt
  stream_function_call.sse            streaming-success-thinking-function-call-thought-summary-
                                      signature.txt
  stream_prompt_blocked.sse           streaming-failure-prompt-blocked-safety.txt
  error_api_key.json                  unary-failure-api-key.txt
  batch_embed.json                    the BatchEmbedContentsResponse shape from
                                      ai.google.dev/api/embeddings, vectors shortened; Google's
                                      test data has no recorded one
"""
from pathlib import Path

import orjson
import pytest

from gateway.errors import InvalidRequest
from gateway.providers import gemini, gemini_schema
from gateway.providers.base import StreamError, Target

FIXTURES = Path(__file__).parent / "fixtures" / "gemini"
TARGET = Target(kind="gemini", base_url="https://generativelanguage.googleapis.com/v1beta/",
                api_key="AIza-secret", model="gemini-2.0-flash")


def fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def sse_payloads(name: str) -> list[bytes]:
    """The `data:` payload of each event in a recorded .sse file."""
    events = fixture(name).decode().replace("\r\n", "\n").split("\n\n")
    payloads = []
    for event in events:
        lines = [line[5:].lstrip() for line in event.split("\n") if line.startswith("data:")]
        if lines:
            payloads.append("\n".join(lines).encode())
    return payloads


def run_stream(name: str, body: dict | None = None):
    """Feed a recorded stream; return the ChatStream and the OpenAI chunks it emitted, parsed."""
    stream = gemini.ChatStream(TARGET, body or {})
    chunks = []
    for payload in sse_payloads(name):
        assert not stream.done      # done only once the last event arrived
        chunks += [orjson.loads(out) for out in stream.feed(None, payload)]
    return stream, chunks


def sent(body: dict, stream: bool = False) -> dict:
    return orjson.loads(gemini.chat_request(TARGET, body, stream).body)


def reply(name: str) -> dict:
    return orjson.loads(gemini.chat_response(fixture(name), TARGET).body)


def user(text: str) -> dict:
    return {"role": "user", "content": text}


# Requests

def test_urls_and_key_in_header_only():
    plain = gemini.chat_request(TARGET, {"messages": [user("hi")]}, stream=False)
    streamed = gemini.chat_request(TARGET, {"messages": [user("hi")]}, stream=True)
    base = "https://generativelanguage.googleapis.com/v1beta/models/gemini-2.0-flash"
    assert plain.url == f"{base}:generateContent"
    assert streamed.url == f"{base}:streamGenerateContent?alt=sse"
    for req in (plain, streamed):
        assert req.method == "POST"
        assert req.headers["x-goog-api-key"] == "AIza-secret"
        assert "AIza-secret" not in req.url and "key=" not in req.url
        assert b"AIza-secret" not in req.body


def test_system_and_developer_become_system_instruction():
    out = sent({"messages": [{"role": "system", "content": "Be brief."},
                             {"role": "developer",
                              "content": [{"type": "text", "text": "No emoji."}]},
                             user("hi")]})
    assert out["systemInstruction"] == {"parts": [{"text": "Be brief."}, {"text": "No emoji."}]}
    assert out["contents"] == [{"role": "user", "parts": [{"text": "hi"}]}]


def test_roles_map_and_consecutive_turns_merge():
    assistant = {"role": "assistant", "content": "c"}
    out = sent({"messages": [user("a"), user("b"), assistant, user("d")]})
    assert out["contents"] == [
        {"role": "user", "parts": [{"text": "a"}, {"text": "b"}]},
        {"role": "model", "parts": [{"text": "c"}]},
        {"role": "user", "parts": [{"text": "d"}]},
    ]


def test_images_inline_and_by_url():
    webp = "https://example.com/cat.webp?size=big"
    content = [
        {"type": "text", "text": "Compare"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
        {"type": "image_url", "image_url": {"url": webp}},
        {"type": "image_url", "image_url": {"url": "https://example.com/photo"}},
    ]
    parts = sent({"messages": [{"role": "user", "content": content}]})["contents"][0]["parts"]
    assert parts == [
        {"text": "Compare"},
        {"inlineData": {"mimeType": "image/png", "data": "iVBORw0KGgo="}},
        {"fileData": {"mimeType": "image/webp", "fileUri": webp}},
        {"fileData": {"mimeType": "image/jpeg", "fileUri": "https://example.com/photo"}},
    ]


def test_unsupported_content_is_rejected():
    audio = {"type": "input_audio", "input_audio": {"data": "AAA", "format": "wav"}}
    with pytest.raises(InvalidRequest):
        sent({"messages": [{"role": "user", "content": [audio]}]})
    with pytest.raises(InvalidRequest):
        sent({"messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "file:///etc/passwd"}}]}]})


def tool_turns(result_a: str, result_b: str) -> list[dict]:
    calls = [{"id": "call_a", "type": "function",
              "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}},
             {"id": "call_b", "type": "function",
              "function": {"name": "get_time", "arguments": "{}"}}]
    return [user("Weather and time in Paris?"),
            {"role": "assistant", "content": None, "tool_calls": calls},
            {"role": "tool", "tool_call_id": "call_b", "content": result_b},
            {"role": "tool", "tool_call_id": "call_a", "content": result_a}]


def test_tool_calls_and_results_use_names_from_earlier_calls():
    out = sent({"messages": tool_turns('{"temp": 21}', "12:00")})
    model, results = out["contents"][1], out["contents"][2]
    assert model["role"] == "model"
    assert [p["functionCall"] for p in model["parts"]] == [
        {"name": "get_weather", "args": {"city": "Paris"}},
        {"name": "get_time", "args": {}}]
    # both results land in one user turn, matched to their calls by name
    assert results == {"role": "user", "parts": [
        {"functionResponse": {"name": "get_time", "response": {"content": {"result": "12:00"}}}},
        {"functionResponse": {"name": "get_weather", "response": {"content": {"temp": 21}}}}]}


def test_tool_result_for_unknown_call_is_rejected():
    with pytest.raises(InvalidRequest):
        sent({"messages": [user("hi"), {"role": "tool", "tool_call_id": "nope", "content": "x"}]})


def test_thought_signature_round_trips():
    """Gemini 3 wants each step's signature back; Google's OpenAI layer uses extra_content."""
    call = orjson.loads(gemini.chat_response(fixture("generate_function_call.json"), TARGET).body
                        )["choices"][0]["message"]["tool_calls"][0]
    signature = call["extra_content"]["google"]["thought_signature"]
    other = {"id": "call_x", "type": "function", "function": {"name": "now", "arguments": "{}"}}
    out = sent({"messages": [user("days to NYE?"),
                             {"role": "assistant", "content": None, "tool_calls": [call, other]}]})
    first, second = out["contents"][1]["parts"]
    assert first["thoughtSignature"] == signature
    assert "thoughtSignature" not in second


def test_unsigned_history_gets_the_documented_placeholder():
    out = sent({"messages": tool_turns("{}", "{}")})
    first, second = out["contents"][1]["parts"]
    assert first["thoughtSignature"] == "skip_thought_signature_validator"
    assert "thoughtSignature" not in second


def test_tools_become_declarations_with_clean_schemas():
    params = {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "city": {"type": "string", "description": "City", "format": "uri"},
            "unit": {"type": ["string", "null"], "enum": ["c", "f"]},
            "when": {"$ref": "#/$defs/Slot"},
        },
        "required": ["city"],
        "$defs": {"Slot": {"type": "object", "additionalProperties": False,
                           "properties": {"day": {"type": "string", "format": "date-time"}}}},
    }
    out = sent({"messages": [user("hi")], "tools": [
        {"type": "function", "function": {"name": "weather", "description": "Get weather",
                                          "parameters": params, "strict": True}},
        {"type": "function", "function": {"name": "now", "parameters": {"type": "object",
                                                                        "properties": {}}}}]})
    assert out["tools"] == [{"functionDeclarations": [
        {"name": "weather", "description": "Get weather", "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "description": "City"},
                "unit": {"type": "string", "nullable": True, "enum": ["c", "f"]},
                "when": {"type": "object",
                         "properties": {"day": {"type": "string", "format": "date-time"}}},
            },
            "required": ["city"]}},
        {"name": "now"},    # Gemini rejects an object schema without properties
    ]}]


def test_recursive_schema_is_cut():
    node = {"$ref": "#/$defs/Node", "$defs": {"Node": {"type": "object", "properties": {
        "children": {"type": "array", "items": {"$ref": "#/$defs/Node"}}}}}}
    cleaned = gemini_schema.clean_schema(node)
    assert cleaned["properties"]["children"]["items"] == {"type": "object"}


@pytest.mark.parametrize("choice, config", [
    ("auto", {"mode": "AUTO"}),
    ("none", {"mode": "NONE"}),
    ("required", {"mode": "ANY"}),
    ({"type": "function", "function": {"name": "weather"}},
     {"mode": "ANY", "allowedFunctionNames": ["weather"]}),
])
def test_tool_choice(choice, config):
    tools = [{"type": "function", "function": {"name": "weather"}}]
    out = sent({"messages": [user("hi")], "tools": tools, "tool_choice": choice})
    assert out["toolConfig"] == {"functionCallingConfig": config}


def test_generation_config():
    out = sent({"messages": [user("hi")], "temperature": 0.2, "top_p": 0.9, "max_tokens": 50,
                "stop": "END", "n": 2, "seed": 7, "stream_options": {"include_usage": True}})
    assert out["generationConfig"] == {"temperature": 0.2, "topP": 0.9, "candidateCount": 2,
                                       "seed": 7, "maxOutputTokens": 50, "stopSequences": ["END"]}
    out = sent({"messages": [user("hi")], "max_tokens": 50, "max_completion_tokens": 80,
                "stop": ["a", "b"]})
    assert out["generationConfig"] == {"maxOutputTokens": 80, "stopSequences": ["a", "b"]}
    assert "generationConfig" not in sent({"messages": [user("hi")]})


def test_response_format():
    out = sent({"messages": [user("hi")], "response_format": {"type": "json_object"}})
    assert out["generationConfig"] == {"responseMimeType": "application/json"}
    schema = {"type": "object", "additionalProperties": False,
              "properties": {"name": {"type": "string"}}, "required": ["name"]}
    json_schema = {"name": "person", "strict": True, "schema": schema}
    out = sent({"messages": [user("hi")],
                "response_format": {"type": "json_schema", "json_schema": json_schema}})
    assert out["generationConfig"] == {
        "responseMimeType": "application/json",
        "responseSchema": {"type": "object", "properties": {"name": {"type": "string"}},
                           "required": ["name"]}}


# Responses

def test_text_response():
    out = reply("generate_text.json")
    assert out["id"].startswith("chatcmpl-") and out["object"] == "chat.completion"
    assert isinstance(out["created"], int)
    assert out["model"] == "gemini-2.0-flash"
    assert out["choices"] == [{"index": 0, "logprobs": None, "finish_reason": "stop", "message": {
        "role": "assistant",
        "content": "Google's headquarters, also known as the Googleplex, is located in "
                   "**Mountain View, California**.\n", "refusal": None}}]
    assert out["usage"]["prompt_tokens"] == 7
    assert out["usage"]["completion_tokens"] == 22
    assert out["usage"]["total_tokens"] == 29


def test_function_call_response_hides_thoughts_and_counts_them():
    result = gemini.chat_response(fixture("generate_function_call.json"), TARGET)
    out = orjson.loads(result.body)
    assert out["id"] == "chatcmpl-38CHaLjMG6TujrEPtvTiuQk"
    assert out["model"] == "gemini-2.5-pro"
    choice = out["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] is None      # the thought summary is not the answer
    [call] = choice["message"]["tool_calls"]
    assert call["id"].startswith("call_") and call["type"] == "function"
    assert call["function"] == {"name": "now", "arguments": "{}"}
    # thinking tokens are billed as output
    assert (result.usage.prompt_tokens, result.usage.completion_tokens) == (38, 8 + 501)
    assert out["usage"]["total_tokens"] == 547
    assert out["usage"]["completion_tokens_details"] == {"reasoning_tokens": 501}


def test_parallel_function_calls():
    result = gemini.chat_response(fixture("generate_parallel_calls.json"), TARGET)
    calls = orjson.loads(result.body)["choices"][0]["message"]["tool_calls"]
    assert [c["function"]["name"] for c in calls] == ["sum", "multiply", "subtract"]
    assert orjson.loads(calls[1]["function"]["arguments"]) == {"y": 3, "x": 4}
    assert len({c["id"] for c in calls}) == 3
    assert result.usage is None


def test_function_call_id_from_gemini_is_kept():
    data = orjson.loads(fixture("generate_parallel_calls.json"))
    data["candidates"][0]["content"]["parts"][0]["functionCall"]["id"] = "fc-1"
    out = orjson.loads(gemini.chat_response(orjson.dumps(data), TARGET).body)
    assert out["choices"][0]["message"]["tool_calls"][0]["id"] == "fc-1"


@pytest.mark.parametrize("reason, expected", [
    ("STOP", "stop"), ("MAX_TOKENS", "length"), ("SAFETY", "content_filter"),
    ("RECITATION", "content_filter"), ("BLOCKLIST", "content_filter"),
    ("PROHIBITED_CONTENT", "content_filter"), ("SPII", "content_filter"),
    ("MALFORMED_FUNCTION_CALL", "stop"), ("OTHER", "stop"),
])
def test_finish_reasons(reason, expected):
    data = orjson.loads(fixture("generate_text.json"))
    data["candidates"][0]["finishReason"] = reason
    out = orjson.loads(gemini.chat_response(orjson.dumps(data), TARGET).body)
    assert out["choices"][0]["finish_reason"] == expected


def test_safety_stop_keeps_partial_text():
    out = reply("generate_safety.json")
    assert out["choices"][0]["finish_reason"] == "content_filter"
    assert out["choices"][0]["message"]["content"] == "Safety error incoming in 5, 4, 3, 2..."


def test_cached_tokens():
    result = gemini.chat_response(fixture("generate_implicit_caching.json"), TARGET)
    assert result.usage.cached_tokens == 11243
    assert result.usage.completion_tokens == 15 + 73
    out = orjson.loads(result.body)
    assert out["usage"]["prompt_tokens_details"] == {"cached_tokens": 11243}
    assert out["usage"]["total_tokens"] == 12101 == result.usage.total_tokens


@pytest.mark.parametrize("name", ["generate_prompt_blocked.json",
                                  "generate_only_prompt_feedback.json"])
def test_blocked_prompt(name):
    result = gemini.chat_response(fixture(name), TARGET)
    assert orjson.loads(result.body)["choices"] == [{
        "index": 0, "logprobs": None, "finish_reason": "content_filter",
        "message": {"role": "assistant", "content": None, "refusal": None}}]
    assert result.usage is None


@pytest.mark.parametrize("data", [b"not json", b"[1, 2]", b"{}", b'{"candidates": ["x"]}',
                                  fixture("error_api_key.json")])
def test_bad_response_raises_stream_error(data):
    with pytest.raises(StreamError):
        gemini.chat_response(data, TARGET)


# Streams

def test_text_stream():
    stream, chunks = run_stream("stream_text.sse")
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks) == \
        "The capital of Wyoming is **Cheyenne**.\n"
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert all("role" not in c["choices"][0]["delta"] for c in chunks[1:])
    assert [c["choices"][0]["finish_reason"] for c in chunks] == [None, None, "stop"]
    assert {(c["id"], c["created"], c["model"]) for c in chunks} == \
        {(chunks[0]["id"], chunks[0]["created"], "gemini-3.1-flash-lite")}
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert stream.done
    assert (stream.usage.prompt_tokens, stream.usage.completion_tokens) == (7, 10)
    assert stream.text_chars == len("The capital of Wyoming is **Cheyenne**.\n")
    assert all("usage" not in c for c in chunks)     # the client did not ask for it


def test_stream_usage_chunk_only_when_asked():
    _, chunks = run_stream("stream_text.sse", {"stream_options": {"include_usage": True}})
    usage_chunks = [c for c in chunks if "usage" in c]
    assert usage_chunks == [chunks[-1]]
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"]["prompt_tokens"] == 7
    assert chunks[-1]["usage"]["completion_tokens"] == 10
    assert chunks[-1]["usage"]["total_tokens"] == 17
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"


def test_function_call_stream():
    stream, chunks = run_stream("stream_function_call.sse",
                                {"stream_options": {"include_usage": True}})
    deltas = [c["choices"][0]["delta"] for c in chunks if c["choices"]]
    assert deltas[0] == {"role": "assistant", "refusal": None}    # the thought summaries stay hidden
    assert all("content" not in d for d in deltas)
    [call] = deltas[-1]["tool_calls"]
    assert call["index"] == 0 and call["type"] == "function" and call["id"].startswith("call_")
    assert call["function"] == {"name": "now", "arguments": "{}"}
    assert call["extra_content"]["google"]["thought_signature"].startswith("CiIBVKhc")
    assert chunks[-2]["choices"][0]["finish_reason"] == "tool_calls"
    assert chunks[0]["id"] == "chatcmpl-48SHaPHpHKbG-8YPtZCawAk"
    assert stream.done
    assert stream.usage.completion_tokens == 6 + 168
    assert chunks[-1]["usage"]["completion_tokens_details"] == {"reasoning_tokens": 168}


def test_stream_blocked_midway_ends_with_content_filter():
    stream, chunks = run_stream("stream_prompt_blocked.sse")
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks) == "text1text2text3"
    assert chunks[-1]["choices"][0] == {"index": 0, "delta": {}, "logprobs": None,
                                        "finish_reason": "content_filter"}
    assert stream.done


def test_stream_without_finish_is_not_done():
    stream = gemini.ChatStream(TARGET, {})
    for payload in sse_payloads("stream_text.sse")[:2]:
        stream.feed(None, payload)
    assert not stream.done      # a cut stream must not look like a clean stop


@pytest.mark.parametrize("payload", [
    b'{"error": {"code": 503, "message": "The model is overloaded.", "status": "UNAVAILABLE"}}',
    b'[{"error": {"code": 503, "message": "The model is overloaded.", "status": "UNAVAILABLE"}}]',
])
def test_stream_error_payload_raises(payload):
    stream = gemini.ChatStream(TARGET, {})
    stream.feed(None, sse_payloads("stream_text.sse")[0])
    with pytest.raises(StreamError, match="overloaded"):
        stream.feed(None, payload)


@pytest.mark.parametrize("payload", [b'{"candidates": [{"content": ', b"42",
                                     b'{"candidates": [{"content": {"parts": [7]}}]}'])
def test_stream_malformed_payload_raises(payload):
    with pytest.raises(StreamError):
        gemini.ChatStream(TARGET, {}).feed(None, payload)


# Embeddings

def test_embeddings_request():
    embed = Target("gemini", "https://generativelanguage.googleapis.com/v1beta", "AIza-secret",
                   "gemini-embedding-001")
    req = gemini.embeddings_request(embed, {"input": ["a", "b"], "dimensions": 768})
    assert req.url == ("https://generativelanguage.googleapis.com/v1beta/models/"
                       "gemini-embedding-001:batchEmbedContents")
    assert req.headers["x-goog-api-key"] == "AIza-secret" and "AIza-secret" not in req.url
    assert orjson.loads(req.body) == {"requests": [
        {"model": "models/gemini-embedding-001", "content": {"parts": [{"text": "a"}]},
         "outputDimensionality": 768},
        {"model": "models/gemini-embedding-001", "content": {"parts": [{"text": "b"}]},
         "outputDimensionality": 768}]}
    single = orjson.loads(gemini.embeddings_request(embed, {"input": "a"}).body)
    assert single == {"requests": [{"model": "models/gemini-embedding-001",
                                    "content": {"parts": [{"text": "a"}]}}]}


@pytest.mark.parametrize("tokens", [[1, 2, 3], [[1, 2], [3]], [], None])
def test_embeddings_reject_token_input(tokens):
    with pytest.raises(InvalidRequest) as e:
        gemini.embeddings_request(TARGET, {"input": tokens})
    assert e.value.param == "input"


def test_embeddings_response():
    result = gemini.embeddings_response(fixture("batch_embed.json"), TARGET)
    out = orjson.loads(result.body)
    assert out["object"] == "list" and out["model"] == "gemini-2.0-flash"
    assert [(d["object"], d["index"]) for d in out["data"]] == [("embedding", 0), ("embedding", 1)]
    assert out["data"][0]["embedding"][:2] == [0.008624583, -0.030451821]
    assert result.usage is None     # Gemini reports none; the gateway estimates
    with pytest.raises(StreamError):
        gemini.embeddings_response(b'{"embeddings": [{}]}', TARGET)


# Errors

def test_error_message():
    failure = gemini.error_message(400, fixture("error_api_key.json"))
    assert failure.message == "API key not valid. Please pass a valid API key."
    assert failure.code == "invalid_argument"
    wrapped = b'[{"error": {"code": 503, "message": "Overloaded.", "status": "UNAVAILABLE"}}]'
    assert gemini.error_message(503, wrapped).code == "unavailable"
    html = gemini.error_message(502, b"<html>Bad Gateway</html>")
    assert html.message == "upstream returned HTTP 502"
