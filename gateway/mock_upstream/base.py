"""Shared types for the faked wire formats: what a handler gets, what it returns, and
what a vendor's errors and auth look like."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator

import orjson


@dataclass(slots=True)
class Call:
    """One parsed request, as the format handlers see it."""
    environ: dict
    body: dict
    model: str
    action: str = ""            # Gemini method, e.g. "generateContent"
    query: dict = field(default_factory=dict)


@dataclass(slots=True)
class Result:
    """A handler's answer: a whole body, or stream frames flagged as content or framing."""
    status: int = 200
    body: bytes = b""
    frames: Iterable[tuple[bytes, bool]] | None = None
    chunks: Iterator[bytes] | None = None   # what goes out instead of body, once paced
    content_type: str = "application/json"
    headers: list[tuple[str, str]] = field(default_factory=list)


Handler = Callable[[Call], Result]


@dataclass(frozen=True, slots=True)
class Vendor:
    """How one vendor words its errors and checks credentials."""
    error: Callable[[int, str], dict]
    authorized: Callable[[dict, dict], bool]
    auth_status: int
    auth_message: str
    bad_frame: bytes            # what `malformed` sends mid-stream
    text_frame: Callable[[str], bytes]      # one stream event carrying `text` (for big_event)
    error_headers: Callable[[int], list[tuple[str, str]]] | None = None   # e.g. Bedrock's error type
    auth_failure: Callable[[dict], Result] | None = None    # the refusal, when it depends on why


def error_result(vendor: Vendor, status: int, message: str) -> Result:
    """The vendor's error for `status`, body and headers."""
    result = json_result(vendor.error(status, message), status)
    if vendor.error_headers is not None:
        result.headers.extend(vendor.error_headers(status))
    return result


def json_result(obj, status: int = 200) -> Result:
    """`obj` as a JSON body with `status`."""
    return Result(status, orjson.dumps(obj))
