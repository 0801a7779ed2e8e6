"""Legacy /v1/completions onto chat: one prompt becomes one user message; the answer and its
stream come back as `text_completion` objects."""
from __future__ import annotations

import time
from typing import Iterator

import orjson

from gateway.errors import InvalidRequest
from gateway.proxy.dialects.responses import new_id

# Settings chat has no equivalent for: refused, so the client learns they do nothing here.
REFUSED = {"suffix": "'suffix' (insertion) is not supported by this gateway.",
           "logprobs": "'logprobs' is not supported on /v1/completions by this gateway."}


def to_chat(body: dict) -> dict:
    """The chat body for a legacy completions body."""
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1:
        prompt = prompt[0]
    if isinstance(prompt, list) and prompt and all(isinstance(p, str) for p in prompt):
        raise InvalidRequest("Only one prompt per request is supported by this gateway; send one request "
                             "per prompt.", param="prompt")
    if not isinstance(prompt, str):
        raise InvalidRequest("'prompt' must be a string (token-id prompts are not supported by this "
                             "gateway).", param="prompt")
    if body.get("echo"):
        raise InvalidRequest("'echo' is not supported by this gateway.", param="echo")
    for name, message in REFUSED.items():
        if body.get(name) is not None:
            raise InvalidRequest(message, param=name)
    if body.get("best_of") not in (None, 1):
        raise InvalidRequest("'best_of' is not supported by this gateway.", param="best_of")
    chat = {k: v for k, v in body.items() if k not in ("prompt", "echo", "best_of", *REFUSED)}
    chat["messages"] = [{"role": "user", "content": prompt}]
    return chat


def _choice(index: int, text: str, finish_reason: str | None) -> dict:
    return {"text": text, "index": index, "logprobs": None, "finish_reason": finish_reason}


def from_chat(chat: dict, model: str) -> dict:
    """The `text_completion` for a chat.completion, naming `model` (the one asked for)."""
    choices = []
    for c in chat.get("choices") or ():
        content = (c.get("message") or {}).get("content") or ""
        if isinstance(content, list):
            content = "".join(p.get("text") or "" for p in content if isinstance(p, dict))
        choices.append(_choice(c.get("index", 0), content, c.get("finish_reason")))
    return {"id": new_id("cmpl-"), "object": "text_completion", "created": chat.get("created") or int(time.time()),
            "model": model, "choices": choices, "usage": chat.get("usage")}


def stream(inner: Iterator[bytes], model: str) -> Iterator[bytes]:
    """Chat chunk frames as `text_completion` chunk frames; errors, comments and [DONE] pass
    as they are. Closes `inner` however the stream ends."""
    completion_id, created = new_id("cmpl-"), int(time.time())
    try:
        for frame in inner:
            data = frame[6:].strip() if frame.startswith(b"data: ") else b""
            if not data or data == b"[DONE]":
                yield frame
                continue
            chunk = orjson.loads(data)
            if "error" in chunk:
                yield frame
                continue
            choices = [_choice(c.get("index", 0), (c.get("delta") or {}).get("content") or "", c.get("finish_reason"))
                       for c in chunk.get("choices") or ()]
            choices = [c for c in choices if c["text"] or c["finish_reason"]]
            if not choices and not chunk.get("usage"):
                continue        # the role-only first chunk
            out = {"id": completion_id, "object": "text_completion", "created": created, "model": model,
                   "choices": choices}
            if chunk.get("usage"):
                out["usage"] = chunk["usage"]
            yield b"data: " + orjson.dumps(out) + b"\n\n"
    finally:
        close = getattr(inner, "close", None)
        if close is not None:
            close()
