"""A chat stream (the SSE frames routing.stream.open_stream yields) as the Responses event
sequence: response.created, output items with their deltas, then response.completed
(or response.incomplete), or an error event and response.failed when the upstream fails."""
from __future__ import annotations

from typing import Callable, Iterator

import orjson

from gateway.proxy.dialects import responses as dialect


class ResponsesStream:
    """Turns chat chunks into Responses events, numbering them; `on_end(response)` gets the
    final response object of a stream that ended normally (completed or incomplete)."""

    def __init__(self, body: dict, model: str, response_id: str,
                 on_end: Callable[[dict], None] | None = None):
        self.response = dialect.response_shell(body, model, response_id)
        self.on_end = on_end
        self.seq = 0
        self.text_item: dict | None = None      # the open message item
        self.text_index = -1
        self.calls: dict[int, tuple[int, dict]] = {}    # chat tool index -> (output index, item)
        self.open_calls: list[int] = []
        self.finish_reason: str | None = None

    def frames(self, inner: Iterator[bytes]) -> Iterator[bytes]:
        """The Responses SSE frames for `inner`; closes it however the stream ends."""
        try:
            yield self._event("response.created", response=self._snapshot())
            yield self._event("response.in_progress", response=self._snapshot())
            for frame in inner:
                if not frame.startswith(b"data: "):
                    yield frame         # keepalive comments: the client knows we are alive
                    continue
                data = frame[6:].strip()
                if data == b"[DONE]":
                    yield from self._end()
                    return
                chunk = orjson.loads(data)
                if "error" in chunk:
                    yield from self._fail(chunk["error"])
                    return
                yield from self._chunk(chunk)
        finally:
            close = getattr(inner, "close", None)
            if close is not None:
                close()

    def _event(self, kind: str, **fields) -> bytes:
        payload = {"type": kind, "sequence_number": self.seq, **fields}
        self.seq += 1
        return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(payload) + b"\n\n"

    def _snapshot(self) -> dict:
        return dict(self.response, output=list(self.response["output"]))

    def _chunk(self, chunk: dict) -> Iterator[bytes]:
        if chunk.get("usage"):
            self.response["usage"] = dialect.usage_of(chunk["usage"])
        for choice in chunk.get("choices") or ():
            if choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or {}
            if delta.get("content"):
                yield from self._text(delta["content"])
            for call in delta.get("tool_calls") or ():
                yield from self._call(call)
            if choice.get("finish_reason"):
                self.finish_reason = choice["finish_reason"]

    def _text(self, text: str) -> Iterator[bytes]:
        if self.text_item is None:
            yield from self._close_calls()
            self.text_index = len(self.response["output"])
            self.text_item = dialect.message_item(
                "", dialect.item_id("msg_", self.response["id"], self.text_index), "in_progress")
            self.response["output"].append(self.text_item)
            yield self._event("response.output_item.added", output_index=self.text_index,
                              item=dict(self.text_item, content=[]))
            yield self._event("response.content_part.added", output_index=self.text_index,
                              item_id=self.text_item["id"], content_index=0,
                              part={"type": "output_text", "text": "", "annotations": [], "logprobs": []})
        self.text_item["content"][0]["text"] += text
        yield self._event("response.output_text.delta", output_index=self.text_index,
                          item_id=self.text_item["id"], content_index=0, delta=text, logprobs=[])

    def _close_text(self, status: str = "completed") -> Iterator[bytes]:
        item, self.text_item = self.text_item, None
        if item is None:
            return
        item["status"] = status
        part = item["content"][0]
        common = {"output_index": self.text_index, "item_id": item["id"], "content_index": 0}
        yield self._event("response.output_text.done", **common, text=part["text"], logprobs=[])
        yield self._event("response.content_part.done", **common, part=part)
        yield self._event("response.output_item.done", output_index=self.text_index, item=item)

    def _call(self, call: dict) -> Iterator[bytes]:
        index = call.get("index", 0)
        fn = call.get("function") or {}
        if index not in self.calls:
            yield from self._close_text()
            item = dialect.call_item(call.get("id") or dialect.new_id("call_"), fn.get("name") or "", "",
                                     dialect.item_id("fc_", self.response["id"], len(self.response["output"])),
                                     "in_progress")
            self.calls[index] = (len(self.response["output"]), item)
            self.open_calls.append(index)
            self.response["output"].append(item)
            yield self._event("response.output_item.added", output_index=self.calls[index][0], item=dict(item))
        out_index, item = self.calls[index]
        if fn.get("name") and not item["name"]:
            item["name"] = fn["name"]
        if fn.get("arguments"):
            item["arguments"] += fn["arguments"]
            yield self._event("response.function_call_arguments.delta", output_index=out_index,
                              item_id=item["id"], delta=fn["arguments"])

    def _close_calls(self, status: str = "completed") -> Iterator[bytes]:
        for index in self.open_calls:
            out_index, item = self.calls[index]
            item["status"] = status
            yield self._event("response.function_call_arguments.done", output_index=out_index,
                              item_id=item["id"], name=item["name"], arguments=item["arguments"])
            yield self._event("response.output_item.done", output_index=out_index, item=item)
        self.open_calls = []

    def _end(self) -> Iterator[bytes]:
        cut = self.finish_reason in ("length", "content_filter")
        yield from self._close_text("incomplete" if cut else "completed")
        yield from self._close_calls("incomplete" if cut else "completed")
        response = dialect.finish(self.response, self.finish_reason)
        if self.on_end is not None:
            self.on_end(response)       # stored before the client sees the end
        kind = "response.incomplete" if response["status"] == "incomplete" else "response.completed"
        yield self._event(kind, response=response)

    def _fail(self, error: dict) -> Iterator[bytes]:
        message = error.get("message") or "The upstream failed."
        code = error.get("code") or "server_error"
        yield self._event("error", code=code, message=message, param=error.get("param"))
        self.response.update(status="failed", error={"code": code, "message": message})
        yield self._event("response.failed", response=self.response)
