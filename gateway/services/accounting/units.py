"""What a media request is billed by (images, seconds of audio, characters of speech, search
units, requests): the worst case reserved before the call, and what the answer says was used."""
from __future__ import annotations

import math
from dataclasses import dataclass

import orjson

# The longest a file of this size plausibly plays (8 kbit/s speech codecs): what is reserved.
AUDIO_RESERVE_BYTES_PER_SECOND = 1000
# A 128 kbit/s MP3, the usual upload: the billed length when the upstream states none.
AUDIO_ESTIMATE_BYTES_PER_SECOND = 16000
RERANK_DOCUMENTS_PER_UNIT = 100     # one search unit: a query with up to 100 documents


@dataclass(frozen=True, slots=True)
class Units:
    count: float
    unit: str               # pricing.PRICE_UNITS' counted units: image, second, character, ...
    estimated: bool = False


def _file_size(body: dict) -> int:
    part = body.get("file")
    return len(getattr(part, "data", b"") or b"")


def _images(body: dict) -> Units:
    n = body.get("n")
    return Units(n if isinstance(n, int) and not isinstance(n, bool) and n > 0 else 1, "image")


def _search_units(body: dict) -> Units:
    docs = body.get("documents")
    return Units(max(1, math.ceil(len(docs if isinstance(docs, list) else ()) / RERANK_DOCUMENTS_PER_UNIT)),
                 "search_unit")


def _speech(body: dict) -> Units:
    text = body.get("input")
    return Units(len(text) if isinstance(text, str) else 0, "character")


def _audio_worst(body: dict) -> Units:
    return Units(round(_file_size(body) / AUDIO_RESERVE_BYTES_PER_SECOND, 3), "second", True)


WORST = {"image": _images, "transcription": _audio_worst, "translation": _audio_worst,
         "speech": _speech, "moderation": lambda body: Units(1, "request"), "rerank": _search_units}


def worst(operation: str, body: dict) -> Units | None:
    """The most units a request may be billed for; None for token-billed operations."""
    est = WORST.get(operation)
    return est(body) if est else None


def _json(data: bytes) -> dict:
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError:
        return {}
    return obj if isinstance(obj, dict) else {}


def _images_made(body: dict, data: bytes) -> Units:
    made = _json(data).get("data")
    return Units(len(made), "image") if isinstance(made, list) else _images(body)


def _audio_seconds(body: dict, data: bytes) -> Units:
    """verbose_json's `duration`, or json's `usage: {type: duration, seconds}`; else estimated
    from the file's size (text, srt and vtt answers state no length)."""
    obj = _json(data)
    usage = obj.get("usage") if isinstance(obj.get("usage"), dict) else {}
    for seconds in (obj.get("duration"), usage.get("seconds") if usage.get("type") == "duration" else None):
        if isinstance(seconds, (int, float)) and not isinstance(seconds, bool) and seconds >= 0:
            return Units(float(seconds), "second")
    return Units(round(_file_size(body) / AUDIO_ESTIMATE_BYTES_PER_SECOND, 3), "second", True)


def _search_units_used(body: dict, data: bytes) -> Units:
    billed = (_json(data).get("meta") or {}).get("billed_units") or {}      # Cohere states its count
    units = billed.get("search_units") if isinstance(billed, dict) else None
    if isinstance(units, (int, float)) and not isinstance(units, bool) and units >= 0:
        return Units(units, "search_unit")
    return _search_units(body)


MEASURED = {"image": _images_made, "transcription": _audio_seconds, "translation": _audio_seconds,
            "speech": lambda body, data: _speech(body), "moderation": lambda body, data: Units(1, "request"),
            "rerank": _search_units_used}


def measured(operation: str, body: dict, data: bytes) -> Units | None:
    """The units a served request used, read from the upstream's answer where it says."""
    read = MEASURED.get(operation)
    return read(body, data) if read else None
