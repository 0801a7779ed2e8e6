"""SSE framing of upstream streams: linear work however the bytes are cut, a cap on one event,
and a stream that hits the cap ends with an error event and keeps its usage record."""
from __future__ import annotations

import orjson
import pytest

from gateway.providers.sse import EventTooLarge, SSEDecoder, sse_events
from tests.helpers import add_provider, make_key, usage_records

MiB = 1024 * 1024


def test_framing_handles_split_chunks_and_crlf():
    raw = [b"event: a\r\nda", b"ta: {\"x\":1}\r\n\r\n", b": comment\n\ndata: [DONE]\n", b"\n"]
    assert list(sse_events(iter(raw), MiB)) == [("a", b'{"x":1}'), (None, b"[DONE]")]


def test_multi_line_data_and_an_unclosed_last_event():
    raw = [b"data: one\ndata:two\n\nevent: e\ndata: last\n", b"data: cut mid-li"]
    assert list(sse_events(iter(raw), MiB)) == [(None, b"one\ntwo"), ("e", b"last")]


def _pieces(data: bytes, size: int):
    return (data[i:i + size] for i in range(0, len(data), size))


def test_one_big_event_in_small_chunks_costs_linear_work():
    payload = b"x" * (4 * MiB)
    raw = b"data: " + payload + b"\n\n"
    decoder = SSEDecoder(8 * MiB)
    events = [e for chunk in _pieces(raw, 100) for e in decoder.feed(chunk)]
    assert events == [(None, payload)]
    assert decoder.work <= 3 * len(raw)      # copying the buffer on every read: ~20,000 x len(raw)


def test_many_small_events_byte_by_byte_cost_linear_work():
    raw = b"".join(b"event: delta\ndata: {\"i\": %d}\n\n" % i for i in range(5000))
    decoder = SSEDecoder(MiB)
    events = [e for chunk in _pieces(raw, 1) for e in decoder.feed(chunk)]
    assert len(events) == 5000 and events[-1] == ("delta", b'{"i": 4999}')
    assert decoder.work <= 3 * len(raw)


@pytest.mark.parametrize("raw", [
    b"data: " + b"x" * 2000 + b"\n\n",                         # one data line
    b"".join(b"data: " + b"x" * 100 + b"\n" for _ in range(30)),  # many lines of one event
    b": " + b"x" * 2000,                                       # a line that never ends
])
def test_an_event_over_the_cap_fails(raw):
    decoder = SSEDecoder(1024)
    with pytest.raises(EventTooLarge) as e:
        for chunk in _pieces(raw, 64):
            decoder.feed(chunk)
    assert e.value.code == "upstream_event_too_large" and "1024 byte" in e.value.message


def test_events_under_the_cap_pass():
    raw = b"".join(b"data: " + b"x" * 1000 + b"\n\n" for _ in range(50))
    assert len(list(sse_events(_pieces(raw, 333), 1024))) == 50


KINDS = {"openai": "/v1", "anthropic": "/v1", "gemini": "/v1beta"}


@pytest.fixture(params=list(KINDS))
def streamed(request, sqlite_app, mock):
    kind = request.param
    sqlite_app.config["UPSTREAM_MAX_EVENT_BYTES"] = 256 * 1024
    add_provider(sqlite_app, "up", kind, mock + KINDS[kind], ["big=echo+big_event=300000", "fine=echo+big_event=200000"])
    key = make_key(sqlite_app)

    def stream(model: str) -> list[dict]:
        r = sqlite_app.test_client().post("/v1/chat/completions", headers={"Authorization": f"Bearer {key}"},
                                          json={"model": model, "stream": True,
                                                "messages": [{"role": "user", "content": "a b c"}]})
        assert r.status_code == 200
        lines = [line for line in r.data.split(b"\n\n") if line.startswith(b"data: ")]
        return [orjson.loads(line[6:]) if line != b"data: [DONE]" else "[DONE]" for line in lines]
    return stream


def test_a_stream_event_over_the_cap_ends_with_an_error_and_is_recorded(sqlite_app, streamed):
    events = streamed("big")
    assert len(events) >= 2 and "choices" in events[0]        # the first chunk went out before the big one
    assert events[-1]["error"]["code"] == "upstream_event_too_large"
    assert set(events[-1]["error"]) == {"message", "type", "param", "code"}
    [rec] = usage_records(sqlite_app)
    assert rec.status == 502 and rec.error_type == "upstream_error" and rec.stream
    assert rec.prompt_tokens > 0 and rec.provider == "up"


def test_a_big_event_under_the_cap_streams_through(sqlite_app, streamed):
    events = streamed("fine")
    assert events[-1] == "[DONE]"
    text = "".join(e["choices"][0]["delta"].get("content") or "" for e in events[:-1] if e.get("choices"))
    assert "x" * 200000 in text
    [rec] = usage_records(sqlite_app)
    assert rec.status == 200
