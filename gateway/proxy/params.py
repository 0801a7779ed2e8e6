"""The request parameters checked before anything goes upstream: OpenAI's types and ranges, and
the fields a client may not send at all. A bad value answers 400 naming its `param`, so it never
reaches a provider (or fails inside one, with the provider's own text).

`null` stands for "not given" everywhere, as OpenAI reads it. Fields not listed here are passed
on (vendor extensions such as `top_k`), except the steering fields."""
from __future__ import annotations

import re
from typing import Callable

from gateway.errors import InvalidRequest

Check = Callable[[object, str], None]       # (value, param path); raises InvalidRequest

# Fields that would choose where or how the gateway calls a provider. The gateway alone picks the
# upstream's URL, credentials and headers, so these are refused (not stripped): the client learns
# at once that they do nothing here.
STEERING = frozenset({
    "api_base", "base_url", "api_url", "url", "endpoint", "api_key", "api_version", "api_type",
    "organization", "project", "headers", "extra_headers", "extra_body", "extra_query",
    "azure_endpoint", "azure_deployment", "azure_ad_token", "deployment_id", "custom_llm_provider",
    "aws_access_key_id", "aws_secret_access_key", "aws_session_token", "aws_region_name",
    "vertex_project", "vertex_location", "vertex_credentials", "credentials", "authorization",
    "proxy", "proxies", "timeout", "request_timeout", "max_retries", "model_list", "litellm_params",
})
_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")      # function, tool and schema names


def _kind(value) -> str:
    for t, name in ((bool, "a boolean"), (int, "an integer"), (float, "a decimal"), (str, "a string"),
                    (list, "an array"), (dict, "an object")):
        if isinstance(value, t):
            return name
    return "null" if value is None else type(value).__name__


def _type_error(param: str, expected: str, value) -> InvalidRequest:
    return InvalidRequest(f"Invalid type for '{param}': expected {expected}, but got {_kind(value)} instead.",
                          param=param, code="invalid_type")


def _value_error(param: str, message: str, code: str = "invalid_value") -> InvalidRequest:
    return InvalidRequest(f"Invalid '{param}': {message}", param=param, code=code)


def integer(lo: int | None = None, hi: int | None = None) -> Check:
    def check(v, p):
        if isinstance(v, bool) or not isinstance(v, int):
            raise _type_error(p, "an integer", v)
        if lo is not None and v < lo:
            raise _value_error(p, f"integer below minimum value. Expected a value >= {lo}, but got {v} instead.",
                               "integer_below_min_value")
        if hi is not None and v > hi:
            raise _value_error(p, f"integer above maximum value. Expected a value <= {hi}, but got {v} instead.",
                               "integer_above_max_value")
    return check


def number(lo: float, hi: float) -> Check:
    def check(v, p):
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise _type_error(p, "a decimal", v)
        if not lo <= v <= hi:
            side, code = ("below minimum", "decimal_below_min_value") if v < lo else \
                ("above maximum", "decimal_above_max_value")
            bound = f">= {lo}" if v < lo else f"<= {hi}"
            raise _value_error(p, f"decimal {side} value. Expected a value {bound}, but got {v} instead.", code)
    return check


def boolean(v, p) -> None:
    if not isinstance(v, bool):
        raise _type_error(p, "a boolean", v)


def string(v, p) -> None:
    if not isinstance(v, str):
        raise _type_error(p, "a string", v)


def name(v, p) -> None:
    string(v, p)
    if not _NAME.match(v):
        raise _value_error(p, "names are 1 to 64 letters, digits, underscores or dashes.")


def one_of(*values: str) -> Check:
    def check(v, p):
        string(v, p)
        if v not in values:
            raise _value_error(p, f"expected one of {', '.join(repr(x) for x in values)}, but got {v!r} instead.")
    return check


def array(item: Check, max_items: int | None = None) -> Check:
    def check(v, p):
        if not isinstance(v, list):
            raise _type_error(p, "an array", v)
        if max_items is not None and len(v) > max_items:
            raise _value_error(p, f"array too long. Expected an array with at most {max_items} items, but got "
                               f"{len(v)} instead.", "array_above_max_length")
        for i, x in enumerate(v):
            item(x, f"{p}[{i}]")
    return check


def obj(fields: dict[str, Check] | None = None, required: tuple[str, ...] = ()) -> Check:
    """An object whose listed fields (null means absent) pass their checks; others pass through."""
    def check(v, p):
        if not isinstance(v, dict):
            raise _type_error(p, "an object", v)
        for key in required:
            if v.get(key) is None:
                raise InvalidRequest(f"Missing required parameter: '{p}.{key}'.", param=f"{p}.{key}",
                                     code="missing_required_parameter")
        for key, sub in (fields or {}).items():
            if v.get(key) is not None:
                sub(v[key], f"{p}.{key}")
    return check


def either(expected: str, *checks: Check) -> Check:
    """The value passes one of `checks`; otherwise the error says what was `expected`."""
    def check(v, p):
        errors = []
        for c in checks:
            try:
                c(v, p)
                return
            except InvalidRequest as e:
                errors.append(e)
        # A value of a fitting type says what is wrong inside it; any other says what would fit.
        wrong_value = [e for e in errors if e.code != "invalid_type" or e.param != p]
        raise wrong_value[0] if wrong_value else _type_error(p, expected, v)
    return check


def _number_map(lo: float, hi: float) -> Check:
    in_range = number(lo, hi)

    def check(v, p):
        obj()(v, p)
        for key, x in v.items():
            if not str(key).isdigit():
                raise _value_error(p, f"keys are token ids, but got {key!r}.")
            in_range(x, f"{p}.{key}")
    return check


FUNCTION = obj({"name": name, "description": string, "parameters": obj(), "strict": boolean}, required=("name",))


def tool(v, p) -> None:
    obj({"type": one_of("function", "custom"), "function": FUNCTION, "custom": obj({"name": name}, ("name",))},
        required=("type",))(v, p)
    obj(required=(v["type"],))(v, p)    # a function tool needs its `function`, a custom one its `custom`


def response_format(v, p) -> None:
    schema = obj({"name": name, "description": string, "schema": obj(), "strict": boolean}, required=("name",))
    obj({"type": one_of("text", "json_object", "json_schema"), "json_schema": schema}, required=("type",))(v, p)
    if v["type"] == "json_schema":
        obj(required=("json_schema",))(v, p)


def named_choice(v, p) -> None:
    obj({"type": one_of("function", "custom", "allowed_tools"), "function": obj({"name": name}, ("name",)),
         "custom": obj({"name": name}, ("name",)), "allowed_tools": obj()}, required=("type",))(v, p)
    obj(required=(v["type"],))(v, p)



CHAT: dict[str, Check] = {
    "stream": boolean,
    "max_tokens": integer(1),
    "max_completion_tokens": integer(1),
    "temperature": number(0, 2),
    "top_p": number(0, 1),
    "n": integer(1, 128),
    "presence_penalty": number(-2, 2),
    "frequency_penalty": number(-2, 2),
    "seed": integer(-2**63, 2**63 - 1),
    "logprobs": boolean,
    "top_logprobs": integer(0, 20),
    "logit_bias": _number_map(-100, 100),
    "stop": either("a string or an array of up to 4 strings", string, array(string, 4)),
    "stream_options": obj({"include_usage": boolean, "include_obfuscation": boolean}),
    "tools": array(tool, 128),
    "tool_choice": either("'none', 'auto', 'required' or an object naming a tool",
                          one_of("none", "auto", "required"), named_choice),
    "parallel_tool_calls": boolean,
    "functions": array(FUNCTION, 128),
    "function_call": either("'none', 'auto' or an object naming a function",
                            one_of("none", "auto"), obj({"name": name}, ("name",))),
    "response_format": response_format,
    "user": string,
    "store": boolean,
    "reasoning_effort": string,
    "service_tier": string,
    "verbosity": string,
    "modalities": array(one_of("text", "audio")),
    "audio": obj(),
    "prediction": obj(),
    "web_search_options": obj(),
    "prompt_cache_key": string,
    "safety_identifier": string,
}

EMBEDDINGS: dict[str, Check] = {
    "dimensions": integer(1),
    "encoding_format": one_of("float", "base64"),
    "user": string,
}


def refuse_steering(body: dict) -> None:
    """400 for the first field that would choose the upstream's address, credentials or headers."""
    for key in body:
        if str(key).lower().replace("-", "_") in STEERING:
            raise InvalidRequest(f"Unsupported parameter: '{key}'. The gateway alone chooses the provider, "
                                 "its address, credentials and headers.", param=str(key), code="unsupported_parameter")


def check(table: dict[str, Check], body: dict) -> None:
    """Check every field `table` knows that `body` gives (null counts as not given)."""
    for key, c in table.items():
        value = body.get(key)
        if value is not None:
            c(value, key)


def check_chat(body: dict) -> None:
    """Chat completion parameters, and the rules between them."""
    check(CHAT, body)
    if body.get("top_logprobs") is not None and body.get("logprobs") is not True:
        raise _value_error("top_logprobs", "'logprobs' must be true when 'top_logprobs' is given.")
    if body.get("stream_options") is not None and body.get("stream") is not True:
        raise _value_error("stream_options", "only allowed when 'stream' is true.")
    if body.get("tool_choice") is not None and not body.get("tools"):
        raise _value_error("tool_choice", "only allowed when 'tools' are given.")
