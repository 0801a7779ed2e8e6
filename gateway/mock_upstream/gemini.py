"""Gemini: generateContent, streamGenerateContent?alt=sse, embedContent, batchEmbedContents."""
from __future__ import annotations

from typing import Iterator

import orjson

from gateway.mock_upstream.answers import (DEFAULT_DIMENSIONS, Answer, embedding, last_user_text,
                                           make_answer, new_id, text_of)
from gateway.mock_upstream.base import Call, Result, Vendor, json_result

_STATUSES = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED",
             404: "NOT_FOUND", 409: "ABORTED", 429: "RESOURCE_EXHAUSTED",
             499: "CANCELLED", 500: "INTERNAL", 501: "NOT_IMPLEMENTED",
             503: "UNAVAILABLE", 504: "DEADLINE_EXCEEDED"}


def error(status: int, message: str) -> dict:
    """Google's error body for `status`."""
    return {"error": {"code": status, "message": message,
                      "status": _STATUSES.get(status, "UNKNOWN")}}


def authorized(environ: dict, query: dict) -> bool:
    """An x-goog-api-key header or a `key` query parameter."""
    return bool(environ.get("HTTP_X_GOOG_API_KEY") or query.get("key"))


def text_frame(text: str) -> bytes:
    """One streamed GenerateContentResponse carrying `text`."""
    response = {"candidates": [{"content": {"role": "model", "parts": [{"text": text}]}, "index": 0}]}
    return b"data: " + orjson.dumps(response) + b"\r\n\r\n"


VENDOR = Vendor(error, authorized, 403,
                "Method doesn't allow unregistered callers (callers without established "
                "identity). Please use API Key or other form of API consumer identity "
                "to call this API.",
                b"data: {not json\r\n\r\n", text_frame)


def _tool(body: dict, last_has_text: bool) -> str | None:
    config = (body.get("toolConfig") or {}).get("functionCallingConfig") or {}
    contents = body.get("contents") or []
    names = [d.get("name") for t in body.get("tools") or []
             for d in t.get("functionDeclarations") or []]
    if (not names or config.get("mode") == "NONE" or not contents
            or contents[-1].get("role", "user") != "user" or not last_has_text):
        return None
    return (config.get("allowedFunctionNames") or names)[0]


def _answer(body: dict) -> Answer:
    contents = body.get("contents") or []
    texts = [text_of(c.get("parts")) for c in contents]
    last_user = last_user_text(contents, texts, default_role="user")
    if body.get("systemInstruction"):
        texts.append(text_of(body["systemInstruction"].get("parts")))
    config = body.get("generationConfig") or {}
    json_mode = config.get("responseMimeType") == "application/json"
    tool = _tool(body, bool(contents and texts[len(contents) - 1]))
    return make_answer(texts, last_user, config.get("maxOutputTokens"), tool, json_mode)


def _response(model: str, response_id: str, parts_per_candidate: list,
              finish: str | None, usage: dict) -> dict:
    candidates = []
    for i, parts in enumerate(parts_per_candidate):
        candidate = {"content": {"parts": parts, "role": "model"}, "index": i}
        if finish:
            candidate["finishReason"] = finish
        candidates.append(candidate)
    return {"candidates": candidates, "usageMetadata": usage, "modelVersion": model,
            "responseId": response_id}


def _usage(answer: Answer, n: int, done: bool) -> dict:
    if not done:   # Gemini reports the prompt count on every chunk
        return {"promptTokenCount": answer.prompt_tokens,
                "totalTokenCount": answer.prompt_tokens}
    completion = answer.completion_tokens * n
    return {"promptTokenCount": answer.prompt_tokens, "candidatesTokenCount": completion,
            "totalTokenCount": answer.prompt_tokens + completion}


def _finish(answer: Answer) -> str:
    return "MAX_TOKENS" if answer.truncated else "STOP"


def generate(call: Call) -> Result:
    """generateContent, or streamGenerateContent with alt=sse."""
    answer = _answer(call.body)
    n = (call.body.get("generationConfig") or {}).get("candidateCount") or 1
    response_id = new_id("")
    if call.action == "streamGenerateContent":
        if call.query.get("alt") != "sse":
            return json_result(error(
                400, "the mock serves streamGenerateContent only with alt=sse"), 400)
        return Result(frames=_frames(call.model, response_id, answer, n),
                      content_type="text/event-stream")
    if answer.tool:
        parts = [{"functionCall": {"name": answer.tool, "args": orjson.loads(answer.arguments)}}]
    else:
        parts = [{"text": answer.text}]
    return json_result(_response(call.model, response_id, [parts] * n,
                                 _finish(answer), _usage(answer, n, True)))


def _frames(model: str, response_id: str, answer: Answer,
            n: int) -> Iterator[tuple[bytes, bool]]:
    def frame(parts, finish, done):
        response = _response(model, response_id, [parts] * n, finish, _usage(answer, n, done))
        return b"data: " + orjson.dumps(response) + b"\r\n\r\n"

    if answer.tool:
        call = {"functionCall": {"name": answer.tool, "args": orjson.loads(answer.arguments)}}
        yield frame([call], "STOP", True), True
        return
    last = len(answer.words) - 1
    for i, word in enumerate(answer.words):
        done = i == last
        yield frame([{"text": word}], _finish(answer) if done else None, done), True
    if last < 0:
        yield frame([{"text": ""}], _finish(answer), True), False


def embed(call: Call) -> Result:
    """embedContent (one request) or batchEmbedContents (a list of them)."""
    if call.action == "embedContent":
        requests_ = [call.body]
    else:
        requests_ = call.body.get("requests") or []
    embeddings = []
    for req in requests_:
        dimensions = req.get("outputDimensionality") or DEFAULT_DIMENSIONS
        text = text_of((req.get("content") or {}).get("parts"))
        embeddings.append({"values": embedding(text, dimensions)})
    if call.action == "embedContent":
        return json_result({"embedding": embeddings[0]})
    return json_result({"embeddings": embeddings})
