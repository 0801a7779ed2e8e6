"""Local token estimates, used only when the upstream reports no usage.

No tokenizer ships offline for every vendor, so this is the usual ~4 characters per token;
records made from it are marked estimated.
"""
from __future__ import annotations


def estimate_text(chars: int) -> int:
    return (chars + 3) // 4 if chars else 0


def _content_chars(content) -> int:
    if isinstance(content, str):
        return len(content)
    if isinstance(content, list):
        return sum(len(p.get("text") or "") for p in content if isinstance(p, dict))
    return 0


def estimate_prompt(body: dict) -> int:
    """Prompt tokens of a chat or embeddings request: text plus a few tokens per message."""
    messages = body.get("messages")
    if isinstance(messages, list):
        total = 0
        for m in messages:
            if isinstance(m, dict):
                total += 4 + estimate_text(_content_chars(m.get("content")))
                for call in m.get("tool_calls") or ():
                    total += estimate_text(len(str((call or {}).get("function", ""))))
        return total + 3
    inp = body.get("input")
    if isinstance(inp, str):
        return estimate_text(len(inp))
    if isinstance(inp, list):
        return sum(estimate_text(len(x)) if isinstance(x, str) else len(x) if isinstance(x, list) else 1
                   for x in inp)
    return 0
