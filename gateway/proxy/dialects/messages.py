"""Anthropic Messages in, OpenAI chat out: the inbound twin of providers/anthropic_messages.py.

A Messages body becomes a chat body so prices, quotas, fallbacks, aliases and policies apply
unchanged; the chat answer (whole: messages_answer.py) goes back as a Messages answer. What chat
cannot say but Anthropic can (top_k, thinking) rides in the `anthropic` field, which only the
Anthropic adapter reads and the others drop."""
from __future__ import annotations

import orjson

from gateway.errors import InvalidRequest
from gateway.proxy import params
from gateway.services.accounting import tokens

EXTRAS = "anthropic"        # chat body field: Anthropic-only settings, see providers/anthropic_messages.py
GATEWAY_FIELDS = ("models",)    # the gateway's own fields, passed on for requests.validated to take
TOOL_CHOICES = {"auto": "auto", "any": "required", "none": "none"}
DROPPED_BLOCKS = ("thinking", "redacted_thinking")     # the model's own reasoning: chat has no slot


def _check(check: params.Check, value, param: str) -> None:
    if value is not None:
        check(value, param)


def to_chat(body: dict, require_max_tokens: bool = True) -> dict:
    """A Messages request body as an OpenAI chat body; InvalidRequest (with `param`) on bad input."""
    params.refuse_steering(body)
    model = body.get("model")
    if not isinstance(model, str) or not model.strip():
        raise InvalidRequest("model: Field required", param="model")
    if body.get("max_tokens") is None and require_max_tokens:
        raise InvalidRequest("max_tokens: Field required", param="max_tokens")
    _check(params.integer(1), body.get("max_tokens"), "max_tokens")
    _check(params.number(0, 1), body.get("temperature"), "temperature")
    _check(params.number(0, 1), body.get("top_p"), "top_p")
    _check(params.integer(0), body.get("top_k"), "top_k")
    _check(params.boolean, body.get("stream"), "stream")
    _check(params.array(params.string), body.get("stop_sequences"), "stop_sequences")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise InvalidRequest("messages: must be a non-empty array", param="messages")
    chat: dict = {"model": model, "messages": _system(body.get("system")) + _messages(messages)}
    for name in ("max_tokens", "temperature", "top_p", "stream"):
        if body.get(name) is not None:
            chat[name] = body[name]
    if body.get("stream"):
        chat["stream_options"] = {"include_usage": True}    # the usage message_delta reports
    if body.get("stop_sequences"):
        chat["stop"] = body["stop_sequences"]
    user = (body.get("metadata") or {}).get("user_id") if isinstance(body.get("metadata"), dict) else None
    if isinstance(user, str) and user:
        chat["user"] = user
    if body.get("tools"):
        chat["tools"] = _tools(body["tools"])
        chat.update(_tool_choice(body.get("tool_choice")))
    elif body.get("tool_choice") is not None and _tool_choice(body["tool_choice"]).get("tool_choice") != "none":
        raise InvalidRequest("tool_choice: only allowed when tools are given", param="tool_choice")
    if fmt := _output_format(body.get("output_config")):
        chat["response_format"] = fmt
    extras = _extras(body, chat)
    if extras:
        chat[EXTRAS] = extras
    chat.update({k: body[k] for k in GATEWAY_FIELDS if k in body})
    return chat


def _output_format(config) -> dict | None:
    """Structured output (output_config.format) as chat's json_schema response_format."""
    fmt = config.get("format") if isinstance(config, dict) else None
    if fmt is None:
        return None
    if not isinstance(fmt, dict) or fmt.get("type") != "json_schema" or not isinstance(fmt.get("schema"), dict):
        raise InvalidRequest("output_config.format: must be {type: 'json_schema', schema: {...}}",
                             param="output_config.format")
    return {"type": "json_schema", "json_schema": {"name": "output", "schema": fmt["schema"]}}


def _extras(body: dict, chat: dict) -> dict:
    """top_k, and thinking unless it would break the request: Anthropic wants an assistant turn
    that calls tools to start with its thinking block, which chat history cannot carry back."""
    out = {}
    if body.get("top_k") is not None:
        out["top_k"] = body["top_k"]
    thinking = body.get("thinking")
    if thinking is not None and not isinstance(thinking, dict):
        raise InvalidRequest("thinking: must be an object", param="thinking")
    calls_tools = any(m.get("tool_calls") for m in chat["messages"])
    if thinking and thinking.get("type") in ("enabled", "adaptive") and not calls_tools:
        out["thinking"] = thinking
    return out


def _text(blocks, param: str) -> str:
    """The text of a string or of a list of text blocks."""
    if isinstance(blocks, str):
        return blocks
    if not isinstance(blocks, list):
        raise InvalidRequest(f"{param}: must be a string or an array of text blocks", param=param)
    parts = []
    for i, b in enumerate(blocks):
        if not isinstance(b, dict) or b.get("type") != "text" or not isinstance(b.get("text"), str):
            raise InvalidRequest(f"{param}.{i}: must be a text block", param=f"{param}.{i}")
        parts.append(b["text"])
    return "\n\n".join(parts)


def _system(system) -> list[dict]:
    if system is None:
        return []
    text = _text(system, "system")
    return [{"role": "system", "content": text}] if text else []


def _image(block: dict, param: str) -> dict:
    """An image block as a chat image_url part (base64 becomes a data: URL)."""
    source = block.get("source")
    kind = source.get("type") if isinstance(source, dict) else None
    if kind == "base64" and isinstance(source.get("data"), str) and isinstance(source.get("media_type"), str):
        url = f"data:{source['media_type']};base64,{source['data']}"
    elif kind == "url" and isinstance(source.get("url"), str):
        url = source["url"]
    else:
        raise InvalidRequest(f"{param}.source: must be a base64 or url image source", param=f"{param}.source")
    return {"type": "image_url", "image_url": {"url": url}}


def _block(b, param: str) -> list[dict]:
    """A text or image block as chat content parts (none for reasoning blocks)."""
    kind = b.get("type") if isinstance(b, dict) else None
    if kind == "text" and isinstance(b.get("text"), str):
        return [{"type": "text", "text": b["text"]}]
    if kind == "image":
        return [_image(b, param)]
    if kind in DROPPED_BLOCKS:
        return []
    raise InvalidRequest(f"{param}: content block type {kind!r} is not supported here", param=param)


def _parts(blocks: list, param: str) -> list[dict]:
    return [part for i, b in enumerate(blocks) for part in _block(b, f"{param}.{i}")]


def _content(parts: list[dict]):
    """Chat content: a plain string when it is all text (every upstream takes that)."""
    if all(p["type"] == "text" for p in parts):
        return "".join(p["text"] for p in parts)
    return parts


def _messages(messages: list) -> list[dict]:
    out: list[dict] = []
    for i, m in enumerate(messages):
        p = f"messages.{i}"
        if not isinstance(m, dict) or m.get("role") not in ("user", "assistant"):
            raise InvalidRequest(f"{p}.role: must be 'user' or 'assistant'", param=f"{p}.role")
        content = m.get("content")
        if isinstance(content, str):
            out.append({"role": m["role"], "content": content})
        elif isinstance(content, list):
            out += _assistant(content, p) if m["role"] == "assistant" else _user(content, p)
        else:
            raise InvalidRequest(f"{p}.content: must be a string or an array of blocks", param=f"{p}.content")
    return out


def _assistant(blocks: list, param: str) -> list[dict]:
    """One assistant turn: its text, and its tool_use blocks as tool_calls."""
    calls, texts = [], []
    for i, b in enumerate(blocks):
        if isinstance(b, dict) and b.get("type") == "tool_use":
            calls.append(_tool_call(b, f"{param}.content.{i}"))
            continue
        for part in _block(b, f"{param}.content.{i}"):
            if part["type"] != "text":
                raise InvalidRequest(f"{param}.content.{i}: an assistant turn holds no images",
                                     param=f"{param}.content.{i}")
            texts.append(part["text"])
    text = "".join(texts)
    msg: dict = {"role": "assistant", "content": text or None}
    if calls:
        msg["tool_calls"] = calls
    elif not text:
        msg["content"] = ""
    return [msg]


def _tool_call(block: dict, param: str) -> dict:
    if not isinstance(block.get("id"), str) or not isinstance(block.get("name"), str):
        raise InvalidRequest(f"{param}: a tool_use block needs an id and a name", param=param)
    args = block.get("input") if block.get("input") is not None else {}
    return {"id": block["id"], "type": "function",
            "function": {"name": block["name"], "arguments": orjson.dumps(args).decode()}}


def _user(blocks: list, param: str) -> list[dict]:
    """One user turn: its tool results first, as tool messages (chat wants them right after the
    assistant's call), then the rest, with images a tool returned, as a user message."""
    results, parts = [], []
    for i, b in enumerate(blocks):
        p = f"{param}.content.{i}"
        if isinstance(b, dict) and b.get("type") == "tool_result":
            message, images = _tool_result(b, p)
            results.append(message)
            parts += images
        else:
            parts += _block(b, p)
    out = results
    if parts:
        out.append({"role": "user", "content": _content(parts)})
    return out


def _tool_result(block: dict, param: str) -> tuple[dict, list[dict]]:
    """A tool_result as a chat tool message, and the images it returned (a tool message takes
    text only). Chat has no is_error: the text says so instead."""
    if not isinstance(block.get("tool_use_id"), str):
        raise InvalidRequest(f"{param}.tool_use_id: Field required", param=f"{param}.tool_use_id")
    content = block.get("content")
    if content is None:
        parts = []
    elif isinstance(content, str):
        parts = [{"type": "text", "text": content}]
    elif isinstance(content, list):
        parts = _parts(content, f"{param}.content")
    else:
        raise InvalidRequest(f"{param}.content: must be a string or an array of blocks", param=f"{param}.content")
    text = "".join(p["text"] for p in parts if p["type"] == "text")
    if block.get("is_error"):
        text = f"Error: {text}" if text else "Error"
    return ({"role": "tool", "tool_call_id": block["tool_use_id"], "content": text},
            [p for p in parts if p["type"] != "text"])


def _tools(tools) -> list[dict]:
    if not isinstance(tools, list):
        raise InvalidRequest("tools: must be an array", param="tools")
    out = []
    for i, t in enumerate(tools):
        p = f"tools.{i}"
        if not isinstance(t, dict) or t.get("type") not in (None, "custom"):
            kind = t.get("type") if isinstance(t, dict) else None
            raise InvalidRequest(f"{p}.type: tool type {kind!r} is not supported here; "
                                 "only custom tools (name, input_schema) are", param=f"{p}.type")
        if not isinstance(t.get("name"), str) or not isinstance(t.get("input_schema"), dict):
            raise InvalidRequest(f"{p}: a tool needs a name and an input_schema object", param=p)
        fn: dict = {"name": t["name"], "parameters": t["input_schema"]}
        if isinstance(t.get("description"), str):
            fn["description"] = t["description"]
        out.append({"type": "function", "function": fn})
    return out


def _tool_choice(choice) -> dict:
    """Anthropic's tool_choice as chat's tool_choice and parallel_tool_calls."""
    if choice is None:
        return {}
    kind = choice.get("type") if isinstance(choice, dict) else None
    if kind == "tool":
        if not isinstance(choice.get("name"), str):
            raise InvalidRequest("tool_choice.name: Field required", param="tool_choice.name")
        out: dict = {"tool_choice": {"type": "function", "function": {"name": choice["name"]}}}
    elif kind in TOOL_CHOICES:
        out = {"tool_choice": TOOL_CHOICES[kind]}
    else:
        raise InvalidRequest("tool_choice.type: must be 'auto', 'any', 'tool' or 'none'", param="tool_choice.type")
    if choice.get("disable_parallel_tool_use") is True and kind != "none":
        out["parallel_tool_calls"] = False
    return out


def count_tokens(body: dict) -> int:
    """The prompt's tokens as the gateway estimates them (no upstream call): messages, system
    and tool definitions."""
    chat = to_chat(body, require_max_tokens=False)
    schema_chars = len(orjson.dumps(chat["tools"])) if chat.get("tools") else 0
    return tokens.estimate_prompt(chat) + tokens.estimate_text(schema_chars)
