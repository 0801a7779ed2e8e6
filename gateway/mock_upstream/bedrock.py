"""AWS Bedrock Converse: POST /model/{modelId}/converse and /converse-stream, whole JSON or
AWS event-stream frames. Requests must carry a valid SigV4 signature for the known test
credentials (recomputed with botocore) or the known Bedrock API key as a bearer token."""
from __future__ import annotations

import hmac
import re
import struct
import zlib
from typing import Iterator
from urllib.parse import quote

import orjson

from gateway.mock_upstream.answers import Answer, last_user_text, make_answer, new_id
from gateway.mock_upstream.base import Call, Result, Vendor, json_result

# The credentials the mock knows; anything else is refused as AWS would.
ACCESS_KEY_ID = "AKIAMOCKBEDROCK00001"
SECRET_ACCESS_KEY = "mock/bedrock+Secret0000000000000000000000"
API_KEY = "ABSKbW9jay1iZWRyb2NrLWFwaS1rZXk="        # a Bedrock API key (bearer token)
EVENT_STREAM = "application/vnd.amazon.eventstream"

_TYPES = {400: "ValidationException", 403: "AccessDeniedException", 404: "ResourceNotFoundException",
          408: "ModelTimeoutException", 424: "ModelErrorException", 429: "ThrottlingException",
          500: "InternalServerException", 503: "ServiceUnavailableException"}
_NAMESPACE = "http://internal.amazon.com/coral/com.amazon.bedrock/"
_AUTH = re.compile(r"AWS4-HMAC-SHA256 Credential=([^/]+)/(\d{8})/([^/]+)/([^/]+)/aws4_request,\s*"
                   r"SignedHeaders=([^,]+),\s*Signature=([0-9a-f]+)")
_BAD_TOKEN = "The security token included in the request is invalid."
_BAD_SIGNATURE = ("The request signature we calculated does not match the signature you provided. "
                  "Check your AWS Secret Access Key and signing method.")


def error_type(status: int) -> str:
    """Bedrock's error type for `status`."""
    return _TYPES.get(status, "InternalServerException" if status >= 500 else "ValidationException")


def error(status: int, message: str) -> dict:
    """Bedrock's error body: just the message; the type travels in x-amzn-ErrorType."""
    return {"message": message}


def error_headers(status: int, kind: str | None = None) -> list[tuple[str, str]]:
    """The headers that name the error's type, as Bedrock's restJson1 protocol sends them."""
    return [("x-amzn-ErrorType", f"{kind or error_type(status)}:{_NAMESPACE}"),
            ("x-amzn-RequestId", new_id(""))]


def _auth_error(environ: dict) -> str | None:
    """Why the request's credentials fail (the error type), or None when they are good."""
    # botocore imports ssl: only here, so `python -m gateway.mock_upstream` patches first.
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    auth = environ.get("HTTP_AUTHORIZATION", "")
    if auth[:7].lower() == "bearer ":
        return None if hmac.compare_digest(auth[7:].strip(), API_KEY) else "UnrecognizedClientException"
    found = _AUTH.fullmatch(auth.strip())
    if not found:
        return "MissingAuthenticationTokenException" if not auth else "IncompleteSignatureException"
    access_key, _, region, service, signed_names, signature = found.groups()
    if access_key != ACCESS_KEY_ID:
        return "UnrecognizedClientException"
    amz_date = environ.get("HTTP_X_AMZ_DATE", "")
    headers = {}
    for name in signed_names.split(";"):
        key = "CONTENT_TYPE" if name == "content-type" else "CONTENT_LENGTH" if name == "content-length" \
            else "HTTP_" + name.upper().replace("-", "_")
        headers[name] = environ.get(key, "")
    # The path exactly as sent: PATH_INFO comes percent-decoded, and SigV4 signs the encoded form.
    raw = environ.get("RAW_URI") or quote(environ.get("PATH_INFO", "/"), safe="/~")
    request = AWSRequest(method=environ.get("REQUEST_METHOD", "POST"),
                         url=f"http://{environ.get('HTTP_HOST', 'localhost')}{raw}",
                         data=environ.get("mock.raw_body", b""), headers=headers)
    request.context["timestamp"] = amz_date
    signer = SigV4Auth(Credentials(ACCESS_KEY_ID, SECRET_ACCESS_KEY,
                                   environ.get("HTTP_X_AMZ_SECURITY_TOKEN") or None), service, region)
    expected = signer.signature(signer.string_to_sign(request, signer.canonical_request(request)), request)
    ok = hmac.compare_digest(expected, signature) and service == "bedrock"
    return None if ok else "InvalidSignatureException"


def authorized(environ: dict, query: dict) -> bool:
    """A valid SigV4 signature for the test credentials, or the test API key as a bearer token."""
    environ["mock.auth_error"] = _auth_error(environ)
    return environ["mock.auth_error"] is None


def auth_failure(environ: dict) -> Result:
    """403 with the type saying what was wrong, as AWS answers a bad key or signature."""
    kind = environ.get("mock.auth_error") or "UnrecognizedClientException"
    message = _BAD_SIGNATURE if kind == "InvalidSignatureException" else _BAD_TOKEN
    result = json_result(error(403, message), 403)
    result.headers.extend(error_headers(403, kind))
    return result


def frame(headers: dict[str, str], payload: bytes) -> bytes:
    """One event-stream message: prelude (total length, headers length, CRC32 of those 8 bytes),
    string-typed headers, payload, and a CRC32 of everything before it. botocore has a decoder
    only, so this encoder is ours (tests check it against botocore's EventStreamBuffer)."""
    head = b"".join(struct.pack("!B", len(k)) + k.encode() + b"\x07" + struct.pack("!H", len(v.encode()))
                    + v.encode() for k, v in headers.items())
    prelude = struct.pack("!II", 12 + len(head) + len(payload) + 4, len(head))
    prelude += struct.pack("!I", zlib.crc32(prelude))
    message = prelude + head + payload
    return message + struct.pack("!I", zlib.crc32(message))


def event(kind: str, payload: dict) -> bytes:
    """An event frame such as contentBlockDelta."""
    return frame({":event-type": kind, ":content-type": "application/json",
                  ":message-type": "event"}, orjson.dumps(payload))


def exception(kind: str, message: str) -> bytes:
    """An in-stream exception frame such as throttlingException."""
    return frame({":exception-type": kind, ":content-type": "application/json",
                  ":message-type": "exception"}, orjson.dumps({"message": message}))


def text_frame(text: str) -> bytes:
    """One contentBlockDelta event carrying `text`."""
    return event("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": text}})


def _bad_frame() -> bytes:
    good = text_frame("corrupt")
    return good[:-4] + struct.pack("!I", (zlib.crc32(good[:-4]) + 1) & 0xFFFFFFFF)


VENDOR = Vendor(error, authorized, 403, _BAD_TOKEN, _bad_frame(), text_frame,
                error_headers=error_headers, auth_failure=auth_failure)


def _texts(content) -> str:
    return " ".join(b["text"] for b in content or () if isinstance(b, dict) and isinstance(b.get("text"), str))


def _tool(body: dict, last_has_text: bool) -> str | None:
    config = body.get("toolConfig") or {}
    tools = [t.get("toolSpec") or {} for t in config.get("tools") or ()]
    messages = body.get("messages") or []
    if not tools or not messages or messages[-1].get("role") != "user" or not last_has_text:
        return None
    chosen = (config.get("toolChoice") or {}).get("tool")
    return chosen.get("name") if isinstance(chosen, dict) else tools[0].get("name")


def _answer(body: dict) -> Answer:
    messages = body.get("messages") or []
    texts = [_texts(m.get("content")) for m in messages]
    last_user = last_user_text(messages, texts)
    if body.get("system"):
        texts.append(_texts(body["system"]))
    tool = _tool(body, bool(messages and texts[len(messages) - 1]))
    return make_answer(texts, last_user, (body.get("inferenceConfig") or {}).get("maxTokens"), tool)


def _stop(answer: Answer) -> str:
    return "tool_use" if answer.tool else "max_tokens" if answer.truncated else "end_turn"


def _usage(answer: Answer) -> dict:
    return {"inputTokens": answer.prompt_tokens, "outputTokens": answer.completion_tokens,
            "totalTokens": answer.prompt_tokens + answer.completion_tokens}


def converse(call: Call) -> Result:
    """POST /model/{modelId}/converse."""
    answer = _answer(call.body)
    if answer.tool:
        content = [{"toolUse": {"toolUseId": new_id("tooluse_"), "name": answer.tool,
                                "input": orjson.loads(answer.arguments)}}]
    else:
        content = [{"text": answer.text}]
    result = json_result({"output": {"message": {"role": "assistant", "content": content}},
                          "stopReason": _stop(answer), "usage": _usage(answer),
                          "metrics": {"latencyMs": 1}})
    result.headers.append(("x-amzn-RequestId", new_id("")))
    return result


def converse_stream(call: Call) -> Result:
    """POST /model/{modelId}/converse-stream."""
    return Result(frames=_frames(_answer(call.body)), content_type=EVENT_STREAM,
                  headers=[("x-amzn-RequestId", new_id(""))])


def _frames(answer: Answer) -> Iterator[tuple[bytes, bool]]:
    yield event("messageStart", {"role": "assistant"}), False
    if answer.tool:
        start = {"toolUse": {"toolUseId": new_id("tooluse_"), "name": answer.tool}}
        yield event("contentBlockStart", {"contentBlockIndex": 0, "start": start}), False
        deltas = [{"toolUse": {"input": piece}} for piece in answer.argument_pieces()]
    else:
        deltas = [{"text": word} for word in answer.words]
    for delta in deltas:
        yield event("contentBlockDelta", {"contentBlockIndex": 0, "delta": delta}), True
    yield event("contentBlockStop", {"contentBlockIndex": 0}), False
    yield event("messageStop", {"stopReason": _stop(answer)}), False
    yield event("metadata", {"usage": _usage(answer), "metrics": {"latencyMs": 1}}), False
