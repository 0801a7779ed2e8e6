"""What of a Messages request passes through as-is to Anthropic deployments: the client's own
body (services/api_request.py Native), and the part of it the chat translation can carry.

Content chat has no form for (documents, search results, server tools and their results,
images from the Files API) is left out of the chat body rather than refused; the request then
records where, and only deployments taking Messages as-is may serve it."""
from __future__ import annotations

from gateway.services.api_request import Native

GATEWAY_FIELDS = ("models",)        # ours: the client's fallbacks, never sent upstream
FORWARDED_HEADERS = ("anthropic-beta",)     # allow-list; the client's auth never goes on
CHAT_BLOCKS = ("text", "image", "tool_use", "tool_result", "thinking", "redacted_thinking")
CHAT_IMAGE_SOURCES = ("base64", "url")


def native(body: dict, headers) -> Native:
    """The client's Messages body as it may go upstream, and the headers allowed through.
    `metadata` keeps only Anthropic's user_id: the rest of it is the gateway's tags."""
    out = {k: v for k, v in body.items() if k not in GATEWAY_FIELDS}
    meta = body.get("metadata")
    if isinstance(meta, dict) and isinstance(meta.get("user_id"), str):
        out["metadata"] = {"user_id": meta["user_id"]}
    else:
        out.pop("metadata", None)
    sent = {name: headers.get(name) for name in FORWARDED_HEADERS if headers.get(name)}
    _, dropped = chat_view(body)
    return Native("messages", out, sent, dropped[0] if dropped else "")


def chat_view(body: dict) -> tuple[dict, list[str]]:
    """`body` without what the chat translation cannot carry, and where each left-out item was
    (a param path such as messages.0.content.1)."""
    dropped: list[str] = []
    out = dict(body)
    messages = body.get("messages")
    if isinstance(messages, list):
        out["messages"] = [_message(m, f"messages.{i}", dropped) for i, m in enumerate(messages)]
    tools = body.get("tools")
    if isinstance(tools, list):
        out["tools"] = []
        for i, t in enumerate(tools):
            if _custom_tool(t):
                out["tools"].append(t)
            else:
                dropped.append(f"tools.{i}")
        if not out["tools"]:
            del out["tools"]
            out.pop("tool_choice", None)
    return out, dropped


def _custom_tool(tool) -> bool:
    return not isinstance(tool, dict) or tool.get("type") in (None, "custom")


def _message(m, param: str, dropped: list[str]):
    if not isinstance(m, dict) or not isinstance(m.get("content"), list):
        return m
    return dict(m, content=_blocks(m["content"], f"{param}.content", dropped))


def _blocks(blocks: list, param: str, dropped: list[str]) -> list:
    kept = []
    for i, b in enumerate(blocks):
        p = f"{param}.{i}"
        if not isinstance(b, dict) or _chat_block(b):
            if isinstance(b, dict) and b.get("type") == "tool_result" and isinstance(b.get("content"), list):
                b = dict(b, content=_blocks(b["content"], f"{p}.content", dropped))
            kept.append(b)
        else:
            dropped.append(p)
    return kept


def _chat_block(b: dict) -> bool:
    kind = b.get("type")
    if kind == "image":
        source = b.get("source")
        return isinstance(source, dict) and source.get("type") in CHAT_IMAGE_SOURCES
    return kind in CHAT_BLOCKS
