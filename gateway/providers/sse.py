"""Server-Sent Events framing of upstream streams, in time linear in the bytes received and with
each event capped in size: a provider sending one huge event costs one pass over it, then an
error, not a copy of the whole buffer on every read."""
from __future__ import annotations

from typing import Iterator

from gateway.errors import UpstreamError

Event = tuple[str | None, bytes]     # the `event:` name (None when absent), the `data:` payload


class EventTooLarge(UpstreamError):
    """The provider sent an event (or one line) over the gateway's size cap."""

    def __init__(self, limit: int):
        super().__init__(f"The provider sent a stream event over the {limit} byte limit.",
                         code="upstream_event_too_large")


class SSEDecoder:
    """Feed it chunks as they arrive; it returns the events they complete.

    Each byte is scanned for a line end once and copied at most twice (into its line, and into
    the joined line when it spans chunks); `work` counts those bytes, so tests can measure it."""

    def __init__(self, max_event_bytes: int):
        self.limit = max_event_bytes
        self.work = 0
        self._partial: list[bytes] = []     # the current line, not yet ended
        self._partial_len = 0
        self._event: str | None = None
        self._data: list[bytes] = []
        self._size = 0                      # bytes of the current event's data so far

    def feed(self, chunk: bytes) -> list[Event]:
        """The events completed by `chunk`; raises EventTooLarge past the cap."""
        out: list[Event] = []
        start = 0
        self.work += len(chunk)
        while (nl := chunk.find(b"\n", start)) >= 0:
            piece = chunk[start:nl]
            if self._partial:
                self._partial.append(piece)
                piece = b"".join(self._partial)
                self._partial, self._partial_len = [], 0
            self.work += len(piece)
            self._line(piece[:-1] if piece.endswith(b"\r") else piece, out)
            start = nl + 1
        if start < len(chunk):
            rest = chunk[start:]
            self._partial.append(rest)
            self._partial_len += len(rest)
            self.work += len(rest)
        if self._size + self._partial_len > self.limit:
            raise EventTooLarge(self.limit)
        return out

    def end(self) -> list[Event]:
        """What is left when the stream ends: an event not closed by a blank line still counts;
        a line cut off mid-way does not."""
        return [(self._event, b"\n".join(self._data))] if self._data else []

    def _line(self, line: bytes, out: list[Event]) -> None:
        if not line:
            if self._data:
                out.append((self._event, b"\n".join(self._data)))
            self._event, self._data, self._size = None, [], 0
        elif line.startswith(b"data:"):
            value = line[6:] if line[5:6] == b" " else line[5:]
            self._data.append(value)
            self._size += len(value) + 1
            if self._size > self.limit:
                raise EventTooLarge(self.limit)
        elif line.startswith(b"event:"):
            self._event = line[6:].strip().decode("utf-8", "replace")
        # comments (":") and id/retry fields carry nothing we need


def sse_events(chunks: Iterator[bytes], max_event_bytes: int) -> Iterator[Event]:
    """Split a byte stream into Server-Sent Events: (event name or None, data)."""
    decoder = SSEDecoder(max_event_bytes)
    for chunk in chunks:
        yield from decoder.feed(chunk)
    yield from decoder.end()
