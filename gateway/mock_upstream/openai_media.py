"""OpenAI's media and utility APIs (and the rerank format vLLM, Jina, Cohere v1 and Together
share): images, audio transcription, translation and speech, moderations, rerank."""
from __future__ import annotations

import base64
import math
import struct
import time
from typing import Iterator

from gateway.mock_upstream.answers import count_words, new_id
from gateway.mock_upstream.base import Call, Result, json_result
from gateway.mock_upstream.openai import error

# A 1x1 transparent PNG: what b64_json images hold.
PNG = base64.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg==")
BYTES_PER_SECOND = 16000            # the length the mock assumes for audio that is not WAV
# One MPEG-1 Layer III frame, 128 kbit/s at 44.1 kHz: a header and 413 bytes of silence.
MP3_FRAME = b"\xff\xfb\x90\x64" + bytes(413)
ID3 = b"ID3\x04\x00\x00\x00\x00\x00\x00"        # an empty ID3v2.4 tag
AUDIO_TYPES = {"mp3": "audio/mpeg", "opus": "audio/ogg", "aac": "audio/aac", "flac": "audio/flac",
               "wav": "audio/wav", "pcm": "audio/pcm"}
CATEGORIES = ("harassment", "harassment/threatening", "hate", "hate/threatening", "illicit",
              "illicit/violent", "self-harm", "self-harm/intent", "self-harm/instructions", "sexual",
              "sexual/minors", "violence", "violence/graphic")
FLAGGED_WORDS = {"kill": "violence", "attack": "violence", "hate": "hate"}


def describe_upload(filename: str, content_type: str, data: bytes) -> dict:
    """What the mock keeps of an uploaded file: its name, type, size and playing time (a WAV
    header's, else estimated at 128 kbit/s)."""
    return {"filename": filename, "content_type": content_type, "size": len(data),
            "duration": _wav_seconds(data) or round(len(data) / BYTES_PER_SECOND, 3)}


def _wav_seconds(data: bytes) -> float | None:
    if len(data) < 44 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        return None
    pos, rate = 12, None
    while pos + 8 <= len(data):
        tag, size = data[pos:pos + 4], struct.unpack("<I", data[pos + 4:pos + 8])[0]
        if tag == b"fmt ":
            rate = struct.unpack("<I", data[pos + 16:pos + 20])[0]     # byte rate
        elif tag == b"data" and rate:
            return round(min(size, len(data) - pos - 8) / rate, 3)
        pos += 8 + size + (size & 1)
    return None


def images(call: Call) -> Result:
    """POST /v1/images/generations: `n` images as URLs or base64."""
    n = call.body.get("n") or 1
    if not call.body.get("prompt"):
        return json_result(error(400, "'prompt' is required"), 400)
    if call.body.get("response_format") == "b64_json":
        data = [{"b64_json": base64.b64encode(PNG).decode()} for _ in range(n)]
    else:
        data = [{"url": f"https://mock-images.invalid/{new_id('img-')}.png"} for _ in range(n)]
    for item in data:
        item["revised_prompt"] = call.body["prompt"]
    return json_result({"created": int(time.time()), "data": data})


def _timestamp(seconds: float, sep: str) -> str:
    ms = int(round(seconds * 1000))
    h, rem = divmod(ms, 3600_000)
    m, rem = divmod(rem, 60_000)
    s, ms = divmod(rem, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{sep}{ms:03d}"


def _audio_text(call: Call, task: str) -> Result:
    upload = call.body.get("file")
    if not isinstance(upload, dict):
        return json_result(error(400, "'file' is required (multipart/form-data)"), 400)
    duration = upload["duration"]
    text = f"Mock {task} of {upload['filename']}."
    fmt = call.body.get("response_format") or "json"
    if fmt == "text":
        return Result(body=(text + "\n").encode(), content_type="text/plain; charset=utf-8")
    if fmt in ("srt", "vtt"):
        sep = "," if fmt == "srt" else "."
        cue = f"{_timestamp(0, sep)} --> {_timestamp(duration, sep)}\n{text}\n"
        body = f"1\n{cue}\n" if fmt == "srt" else f"WEBVTT\n\n{cue}\n"
        return Result(body=body.encode(), content_type="text/plain; charset=utf-8")
    if fmt == "verbose_json":
        segment = {"id": 0, "seek": 0, "start": 0.0, "end": duration, "text": " " + text, "tokens": [],
                   "temperature": 0.0, "avg_logprob": -0.1, "compression_ratio": 1.0, "no_speech_prob": 0.0}
        return json_result({"task": task, "language": call.body.get("language") or "english",
                            "duration": duration, "text": text, "segments": [segment]})
    return json_result({"text": text, "usage": {"type": "duration", "seconds": math.ceil(duration)}})


def transcriptions(call: Call) -> Result:
    """POST /v1/audio/transcriptions (multipart): json, verbose_json, text, srt or vtt."""
    return _audio_text(call, "transcribe")


def translations(call: Call) -> Result:
    """POST /v1/audio/translations (multipart)."""
    return _audio_text(call, "translate")


def speech(call: Call) -> Result:
    """POST /v1/audio/speech: a few MP3 frames (more for longer input), streamed frame by frame."""
    text = call.body.get("input")
    if not isinstance(text, str) or not text:
        return json_result(error(400, "'input' is required"), 400)
    fmt = call.body.get("response_format") or "mp3"
    frames = min(2 + len(text) // 50, 40)
    return Result(frames=_speech_frames(frames), content_type=AUDIO_TYPES.get(fmt, "audio/mpeg"))


def _speech_frames(n: int) -> Iterator[tuple[bytes, bool]]:
    yield ID3, False
    for _ in range(n):
        yield MP3_FRAME, True


def _inputs(value) -> list[str]:
    items = value if isinstance(value, list) else [value]
    return [x if isinstance(x, str) else str((x or {}).get("text") or "") for x in items]


def moderations(call: Call) -> Result:
    """POST /v1/moderations: flags a text naming violence or hate."""
    results = []
    for text in _inputs(call.body.get("input")):
        words = {w.strip(".,!?").lower() for w in text.split()}
        hit = {FLAGGED_WORDS[w] for w in words if w in FLAGGED_WORDS}
        results.append({"flagged": bool(hit),
                        "categories": {c: c in hit for c in CATEGORIES},
                        "category_scores": {c: 0.9 if c in hit else 0.0001 for c in CATEGORIES},
                        "category_applied_input_types": {c: ["text"] for c in CATEGORIES}})
    return json_result({"id": new_id("modr-"), "model": call.model, "results": results})


def rerank(call: Call) -> Result:
    """POST /v1/rerank: documents scored by the words they share with the query."""
    query = {w.lower() for w in str(call.body.get("query") or "").split()}
    docs = _inputs(call.body.get("documents") or [])
    scored = []
    for i, doc in enumerate(docs):
        words = {w.strip(".,!?").lower() for w in doc.split()}
        scored.append((len(query & words) / (len(query) or 1), i))
    scored.sort(key=lambda x: (-x[0], x[1]))
    top = call.body.get("top_n") or len(scored)
    results = []
    for score, i in scored[:top]:
        item = {"index": i, "relevance_score": round(score, 4)}
        if call.body.get("return_documents"):
            item["document"] = {"text": docs[i]}
        results.append(item)
    tokens = count_words(" ".join(query)) + sum(count_words(d) for d in docs)
    return json_result({"id": new_id("rerank-"), "model": call.model, "results": results,
                        "meta": {"billed_units": {"search_units": math.ceil(len(docs) / 100) or 1}},
                        "usage": {"total_tokens": tokens}})
