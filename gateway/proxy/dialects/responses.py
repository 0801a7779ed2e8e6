"""OpenAI's Responses API onto chat: a Responses body → a chat body (`to_chat`), a
chat.completion → a `response` object (`from_chat`). Pure functions; the stream is in
responses_stream.py."""
from __future__ import annotations

import os
import time

from gateway.errors import InvalidRequest

ROLES = {"user": "user", "assistant": "assistant", "system": "system", "developer": "system"}
# Responses-only fields with no chat meaning: taken here (store and previous_response_id by
# the view) and never sent upstream.
CONSUMED = frozenset({
    "input", "instructions", "tools", "tool_choice", "max_output_tokens", "text", "reasoning",
    "metadata", "store", "previous_response_id", "stream", "stream_options", "truncation", "include",
    "max_tool_calls", "prompt_cache_key", "safety_identifier", "service_tier", "top_logprobs",
    "background", "conversation", "prompt",
})
PASSED = ("model", "temperature", "top_p", "parallel_tool_calls", "user", "models")
EFFORTS = ("minimal", "low", "medium", "high")


def new_id(prefix: str) -> str:
    """A random id such as `resp_…`."""
    return prefix + os.urandom(12).hex()


def input_items(body: dict) -> list[dict]:
    """The request's `input` as a list of items (a string is one user message)."""
    given = body.get("input")
    if isinstance(given, str):
        return [{"type": "message", "role": "user", "content": given}]
    if not isinstance(given, list) or not given:
        raise InvalidRequest("'input' must be a string or a non-empty array of input items.", param="input")
    return given


def to_chat(body: dict, history: list[dict] = ()) -> dict:
    """The chat body for a Responses body; `history` is a stored conversation's items, put
    before this request's input."""
    for name in ("background", "conversation", "prompt"):
        if body.get(name):
            raise InvalidRequest(f"'{name}' is not supported by this gateway.", param=name)
    messages: list[dict] = []
    instructions = body.get("instructions")
    if instructions is not None:
        if not isinstance(instructions, str):
            raise InvalidRequest("'instructions' must be a string.", param="instructions")
        messages.append({"role": "system", "content": instructions})
    items = input_items(body)
    for i, item in enumerate([*history, *items]):
        _add_item(messages, item, f"input[{i - len(history)}]" if i >= len(history) else "previous_response_id")
    chat = {k: body[k] for k in PASSED if k in body}
    chat.update({k: v for k, v in body.items() if k not in CONSUMED and k not in chat})
    chat["messages"] = messages
    if body.get("max_output_tokens") is not None:
        chat["max_tokens"] = body["max_output_tokens"]
    choice = _tool_choice(body["tool_choice"]) if body.get("tool_choice") is not None else None
    if body.get("tools"):
        chat["tools"] = _tools(body["tools"])
        if choice is not None:
            chat["tool_choice"] = choice
    else:       # Responses clients send these without tools too; chat refuses that
        chat.pop("parallel_tool_calls", None)
    fmt = _response_format(body.get("text"))
    if fmt is not None:
        chat["response_format"] = fmt
    effort = (body.get("reasoning") or {}).get("effort") if isinstance(body.get("reasoning"), dict) else None
    if effort in EFFORTS:
        chat["reasoning_effort"] = effort
    if body.get("stream") is True:
        chat["stream"] = True
        chat["stream_options"] = {"include_usage": True}    # response.completed carries usage
    return chat


def _add_item(messages: list[dict], item, param: str) -> None:
    if not isinstance(item, dict):
        raise InvalidRequest(f"{param} must be an object.", param=param)
    kind = item.get("type", "message")
    if kind == "message":
        role = ROLES.get(item.get("role"))
        if role is None:
            raise InvalidRequest(f"{param}.role must be one of user, assistant, system, developer.",
                                 param=f"{param}.role")
        messages.append({"role": role, "content": _content(item.get("content"), role, f"{param}.content")})
    elif kind == "function_call":
        call = {"id": _text(item, "call_id", param), "type": "function",
                "function": {"name": _text(item, "name", param), "arguments": item.get("arguments") or "{}"}}
        last = messages[-1] if messages else None
        if last is not None and last["role"] == "assistant":    # parallel calls: one assistant turn
            last.setdefault("tool_calls", []).append(call)
        else:
            messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
    elif kind == "function_call_output":
        output = item.get("output")
        if isinstance(output, list):
            output = "".join(p.get("text") or "" for p in output if isinstance(p, dict))
        if not isinstance(output, str):
            raise InvalidRequest(f"{param}.output must be a string.", param=f"{param}.output")
        messages.append({"role": "tool", "tool_call_id": _text(item, "call_id", param), "content": output})
    elif kind == "reasoning":
        return      # the upstream's own reasoning from an earlier turn; chat has no place for it
    else:
        raise InvalidRequest(f"Input items of type '{kind}' are not supported by this gateway.",
                             param=f"{param}.type")


def _text(item: dict, name: str, param: str) -> str:
    value = item.get(name)
    if not isinstance(value, str) or not value:
        raise InvalidRequest(f"{param}.{name} must be a non-empty string.", param=f"{param}.{name}")
    return value


def _content(content, role: str, param: str):
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise InvalidRequest(f"{param} must be a string or an array of content parts.", param=param)
    parts = []
    for i, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in ("input_text", "output_text", "text") and isinstance(part.get("text"), str):
            parts.append({"type": "text", "text": part["text"]})
        elif kind == "refusal":
            parts.append({"type": "text", "text": str(part.get("refusal") or "")})
        elif kind == "input_image":
            url = part.get("image_url")
            if not isinstance(url, str) or not url:
                raise InvalidRequest(f"{param}[{i}]: only images given by image_url (a URL or a data URL) "
                                     "are supported, not file_id.", param=f"{param}[{i}].image_url")
            image = {"url": url}
            if part.get("detail") in ("low", "high", "auto"):
                image["detail"] = part["detail"]
            parts.append({"type": "image_url", "image_url": image})
        else:
            raise InvalidRequest(f"Content parts of type '{kind}' are not supported by this gateway.",
                                 param=f"{param}[{i}].type")
    if role != "user" and all(p["type"] == "text" for p in parts):
        return "".join(p["text"] for p in parts)    # assistant and system turns: plain text
    return parts


def _tools(tools) -> list[dict]:
    if not isinstance(tools, list):
        raise InvalidRequest("'tools' must be an array.", param="tools")
    out = []
    for i, tool in enumerate(tools):
        kind = tool.get("type") if isinstance(tool, dict) else None
        if kind != "function":
            raise InvalidRequest(f"The tool type '{kind}' is not supported by this gateway: only function "
                                 "tools are (built-in tools such as web_search, file_search or computer "
                                 "are not).", param=f"tools[{i}].type", code="unsupported_tool")
        fn = {"name": _text(tool, "name", f"tools[{i}]")}
        for name in ("description", "parameters", "strict"):
            if tool.get(name) is not None:
                fn[name] = tool[name]
        out.append({"type": "function", "function": fn})
    return out


def _tool_choice(choice):
    if choice in ("auto", "none", "required"):
        return choice
    if isinstance(choice, dict) and choice.get("type") == "function" and isinstance(choice.get("name"), str):
        return {"type": "function", "function": {"name": choice["name"]}}
    raise InvalidRequest("'tool_choice' must be auto, none, required or a function tool "
                         "({\"type\": \"function\", \"name\": ...}).", param="tool_choice")


def _response_format(text) -> dict | None:
    fmt = text.get("format") if isinstance(text, dict) else None
    if fmt is None:
        return None
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    if kind == "text":
        return None
    if kind == "json_object":
        return {"type": "json_object"}
    if kind == "json_schema":
        schema = {"name": _text(fmt, "name", "text.format"), "schema": fmt.get("schema") or {}}
        for name in ("description", "strict"):
            if fmt.get(name) is not None:
                schema[name] = fmt[name]
        return {"type": "json_schema", "json_schema": schema}
    raise InvalidRequest("'text.format.type' must be text, json_object or json_schema.",
                         param="text.format.type")


def response_shell(body: dict, model: str, response_id: str, created_at: int | None = None) -> dict:
    """A `response` object with what the request set, no output yet (status in_progress)."""
    text = body.get("text") if isinstance(body.get("text"), dict) else {}
    return {
        "id": response_id, "object": "response", "created_at": created_at or int(time.time()),
        "status": "in_progress", "error": None, "incomplete_details": None,
        "instructions": body.get("instructions"), "max_output_tokens": body.get("max_output_tokens"),
        "model": model, "output": [], "parallel_tool_calls": body.get("parallel_tool_calls", True),
        "previous_response_id": body.get("previous_response_id"),
        "reasoning": {"effort": (body.get("reasoning") or {}).get("effort"), "summary": None},
        "store": body.get("store", True), "temperature": body.get("temperature"),
        "text": {"format": text.get("format") or {"type": "text"}},
        "tool_choice": body.get("tool_choice", "auto"), "tools": body.get("tools") or [],
        "top_p": body.get("top_p"), "truncation": body.get("truncation", "disabled"),
        "usage": None, "user": body.get("user"), "metadata": body.get("metadata") or {},
    }


def usage_of(chat_usage: dict | None) -> dict | None:
    """Chat usage in the Responses shape."""
    if not isinstance(chat_usage, dict):
        return None
    inp, out = chat_usage.get("prompt_tokens") or 0, chat_usage.get("completion_tokens") or 0
    cached = (chat_usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0
    reasoning = (chat_usage.get("completion_tokens_details") or {}).get("reasoning_tokens") or 0
    return {"input_tokens": inp, "input_tokens_details": {"cached_tokens": cached},
            "output_tokens": out, "output_tokens_details": {"reasoning_tokens": reasoning},
            "total_tokens": chat_usage.get("total_tokens") or inp + out}


def item_id(prefix: str, response_id: str, index: int) -> str:
    """The id of output item `index` of a response: it names the response, so an
    `item_reference` to it finds the stored response (response_of_item)."""
    return f"{prefix}{response_id.removeprefix('resp_')}_{index}"


def response_of_item(reference: str) -> str | None:
    """The response id an output item id (item_id) belongs to; None for another kind of id."""
    prefix, sep, rest = reference.partition("_")
    body, sep2, index = rest.rpartition("_")
    if prefix in ("msg", "fc") and sep and sep2 and body and index.isdigit():
        return "resp_" + body
    return None


def message_item(text: str, item_id: str, status: str = "completed") -> dict:
    """An assistant message output item holding `text`."""
    return {"id": item_id, "type": "message", "role": "assistant", "status": status,
            "content": [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}]}


def call_item(call_id: str, name: str, arguments: str, item_id: str, status: str = "completed") -> dict:
    """A function_call output item."""
    return {"id": item_id, "type": "function_call", "status": status,
            "call_id": call_id, "name": name, "arguments": arguments}


def finish(response: dict, finish_reason: str | None) -> dict:
    """`response` with its end status: incomplete when the answer was cut."""
    reason = {"length": "max_output_tokens", "content_filter": "content_filter"}.get(finish_reason or "")
    response["status"] = "incomplete" if reason else "completed"
    response["incomplete_details"] = {"reason": reason} if reason else None
    response["output_text"] = "".join(p["text"] for item in response["output"] if item["type"] == "message"
                                      for p in item["content"] if p["type"] == "output_text")
    return response


def from_chat(chat: dict, model: str, body: dict | None = None, response_id: str | None = None) -> dict:
    """The `response` object for a chat.completion, naming `model` (the one asked for)."""
    response = response_shell(body or {}, model, response_id or new_id("resp_"), chat.get("created"))
    output = response["output"]
    choice = (chat.get("choices") or [{}])[0]
    message = choice.get("message") or {}
    status = "incomplete" if choice.get("finish_reason") in ("length", "content_filter") else "completed"
    content = message.get("content")
    if isinstance(content, list):
        content = "".join(p.get("text") or "" for p in content if isinstance(p, dict))
    if content:
        output.append(message_item(content, item_id("msg_", response["id"], 0), status))
    elif message.get("refusal"):
        item = message_item("", item_id("msg_", response["id"], 0), status)
        item["content"] = [{"type": "refusal", "refusal": message["refusal"]}]
        output.append(item)
    for call in message.get("tool_calls") or ():
        fn = call.get("function") or {}
        output.append(call_item(call.get("id") or new_id("call_"), fn.get("name") or "", fn.get("arguments") or "",
                                item_id("fc_", response["id"], len(output))))
    response["usage"] = usage_of(chat.get("usage"))
    return finish(response, choice.get("finish_reason"))
