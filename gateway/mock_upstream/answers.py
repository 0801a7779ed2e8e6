"""The deterministic answer, shared by all three formats: reply words, token counts,
tool calls, embeddings and ids."""
from __future__ import annotations

import hashlib
import math
import os
import re
import struct
from dataclasses import dataclass

import orjson

DEFAULT_DIMENSIONS = 8

_WORD = re.compile(r"\s*\S+(?:\s+$)?")   # leading spaces stay with their word


def text_of(content) -> str:
    """Text of a message: a string, or the joined `text` fields of a list of parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(p["text"] for p in content
                        if isinstance(p, dict) and isinstance(p.get("text"), str))
    return ""


def last_user_text(turns: list[dict], texts: list[str], default_role: str | None = None) -> str:
    """Text of the last user turn that has any; `texts[i]` is the text of `turns[i]`."""
    return next((t for turn, t in zip(reversed(turns), reversed(texts))
                 if turn.get("role", default_role) == "user" and t), "")


def count_words(text: str) -> int:
    """Words in `text`, the mock's token count."""
    return len(text.split())


def prompt_tokens(texts: list[str]) -> int:
    """Words over all message texts plus 3 per message."""
    return sum(len(t.split()) for t in texts) + 3 * len(texts)


def reply_words(text: str, limit: int | None) -> tuple[list[str], bool]:
    """Split `text` into pieces (one per word) that join back to it; keep at most `limit`.
    Returns the pieces and whether they were cut."""
    words = _WORD.findall(text)
    if limit is not None and len(words) > limit:
        return words[:max(limit, 0)], True
    return words, False


@dataclass(slots=True)
class Answer:
    """The reply to one conversation, before a format wraps it."""
    words: list[str]            # reply pieces, one stream chunk each
    truncated: bool
    prompt_tokens: int
    tool: str | None = None     # the tool to call instead of replying
    arguments: str = ""         # its JSON arguments
    stop_sequence: str | None = None    # the request's stop sequence the reply was cut at
    cache_marks: int = 0        # cache_control marks in the request (Anthropic)

    @property
    def text(self) -> str:
        return "".join(self.words)

    @property
    def completion_tokens(self) -> int:
        return count_words(self.arguments) if self.tool else len(self.words)

    def argument_pieces(self) -> tuple[str, str]:
        """The tool arguments in two stream chunks."""
        half = len(self.arguments) // 2
        return self.arguments[:half], self.arguments[half:]


def make_answer(texts: list[str], last_user: str, limit: int | None = None,
                tool: str | None = None, json_mode: bool = False) -> Answer:
    """The deterministic answer to a conversation whose message texts are `texts`."""
    prompt = prompt_tokens(texts)
    if tool:
        arguments = orjson.dumps({"query": last_user}).decode()
        return Answer([], False, prompt, tool, arguments)
    reply = orjson.dumps({"echo": last_user}).decode() if json_mode else "Echo: " + last_user
    words, truncated = reply_words(reply, limit)
    return Answer(words, truncated, prompt)


def embedding(text: str, dimensions: int) -> list[float]:
    """A unit vector derived from a hash of `text`."""
    raw = hashlib.shake_256(text.encode()).digest(2 * dimensions)
    values = [v / 32767.5 - 1.0 for v in struct.unpack(f"<{dimensions}H", raw)]
    norm = math.sqrt(sum(v * v for v in values)) or 1.0
    return [v / norm for v in values]


def new_id(prefix: str) -> str:
    """A random id such as `chatcmpl-…`."""
    return prefix + os.urandom(12).hex()
