"""The OpenAI chat body as a Gemini generateContent body: messages to contents, tools to
functionDeclarations, sampling and response format to generationConfig."""
from __future__ import annotations

from urllib.parse import urlsplit

import orjson

from gateway.errors import InvalidRequest
from gateway.providers.gemini_schema import clean_schema

TOOL_CHOICE_MODES = {"auto": "AUTO", "none": "NONE", "required": "ANY"}
IMAGE_TYPES = {"png": "image/png", "jpg": "image/jpeg", "jpeg": "image/jpeg", "gif": "image/gif",
               "webp": "image/webp", "heic": "image/heic", "heif": "image/heif"}

# Gemini 3 rejects a function call in the history without the thought signature it was issued
# with. Clients that drop our `extra_content` get Google's documented placeholder instead.
SKIP_SIGNATURE = "skip_thought_signature_validator"



def chat_body(body: dict) -> dict:
    """The generateContent body for an OpenAI chat body; InvalidRequest when it is malformed."""
    try:
        system, contents = _contents(body.get("messages") or [])
        tools = _tools(body["tools"]) if body.get("tools") else None
        config = _generation_config(body)
    except (AttributeError, TypeError):     # a list where an object belongs, or the reverse
        raise InvalidRequest("The request's messages or tools are malformed.") from None
    out: dict = {"contents": contents}
    if system:
        out["systemInstruction"] = {"parts": system}
    if tools:
        out["tools"] = tools
        if body.get("tool_choice") is not None:
            out["toolConfig"] = _tool_config(body["tool_choice"])
    if config:
        out["generationConfig"] = config
    return out


def _image_part(image) -> dict:
    url = image.get("url") if isinstance(image, dict) else image
    if not isinstance(url, str):
        raise InvalidRequest("image_url needs a url.", param="messages")
    if url.startswith("data:"):
        header, comma, data = url[5:].partition(",")
        if not comma or not header.endswith(";base64"):
            raise InvalidRequest("Image data URLs must be base64-encoded.", param="messages")
        return {"inlineData": {"mimeType": header.split(";")[0] or "image/jpeg", "data": data}}
    if url.startswith(("http://", "https://")):
        ext = urlsplit(url).path.rpartition(".")[2].lower()
        return {"fileData": {"mimeType": IMAGE_TYPES.get(ext, "image/jpeg"), "fileUri": url}}
    raise InvalidRequest("Image URLs must be http(s) or base64 data URLs.", param="messages")


def _parts(content) -> list[dict]:
    if not content:
        return []
    if isinstance(content, str):
        return [{"text": content}]
    parts = []
    for item in content:
        kind = item.get("type")
        if kind == "text":
            parts.append({"text": item.get("text") or ""})
        elif kind == "refusal":
            parts.append({"text": item.get("refusal") or ""})
        elif kind == "image_url":
            parts.append(_image_part(item.get("image_url")))
        else:
            raise InvalidRequest(f"Content parts of type {kind!r} are not supported for Gemini.",
                                 param="messages")
    return parts


def _call_part(call: dict, first: bool) -> dict:
    fn = call.get("function") or {}
    try:
        args = orjson.loads(fn.get("arguments") or "{}")
    except orjson.JSONDecodeError:
        raise InvalidRequest("Tool call arguments must be JSON.", param="messages") from None
    part = {"functionCall": {"name": fn.get("name"), "args": args}}
    signature = ((call.get("extra_content") or {}).get("google") or {}).get("thought_signature")
    if signature or first:      # Gemini signs the first call of each step only
        part["thoughtSignature"] = signature or SKIP_SIGNATURE
    return part


def _tool_result(content) -> dict:
    if isinstance(content, str):
        text = content
    else:
        text = "".join(p.get("text") or "" for p in content or () if isinstance(p, dict))
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        value = None
    return {"content": value if isinstance(value, dict) else {"result": text}}


def _contents(messages: list[dict]) -> tuple[list[dict], list[dict]]:
    """OpenAI messages -> (systemInstruction parts, Gemini contents with same-role turns merged)."""
    system, turns, names = [], [], {}
    for msg in messages:
        role = msg.get("role")
        if role in ("system", "developer"):
            system += _parts(msg.get("content"))
        elif role == "user":
            turns.append(("user", _parts(msg.get("content"))))
        elif role == "assistant":
            parts = _parts(msg.get("content"))
            for i, call in enumerate(msg.get("tool_calls") or ()):
                names[call.get("id")] = (call.get("function") or {}).get("name")
                parts.append(_call_part(call, first=i == 0))
            turns.append(("model", parts))
        elif role in ("tool", "function"):
            # Gemini matches results to calls by function name; OpenAI only sends the call id.
            name = names.get(msg.get("tool_call_id")) or msg.get("name")
            if not name:
                raise InvalidRequest("A tool message answers no earlier tool call.",
                                     param="messages")
            result = {"name": name, "response": _tool_result(msg.get("content"))}
            turns.append(("user", [{"functionResponse": result}]))
        else:
            raise InvalidRequest(f"Unknown message role {role!r}.", param="messages")
    contents: list[dict] = []
    for role, parts in turns:
        if not parts:
            continue
        if contents and contents[-1]["role"] == role:   # Gemini wants turns to alternate
            contents[-1]["parts"].extend(parts)
        else:
            contents.append({"role": role, "parts": parts})
    return system, contents


def _tools(tools: list[dict]) -> list[dict]:
    declarations = []
    for tool in tools:
        if tool.get("type") != "function":
            raise InvalidRequest("Only function tools are supported for Gemini.", param="tools")
        fn = tool.get("function") or {}
        declaration = {"name": fn.get("name")}
        if fn.get("description"):
            declaration["description"] = fn["description"]
        params = clean_schema(fn.get("parameters") or {})
        if params.get("properties"):    # a function without arguments sends no schema at all
            declaration["parameters"] = params
        declarations.append(declaration)
    return [{"functionDeclarations": declarations}]


def _tool_config(choice) -> dict:
    if isinstance(choice, str) and choice in TOOL_CHOICE_MODES:
        return {"functionCallingConfig": {"mode": TOOL_CHOICE_MODES[choice]}}
    name = (choice.get("function") or {}).get("name") if isinstance(choice, dict) else None
    if not name:
        raise InvalidRequest("tool_choice must be auto, none, required or a named function.",
                             param="tool_choice")
    return {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": [name]}}


def _generation_config(body: dict) -> dict:
    config = {}
    for ours, theirs in (("temperature", "temperature"), ("top_p", "topP"), ("n", "candidateCount"),
                         ("seed", "seed"), ("presence_penalty", "presencePenalty"),
                         ("frequency_penalty", "frequencyPenalty")):
        if body.get(ours) is not None:
            config[theirs] = body[ours]
    max_tokens = body.get("max_completion_tokens") or body.get("max_tokens")
    if max_tokens is not None:
        config["maxOutputTokens"] = max_tokens
    stop = body.get("stop")
    if stop:
        config["stopSequences"] = [stop] if isinstance(stop, str) else list(stop)
    fmt = body.get("response_format") or {}
    if fmt.get("type") in ("json_object", "json_schema"):
        config["responseMimeType"] = "application/json"
        schema = (fmt.get("json_schema") or {}).get("schema")
        if schema:
            config["responseSchema"] = clean_schema(schema)
    return config
