"""AWS Bedrock Converse: OpenAI chat.completions in, /model/{id}/converse (or converse-stream)
upstream, OpenAI out. Streams are AWS event-stream frames, decoded in bedrock_stream.py.

Bedrock differs from OpenAI where it matters here: requests are SigV4-signed over the exact
bytes sent (or carry a Bedrock API key as a bearer token), the system prompt is a top-level
list, roles must alternate, tool results travel inside user turns, images are inline bytes
only, and the error kind is named by the `x-amzn-errortype` header rather than the status.
"""
from __future__ import annotations

import re
import secrets
import time
from urllib.parse import quote

import orjson
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from gateway.errors import InvalidRequest
from gateway.providers.base import (Reply, StreamError, Target, UpstreamFailure, UpstreamRequest,
                                    requested_model, tool_arguments, tool_call)
from gateway.providers.bedrock_stream import ChatStream, events, finish_reason, openai_usage, usage_from

__all__ = ["ChatStream", "events", "finish_reason", "chat_request", "chat_response", "error_message", "error_status",
           "embeddings_request", "embeddings_response", "usage_from"]

SERVICE = "bedrock"     # the SigV4 signing name of bedrock-runtime
DEFAULT_REGION = "us-east-1"
JSON_ONLY = "Answer with a single valid JSON object and nothing else: no prose, no code fences."
IMAGE_FORMATS = {"image/png": "png", "image/jpeg": "jpeg", "image/jpg": "jpeg",
                 "image/gif": "gif", "image/webp": "webp"}
# What the x-amzn-errortype names mean, where Bedrock's own status says less (or differs).
ERROR_STATUS = {"ThrottlingException": 429, "ServiceQuotaExceededException": 429,
                "ValidationException": 400, "AccessDeniedException": 403,
                "UnrecognizedClientException": 401, "InvalidSignatureException": 401,
                "IncompleteSignatureException": 401, "ExpiredTokenException": 401,
                "ModelNotReadyException": 503, "ServiceUnavailableException": 503,
                "ResourceNotFoundException": 404, "ModelTimeoutException": 504,
                "InternalServerException": 500, "ModelErrorException": 502}
_HOST_REGION = re.compile(r"bedrock-runtime(?:-fips)?\.([a-z0-9-]+)\.amazonaws\.com")


def region_of(target: Target) -> str:
    """The region to sign for: the deployment's, else the one in the endpoint's host name."""
    if target.region:
        return target.region
    found = _HOST_REGION.search(target.base_url)
    return found[1] if found else DEFAULT_REGION


def _url(target: Target, action: str) -> str:
    # Model ids carry ':' and inference-profile ARNs '/': the id is one path segment.
    return f"{target.base_url.rstrip('/')}/model/{quote(target.model, safe='')}/{action}"


def signed(target: Target, url: str, body: bytes, accept: str) -> UpstreamRequest:
    """The request with its auth: `ACCESS_KEY_ID:SECRET[:SESSION_TOKEN]` signs with SigV4 over
    these exact bytes; a key without a colon is a Bedrock API key, sent as a bearer token."""
    headers = {"content-type": "application/json", "accept": accept}
    key = target.api_key or ""
    if ":" not in key:
        return UpstreamRequest(url, {**headers, "authorization": f"Bearer {key}"}, body)
    access_key, _, rest = key.partition(":")
    secret, _, token = rest.partition(":")
    aws = AWSRequest(method="POST", url=url, data=body, headers=headers)
    SigV4Auth(Credentials(access_key, secret, token or None), SERVICE, region_of(target)).add_auth(aws)
    return UpstreamRequest(url, dict(aws.headers.items()), body)


def _text_of(content) -> str:
    if isinstance(content, str):
        return content
    return "".join(p.get("text") or "" for p in content or () if p.get("type") == "text")


def _image_block(part: dict) -> dict:
    image = part.get("image_url")
    url = image.get("url") if isinstance(image, dict) else image
    if not isinstance(url, str) or not url.startswith("data:"):
        raise InvalidRequest("Bedrock takes images as base64 data: URLs only", param="messages")
    header, _, data = url[5:].partition(",")
    media_type, _, encoding = header.partition(";")
    fmt = IMAGE_FORMATS.get(media_type.lower())
    if encoding != "base64" or not data or fmt is None:
        raise InvalidRequest("images must be base64 data URLs of png, jpeg, gif or webp",
                             param="messages")
    return {"image": {"format": fmt, "source": {"bytes": data}}}    # blobs travel as base64 in JSON


def _content_blocks(content) -> list[dict]:
    """OpenAI content -> Converse text/image blocks; empty text is dropped (Bedrock rejects it)."""
    if not content:
        return []
    if isinstance(content, str):
        return [{"text": content}]
    blocks = []
    for part in content:
        kind = part.get("type")
        if kind == "text":
            if part.get("text"):
                blocks.append({"text": part["text"]})
        elif kind == "image_url":
            blocks.append(_image_block(part))
        else:
            raise InvalidRequest(f"content part type {kind!r} is not supported for this model",
                                 param="messages")
    return blocks


def _tool_use(call: dict) -> dict:
    fn = call.get("function") or {}
    return {"toolUse": {"toolUseId": call.get("id"), "name": fn.get("name"), "input": tool_arguments(call)}}


def _tool_result(msg: dict) -> dict:
    text = _text_of(msg.get("content"))
    try:
        value = orjson.loads(text) if text else None
    except orjson.JSONDecodeError:
        value = None
    content = [{"json": value}] if isinstance(value, dict) else [{"text": text or " "}]
    return {"toolResult": {"toolUseId": msg.get("tool_call_id"), "content": content}}


def _turn(msg: dict) -> tuple[str, list[dict]]:
    role = msg.get("role")
    if role == "user":
        return "user", _content_blocks(msg.get("content"))
    if role == "assistant":
        return "assistant", (_content_blocks(msg.get("content"))
                             + [_tool_use(c) for c in msg.get("tool_calls") or ()])
    if role == "tool":
        return "user", [_tool_result(msg)]
    raise InvalidRequest(f"message role {role!r} is not supported", param="messages")


def _messages(messages: list[dict]) -> tuple[list[dict], list[dict]]:
    """System blocks, and turns with same-role neighbours merged (Converse wants alternation)."""
    system, turns = [], []
    for msg in messages:
        if msg.get("role") in ("system", "developer"):
            if text := _text_of(msg.get("content")):
                system.append({"text": text})
            continue
        role, blocks = _turn(msg)
        if not blocks:
            continue
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": role, "content": blocks})
    for turn in turns:
        if turn["role"] == "user":      # tool results first in their user turn
            turn["content"].sort(key=lambda b: "toolResult" not in b)
    return system, turns


def _tool_config(body: dict, turns: list[dict]) -> dict | None:
    choice = body.get("tool_choice")
    tools = body.get("tools") or []
    uses_tools = any("toolUse" in b or "toolResult" in b for t in turns for b in t["content"])
    # Converse has no "none": leave the tools out, unless the history needs their definitions.
    if not tools or (choice == "none" and not uses_tools):
        return None
    specs = []
    for tool in tools:
        fn = tool.get("function") if tool.get("type") == "function" else None
        if not fn or not fn.get("name"):
            raise InvalidRequest("only function tools are supported for this model", param="tools")
        spec = {"name": fn["name"],
                "inputSchema": {"json": fn.get("parameters") or {"type": "object", "properties": {}}}}
        if fn.get("description"):
            spec["description"] = fn["description"]
        specs.append({"toolSpec": spec})
    out: dict = {"tools": specs}
    if isinstance(choice, dict):
        name = (choice.get("function") or {}).get("name")
        if not name:
            raise InvalidRequest("tool_choice names no function", param="tool_choice")
        out["toolChoice"] = {"tool": {"name": name}}
    elif choice == "required":
        out["toolChoice"] = {"any": {}}
    elif choice == "auto":
        out["toolChoice"] = {"auto": {}}
    elif choice not in (None, "none"):
        raise InvalidRequest(f"tool_choice {choice!r} is not supported", param="tool_choice")
    return out


def _inference_config(body: dict) -> dict:
    out = {}
    if limit := body.get("max_completion_tokens") or body.get("max_tokens"):
        out["maxTokens"] = limit
    if body.get("temperature") is not None:
        out["temperature"] = min(body["temperature"], 1.0)     # Bedrock's range is 0..1
    if body.get("top_p") is not None:
        out["topP"] = body["top_p"]
    if stop := body.get("stop"):
        out["stopSequences"] = [stop] if isinstance(stop, str) else list(stop)
    return out


def chat_request(target: Target, body: dict, stream: bool) -> UpstreamRequest:
    """An OpenAI chat.completions body as a signed Converse (or ConverseStream) request."""
    if (body.get("n") or 1) > 1:
        raise InvalidRequest("Bedrock models return one choice per request; n must be 1", param="n")
    system, turns = _messages(body.get("messages") or [])
    if (body.get("response_format") or {}).get("type") in ("json_object", "json_schema"):
        system.append({"text": JSON_ONLY})      # Converse has no JSON mode
    out: dict = {"messages": turns}
    if system:
        out["system"] = system
    if config := _inference_config(body):
        out["inferenceConfig"] = config
    if tools := _tool_config(body, turns):
        out["toolConfig"] = tools
    if stream:
        return signed(target, _url(target, "converse-stream"), orjson.dumps(out),
                      "application/vnd.amazon.eventstream")
    return signed(target, _url(target, "converse"), orjson.dumps(out), "application/json")


def _tool_call(use: dict) -> dict:
    return tool_call(use.get("toolUseId"), use.get("name"), use.get("input"))


def chat_response(data: bytes, target: Target, body: dict | None = None) -> Reply:
    """A Converse answer as an OpenAI chat.completion (Bedrock names no id: we make one)."""
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError as e:
        raise StreamError(f"upstream sent invalid JSON: {e}") from None
    message = ((obj.get("output") or {}).get("message") if isinstance(obj, dict) else None)
    if not isinstance(message, dict) or not isinstance(message.get("content"), list):
        raise StreamError("upstream answer has no output message")
    blocks = [b for b in message["content"] if isinstance(b, dict)]
    text = "".join(b["text"] for b in blocks if isinstance(b.get("text"), str))
    calls = [_tool_call(b["toolUse"]) for b in blocks if isinstance(b.get("toolUse"), dict)]
    out_message: dict = {"role": "assistant", "content": text if text or not calls else None, "refusal": None}
    if calls:
        out_message["tool_calls"] = calls
    usage = usage_from(obj.get("usage"))
    out = {"id": f"chatcmpl-{secrets.token_hex(12)}", "object": "chat.completion",
           "created": int(time.time()), "model": requested_model(body, None, target),
           "choices": [{"index": 0, "message": out_message, "logprobs": None,
                        "finish_reason": finish_reason(obj.get("stopReason"))}]}
    if usage:
        out["usage"] = openai_usage(usage)
    return Reply(orjson.dumps(out), usage)


def _no_embeddings() -> InvalidRequest:
    return InvalidRequest("Bedrock embeddings are not served through Converse; "
                          "pick an embeddings model of another provider", param="model")


def embeddings_request(target: Target, body: dict) -> UpstreamRequest:
    """Always refuses: Converse has no embeddings (saving such a deployment is refused too)."""
    raise _no_embeddings()


def embeddings_response(data: bytes, target: Target, body: dict | None = None) -> Reply:
    """Always refuses: Converse has no embeddings."""
    raise _no_embeddings()


def error_type(headers) -> str:
    """The `x-amzn-errortype` name without its namespace (`ThrottlingException:http://...`)."""
    value = (headers.get("x-amzn-errortype") or "") if headers is not None else ""
    return value.partition(":")[0].strip()


def error_status(status: int, headers) -> int:
    """The status Bedrock's error type stands for (it sends 403 for a bad signature, say)."""
    return ERROR_STATUS.get(error_type(headers), status)


def error_message(status: int, data: bytes) -> UpstreamFailure:
    """Bedrock's own message, from {"message": ...} (or "Message", as some AWS services spell it)."""
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError:
        obj = None
    if isinstance(obj, dict):
        message = obj.get("message") or obj.get("Message")
        if message:
            kind = str(obj.get("__type") or "").rpartition("#")[2] or None
            return UpstreamFailure(str(message), code=kind)
    return UpstreamFailure(f"upstream returned HTTP {status}")
