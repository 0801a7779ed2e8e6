"""Fault and pacing directives: parsing them, and applying them to a response."""
from __future__ import annotations

import errno
import re
import time
from dataclasses import dataclass
from typing import Iterable, Iterator

from gateway.mock_upstream.base import Call, Handler, Result, Vendor, error_result

_HANG_SECONDS = 3600


@dataclass(slots=True)
class Faults:
    """What to do to one response besides answering it."""
    latency_ms: float = 0
    chunk_delay_ms: float = 0
    fail: int | None = None
    retry_after: str | None = None
    retry_after_ms: str | None = None
    hang: bool = False
    reset: bool = False
    cut: int | None = None
    malformed: bool = False
    big_event: int | None = None


_FAIL_SHORT = re.compile(r"fail-(\d{3})")
_FLAGS = {"hang", "reset", "malformed"}
_VALUES = {"latency": ("latency_ms", float), "chunk_delay": ("chunk_delay_ms", float),
           "fail": ("fail", int), "retry_after": ("retry_after", str),
           "retry_after_ms": ("retry_after_ms", str), "cut": ("cut", int),
           "big_event": ("big_event", int)}


def apply_directives(faults: Faults, spec: str) -> None:
    """Set the directives in `spec` ("fail=429+retry_after=2", "+" or "," separated)
    on `faults`; raise ValueError for an unknown or malformed one."""
    for item in re.split(r"[+,\s]+", spec.strip()):
        if not item:
            continue
        name, eq, value = item.partition("=")
        if short := _FAIL_SHORT.fullmatch(item):
            faults.fail = int(short[1])
        elif name in _FLAGS and not eq:
            setattr(faults, name, True)
        elif name in _VALUES and value:
            attr, kind = _VALUES[name]
            try:
                setattr(faults, attr, kind(value))
            except ValueError:
                raise ValueError(f"bad mock directive {item!r}") from None
        else:
            raise ValueError(f"unknown mock directive {item!r}")
    if faults.fail is not None and not 100 <= faults.fail <= 599:
        raise ValueError(f"bad mock status {faults.fail}")


NO_FAULTS = Faults()


def model_faults(faults: Faults, model: str) -> None:
    """Apply the directives carried by a model name like `echo+latency=50` or `fail-500`."""
    base, _, rest = model.partition("+")
    if short := _FAIL_SHORT.fullmatch(base):
        faults.fail = int(short[1])
    if rest:
        apply_directives(faults, rest)


def request_faults(environ: dict, model: str, queued: str | None) -> Faults | None:
    """Directives from the model name, x-mock-* headers and a queued fault; None if none."""
    latency = environ.get("HTTP_X_MOCK_LATENCY_MS")
    delay = environ.get("HTTP_X_MOCK_CHUNK_DELAY_MS")
    header = environ.get("HTTP_X_MOCK_FAULT")
    if not (latency or delay or header or queued or "+" in model or "fail-" in model):
        return None
    faults = Faults()
    model_faults(faults, model)
    try:
        if latency:
            faults.latency_ms = float(latency)
        if delay:
            faults.chunk_delay_ms = float(delay)
    except ValueError:
        raise ValueError("x-mock-latency-ms and x-mock-chunk-delay-ms take milliseconds")
    for spec in (header, queued):
        if spec:
            apply_directives(faults, spec)
    return faults


def run_faulty(handler: Handler, vendor: Vendor, faults: Faults,
               call: Call) -> Result | Iterator[bytes]:
    """Run a handler under faults: delays, errors, resets, cut or malformed bodies."""
    if faults.latency_ms:
        time.sleep(faults.latency_ms / 1000)
    if faults.hang:
        time.sleep(_HANG_SECONDS)
    if faults.reset:
        return _reset(call.environ)
    if faults.fail is not None:
        result = error_result(vendor, faults.fail, f"mock failure {faults.fail}")
        if faults.retry_after:
            result.headers.append(("retry-after", faults.retry_after))
        if faults.retry_after_ms:
            result.headers.append(("retry-after-ms", faults.retry_after_ms))
        return result
    result = handler(call)
    if result.frames is not None:
        return result   # streams get their faults while paced
    if faults.malformed:
        result.body = b"{not json"
    elif faults.cut is not None:
        # Announce the full length, so the client sees a short body.
        result.headers.append(("Content-Length", str(len(result.body))))
        result.chunks = _cut_body(result.body, call.environ)
    return result


def _abort(environ: dict):
    """Drop the connection abruptly; in-process, just raise."""
    close = environ.get("mock.abort")
    if close is not None:
        close()
    raise ConnectionResetError(errno.ECONNRESET, "mock connection reset")


def _reset(environ: dict) -> Iterator[bytes]:
    _abort(environ)
    yield b""  # pragma: no cover - makes this a generator


def _cut_body(body: bytes, environ: dict) -> Iterator[bytes]:
    yield body[:len(body) // 2]
    _abort(environ)


def paced(frames: Iterable[tuple[bytes, bool]], faults: Faults, vendor: Vendor,
          environ: dict) -> Iterator[bytes]:
    """Yield stream frames, applying chunk_delay, malformed, big_event and cut.

    Framing frames ride along with the next content frame, to save writes."""
    pending: list[bytes] = []
    sent = 0
    delay = faults.chunk_delay_ms / 1000
    for frame, is_content in frames:
        if not is_content:
            pending.append(frame)
            continue
        if faults.cut is not None and sent >= faults.cut:
            _abort(environ)
        if sent and delay:
            time.sleep(delay)
        pending.append(frame)
        sent += 1
        if sent == 1 and faults.malformed:
            pending.append(vendor.bad_frame)
        if sent == 1 and faults.big_event:
            pending.append(vendor.text_frame("x" * faults.big_event))
        yield b"".join(pending)
        pending.clear()
    if faults.cut is not None:
        _abort(environ)  # fewer content chunks than N: still no terminal event
    if pending:
        yield b"".join(pending)
