"""AWS Bedrock Converse: the mock speaks the real format (AWS's own boto3 client talks to it),
and the adapter reads payloads from AWS's documentation. The gateway end to end through the
mock is in test_bedrock_gateway.py.

Fixtures in tests/fixtures/bedrock/, from the Bedrock user guide's "Call a tool with the
Converse API" (docs.aws.amazon.com/bedrock/latest/userguide/tool-use-inference-call.html):
  tool_request.json         step 1: the top_song tool definition, the user message, the forced toolChoice
  tool_use_response.json    step 2: the model's toolUse answer (stopReason tool_use)
  tool_result_message.json  step 3: the user message carrying the toolResult
and shaped after the Converse API reference (Converse response, ConverseStream event members):
  text_response.json        a boto3 converse() answer as the Nova guide's "Response structure
                            highlights" shows it (ResponseMetadata, reasoningContent, text,
                            usage with cacheReadInputTokens, metrics)
  stream_tool_use.json      ConverseStream events as [event type, member] pairs, text then a
                            toolUse block; tests encode them as event-stream frames.
"""
from __future__ import annotations

import json
from pathlib import Path

import boto3
import botocore.exceptions
import pytest
from botocore.config import Config
from botocore.eventstream import ChecksumMismatch, EventStreamBuffer
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from gateway.errors import InvalidRequest
from gateway.mock_upstream import bedrock as mock_bedrock
from gateway.providers import bedrock_converse as bedrock
from gateway.providers.base import StreamError, Target
from gateway.providers.sse import EventTooLarge

FIXTURES = Path(__file__).parent / "fixtures" / "bedrock"
MODEL = "anthropic.claude-3-5-sonnet-20240620-v1:0"
KEY = f"{mock_bedrock.ACCESS_KEY_ID}:{mock_bedrock.SECRET_ACCESS_KEY}"
TARGET = Target(kind="bedrock", base_url="https://bedrock-runtime.us-west-2.amazonaws.com",
                api_key=KEY, model=MODEL, region="us-west-2")
TOP_SONG = {"type": "function", "function": {
    "name": "top_song", "description": "Get the most popular song played on a radio station.",
    "parameters": {"type": "object", "properties": {"sign": {
        "type": "string", "description": "The call sign for the radio station for which you want "
                                         "the most popular song. Example calls signs are WZPZ and WKRP."}},
        "required": ["sign"]}}}
PNG = ("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==")


def fixture(name: str):
    return json.loads((FIXTURES / name).read_text())


def client(mock: str, secret: str = mock_bedrock.SECRET_ACCESS_KEY, key_id: str = mock_bedrock.ACCESS_KEY_ID):
    return boto3.client("bedrock-runtime", endpoint_url=mock, region_name="us-east-1",
                        aws_access_key_id=key_id, aws_secret_access_key=secret,
                        config=Config(retries={"max_attempts": 1}))


def user(text: str) -> list[dict]:
    return [{"role": "user", "content": [{"text": text}]}]


def stream_frames(name: str) -> bytes:
    return b"".join(mock_bedrock.event(kind, payload) for kind, payload in fixture(name))


def feed_all(stream, raw: bytes, pieces: int = 7) -> list[dict]:
    """Split `raw` at odd places (frames span chunks), decode, feed; every chunk must parse."""
    size = max(1, len(raw) // pieces)
    chunks = [raw[i:i + size] for i in range(0, len(raw), size)]
    out = []
    for event, data in bedrock.events(iter(chunks), 1 << 20):
        for payload in stream.feed(event, data):
            ChatCompletionChunk.model_validate_json(payload)
            out.append(json.loads(payload))
    return out


# --- the mock, as AWS's own SDK sees it -------------------------------------------------------

def test_boto3_converse_gets_text_from_the_mock(mock):
    r = client(mock).converse(modelId=MODEL, messages=user("hello there"),
                              system=[{"text": "Be brief."}], inferenceConfig={"maxTokens": 50})
    assert r["output"]["message"] == {"role": "assistant", "content": [{"text": "Echo: hello there"}]}
    assert r["stopReason"] == "end_turn"
    assert r["usage"] == {"inputTokens": 10, "outputTokens": 3, "totalTokens": 13}


def test_boto3_converse_gets_tool_use_from_the_mock(mock):
    request = fixture("tool_request.json")
    r = client(mock).converse(modelId=MODEL, **request)
    [block] = r["output"]["message"]["content"]
    assert r["stopReason"] == "tool_use"
    assert block["toolUse"]["name"] == "top_song"
    assert block["toolUse"]["input"] == {"query": "What is the most popular song on WZPZ?"}


def test_boto3_converse_stream_decodes_the_mocks_frames(mock):
    r = client(mock).converse_stream(modelId="us." + MODEL, messages=user("one two"))
    events = list(r["stream"])
    assert [next(iter(e)) for e in events] == (
        ["messageStart"] + ["contentBlockDelta"] * 3 + ["contentBlockStop", "messageStop", "metadata"])
    text = "".join(e["contentBlockDelta"]["delta"]["text"] for e in events if "contentBlockDelta" in e)
    assert text == "Echo: one two"
    assert events[-1]["metadata"]["usage"]["outputTokens"] == 3


def test_boto3_converse_stream_tool_use(mock):
    r = client(mock).converse_stream(modelId=MODEL, **fixture("tool_request.json"))
    events = list(r["stream"])
    start = next(e["contentBlockStart"] for e in events if "contentBlockStart" in e)
    assert start["start"]["toolUse"]["name"] == "top_song"
    arguments = "".join(e["contentBlockDelta"]["delta"]["toolUse"]["input"]
                        for e in events if "contentBlockDelta" in e)
    assert json.loads(arguments) == {"query": "What is the most popular song on WZPZ?"}
    assert next(e for e in events if "messageStop" in e)["messageStop"]["stopReason"] == "tool_use"


def test_boto3_sees_throttling_as_its_own_exception(mock):
    bedrock_client = client(mock)
    with pytest.raises(bedrock_client.exceptions.ThrottlingException) as caught:
        bedrock_client.converse(modelId="echo+fail=429", messages=user("x"))
    assert caught.value.response["Error"]["Message"] == "mock failure 429"


@pytest.mark.parametrize("who, code", [
    ({"secret": "not-the-secret"}, "InvalidSignatureException"),
    ({"key_id": "AKIAUNKNOWN000000000"}, "UnrecognizedClientException")])
def test_mock_checks_the_signature(mock, who, code):
    with pytest.raises(botocore.exceptions.ClientError) as caught:
        client(mock, **who).converse(modelId=MODEL, messages=user("x"))
    assert caught.value.response["Error"]["Code"] == code
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403


def test_frame_encoder_round_trips_through_botocores_decoder():
    buffer = EventStreamBuffer()
    buffer.add_data(mock_bedrock.event("contentBlockDelta", {"delta": {"text": "héllo"}})
                    + mock_bedrock.exception("throttlingException", "slow down"))
    first, second = list(buffer)
    assert first.headers == {":event-type": "contentBlockDelta", ":content-type": "application/json",
                             ":message-type": "event"}
    assert json.loads(first.payload) == {"delta": {"text": "héllo"}}
    assert second.headers[":exception-type"] == "throttlingException"
    broken = EventStreamBuffer()
    broken.add_data(mock_bedrock.VENDOR.bad_frame)
    with pytest.raises(ChecksumMismatch):
        list(broken)


# --- the adapter: requests ----------------------------------------------------------------------

def sent(body: dict, stream: bool = False, target: Target = TARGET) -> tuple[object, dict]:
    req = bedrock.chat_request(target, body, stream)
    return req, json.loads(req.body)


def test_request_url_encodes_the_model_id_and_signs_with_sigv4():
    req, _ = sent({"messages": [{"role": "user", "content": "hi"}]})
    assert req.url == ("https://bedrock-runtime.us-west-2.amazonaws.com/model/"
                       "anthropic.claude-3-5-sonnet-20240620-v1%3A0/converse")
    auth = req.headers["Authorization"]
    assert auth.startswith(f"AWS4-HMAC-SHA256 Credential={mock_bedrock.ACCESS_KEY_ID}/")
    assert "/us-west-2/bedrock/aws4_request" in auth and "X-Amz-Date" in req.headers
    stream_req, _ = sent({"messages": [{"role": "user", "content": "hi"}]}, stream=True)
    assert stream_req.url.endswith("%3A0/converse-stream")
    assert stream_req.headers["accept"] == "application/vnd.amazon.eventstream"


def test_signature_covers_the_exact_bytes_sent():
    req, _ = sent({"messages": [{"role": "user", "content": "hi"}]})
    environ = {"REQUEST_METHOD": "POST", "HTTP_HOST": "bedrock-runtime.us-west-2.amazonaws.com",
               "RAW_URI": req.url.split(".com", 1)[1], "mock.raw_body": req.body,
               **{("CONTENT_TYPE" if k.lower() == "content-type" else "HTTP_" + k.upper().replace("-", "_")): v
                  for k, v in req.headers.items()}}
    assert mock_bedrock.authorized(dict(environ), {})
    assert not mock_bedrock.authorized({**environ, "mock.raw_body": req.body + b" "}, {})


def test_session_token_is_signed_and_a_key_without_colon_is_a_bearer_api_key():
    with_token = Target(kind="bedrock", base_url=TARGET.base_url, api_key=KEY + ":FwoGZXIvYXdzEXAMPLE",
                        model=MODEL, region="us-west-2")
    req, _ = sent({"messages": [{"role": "user", "content": "hi"}]}, target=with_token)
    assert req.headers["X-Amz-Security-Token"] == "FwoGZXIvYXdzEXAMPLE"
    assert "x-amz-security-token" in req.headers["Authorization"]
    bearer = Target(kind="bedrock", base_url=TARGET.base_url, api_key=mock_bedrock.API_KEY, model=MODEL)
    req, _ = sent({"messages": [{"role": "user", "content": "hi"}]}, target=bearer)
    assert req.headers["authorization"] == f"Bearer {mock_bedrock.API_KEY}"


def test_signing_region_comes_from_the_host_when_the_target_has_none():
    target = Target(kind="bedrock", base_url="https://bedrock-runtime.eu-central-1.amazonaws.com",
                    api_key=KEY, model=MODEL)
    assert bedrock.region_of(target) == "eu-central-1"
    assert bedrock.region_of(Target("bedrock", "http://127.0.0.1:9", KEY, MODEL)) == "us-east-1"


def test_tool_request_matches_the_documented_one():
    doc = fixture("tool_request.json")
    _, body = sent({"messages": [{"role": "user", "content": "What is the most popular song on WZPZ?"}],
                    "tools": [TOP_SONG], "tool_choice": {"type": "function", "function": {"name": "top_song"}}})
    assert body == doc


def test_tool_calls_and_results_translate_like_the_docs():
    _, body = sent({"tools": [TOP_SONG], "messages": [
        {"role": "user", "content": "What is the most popular song on WZPZ?"},
        {"role": "assistant", "content": None, "tool_calls": [{"id": "tooluse_kZJMlvQmRJ6eAyJE5GIl7Q",
         "type": "function", "function": {"name": "top_song", "arguments": '{"sign": "WZPZ"}'}}]},
        {"role": "tool", "tool_call_id": "tooluse_kZJMlvQmRJ6eAyJE5GIl7Q",
         "content": '{"song": "Elemental Hotel", "artist": "8 Storey Hike"}'}]})
    assert body["messages"][1] == {"role": "assistant", "content": [{"toolUse": {
        "toolUseId": "tooluse_kZJMlvQmRJ6eAyJE5GIl7Q", "name": "top_song", "input": {"sign": "WZPZ"}}}]}
    assert body["messages"][2] == fixture("tool_result_message.json")


def test_system_inference_config_and_images():
    _, body = sent({"messages": [
        {"role": "system", "content": "Be brief."}, {"role": "developer", "content": "Be kind."},
        {"role": "user", "content": [{"type": "text", "text": "What is this?"},
                                     {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}}]},
        {"role": "user", "content": "Answer in French."}],
        "max_tokens": 100, "temperature": 1.5, "top_p": 0.9, "stop": "END"})
    assert body["system"] == [{"text": "Be brief."}, {"text": "Be kind."}]
    assert body["messages"] == [{"role": "user", "content": [
        {"text": "What is this?"}, {"image": {"format": "png", "source": {"bytes": PNG}}},
        {"text": "Answer in French."}]}]
    assert body["inferenceConfig"] == {"maxTokens": 100, "temperature": 1.0, "topP": 0.9,
                                       "stopSequences": ["END"]}


@pytest.mark.parametrize("choice, expected", [
    ("auto", {"auto": {}}), ("required", {"any": {}}), (None, None)])
def test_tool_choice_maps_to_converse(choice, expected):
    _, body = sent({"messages": [{"role": "user", "content": "hi"}], "tools": [TOP_SONG],
                    "tool_choice": choice})
    assert body["toolConfig"].get("toolChoice") == expected


def test_tool_choice_none_leaves_tools_out_unless_the_history_uses_them():
    _, body = sent({"messages": [{"role": "user", "content": "hi"}], "tools": [TOP_SONG], "tool_choice": "none"})
    assert "toolConfig" not in body
    _, body = sent({"tools": [TOP_SONG], "tool_choice": "none", "messages": [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "tool_calls": [{"id": "t1", "type": "function",
                                              "function": {"name": "top_song", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "t1", "content": "no result"}]})
    assert body["toolConfig"] == {"tools": [{"toolSpec": {
        "name": "top_song", "description": TOP_SONG["function"]["description"],
        "inputSchema": {"json": TOP_SONG["function"]["parameters"]}}}]}
    assert body["messages"][2]["content"] == [{"toolResult": {"toolUseId": "t1", "content": [{"text": "no result"}]}}]


@pytest.mark.parametrize("body", [
    {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://x/y.png"}}]}]},
    {"messages": [{"role": "user", "content": [{"type": "image_url",
                                                "image_url": {"url": "data:image/bmp;base64,AAAA"}}]}]},
    {"messages": [{"role": "user", "content": "hi"}], "n": 2}])
def test_what_converse_cannot_take_is_refused(body):
    with pytest.raises(InvalidRequest):
        bedrock.chat_request(TARGET, body, False)


# --- the adapter: answers -----------------------------------------------------------------------

def test_documented_tool_use_answer_becomes_tool_calls():
    reply = bedrock.chat_response(json.dumps(fixture("tool_use_response.json")).encode(), TARGET)
    out = ChatCompletion.model_validate_json(reply.body)
    assert out.choices[0].finish_reason == "tool_calls" and out.choices[0].message.content is None
    [call] = out.choices[0].message.tool_calls
    assert (call.id, call.function.name, json.loads(call.function.arguments)) == (
        "tooluse_kZJMlvQmRJ6eAyJE5GIl7Q", "top_song", {"sign": "WZPZ"})
    assert reply.usage is None


def test_text_answer_translates_with_cached_input():
    reply = bedrock.chat_response(json.dumps(fixture("text_response.json")).encode(), TARGET)
    out = ChatCompletion.model_validate_json(reply.body)
    assert out.choices[0].message.content == "Hello! How can I help you today?"
    assert out.model == MODEL and out.choices[0].finish_reason == "stop"
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens, reply.usage.cached_tokens) == (112, 10, 100)
    assert out.usage.prompt_tokens_details.cached_tokens == 100


@pytest.mark.parametrize("stop, finish", [
    ("end_turn", "stop"), ("stop_sequence", "stop"), ("max_tokens", "length"), ("tool_use", "tool_calls"),
    ("content_filtered", "content_filter"), ("guardrail_intervened", "content_filter")])
def test_stop_reasons_map_to_finish_reasons(stop, finish):
    data = json.dumps({"output": {"message": {"role": "assistant", "content": [{"text": "x"}]}},
                       "stopReason": stop}).encode()
    assert json.loads(bedrock.chat_response(data, TARGET).body)["choices"][0]["finish_reason"] == finish


@pytest.mark.parametrize("data", [b"{not json", b'{"output": {}}', b"[]"])
def test_unreadable_answer_raises_stream_error(data):
    with pytest.raises(StreamError):
        bedrock.chat_response(data, TARGET)


def test_documented_stream_events_translate():
    stream = bedrock.ChatStream(TARGET, {"stream_options": {"include_usage": True}})
    chunks = feed_all(stream, stream_frames("stream_tool_use.json"))
    assert stream.done
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"]) == (
        "I'll look up the top song on WZPZ.")
    calls = [p for c in chunks if c["choices"] for p in c["choices"][0]["delta"].get("tool_calls") or ()]
    assert calls[0]["id"] == "tooluse_kZJMlvQmRJ6eAyJE5GIl7Q" and calls[0]["index"] == 0
    assert json.loads("".join(p["function"]["arguments"] for p in calls)) == {"sign": "WZPZ"}
    assert [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]][-1] == "tool_calls"
    assert chunks[-1]["usage"]["total_tokens"] == 462 and len({c["id"] for c in chunks}) == 1
    assert (stream.usage.prompt_tokens, stream.usage.completion_tokens) == (390, 72)


def test_exception_frame_raises_stream_error_with_its_message():
    stream = bedrock.ChatStream(TARGET, {})
    raw = mock_bedrock.event("messageStart", {"role": "assistant"}) + mock_bedrock.exception(
        "modelStreamErrorException", "The model stopped unexpectedly")
    with pytest.raises(StreamError, match="modelStreamErrorException: The model stopped unexpectedly"):
        feed_all(stream, raw, pieces=1)


@pytest.mark.parametrize("raw", [mock_bedrock.VENDOR.bad_frame, mock_bedrock.text_frame("cut")[:-3]])
def test_broken_or_cut_frames_raise_stream_error(raw):
    with pytest.raises(StreamError):
        list(bedrock.events(iter([raw]), 1 << 20))


def test_frames_over_the_cap_are_refused():
    with pytest.raises(EventTooLarge):
        list(bedrock.events(iter([mock_bedrock.text_frame("x" * 5000)[:3000]]), 1000))


# --- the adapter: errors ------------------------------------------------------------------------

@pytest.mark.parametrize("kind, status, expected", [
    ("ThrottlingException", 429, 429), ("ValidationException", 400, 400),
    ("AccessDeniedException", 403, 403), ("UnrecognizedClientException", 403, 401),
    ("InvalidSignatureException", 403, 401), ("ModelNotReadyException", 429, 503),
    ("ServiceUnavailableException", 503, 503), ("ResourceNotFoundException", 404, 404),
    ("SomethingNew", 418, 418)])
def test_error_type_header_decides_the_status(kind, status, expected):
    headers = {"x-amzn-errortype": f"{kind}:http://internal.amazon.com/coral/com.amazon.bedrock/"}
    assert bedrock.error_status(status, headers) == expected


def test_error_message_reads_bedrocks_body():
    assert bedrock.error_message(400, b'{"message": "Malformed input request"}').message == (
        "Malformed input request")
    assert bedrock.error_message(502, b"<html>").message == "upstream returned HTTP 502"


def test_embeddings_are_not_offered():
    with pytest.raises(InvalidRequest):
        bedrock.embeddings_request(TARGET, {"input": "x"})
