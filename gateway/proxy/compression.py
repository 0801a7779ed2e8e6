"""gzip and deflate on /v1: compressed request bodies in (capped by their decompressed size,
so a zip bomb is a 413, not a full memory), gzip-compressed JSON answers out."""
from __future__ import annotations

import gzip
import zlib

from flask import Request, Response, request

from gateway.errors import InvalidRequest, PayloadTooLarge, UnsupportedMediaType

MIN_BYTES = 1024            # smaller answers gain less than compressing costs
_WBITS = {"gzip": 16 + zlib.MAX_WBITS, "x-gzip": 16 + zlib.MAX_WBITS,
          "deflate": 32 + zlib.MAX_WBITS}     # deflate: zlib-wrapped (or gzip), as HTTP means it


def request_encoding(req: Request) -> str | None:
    """The body's Content-Encoding (None: identity); 415 for one we do not decode."""
    value = req.headers.get("Content-Encoding", "").strip().lower()
    if value in ("", "identity"):
        return None
    if value not in _WBITS:
        raise UnsupportedMediaType(f"Content-Encoding {value[:50]!r} is not supported; "
                                   f"send gzip, deflate or an uncompressed body.")
    return value


def decompress(data: bytes, encoding: str, limit: int) -> bytes:
    """`data` decoded, never more than `limit` bytes of it in memory, else 413; 400 if corrupt."""
    try:
        return _inflate(data, _WBITS[encoding], limit)
    except zlib.error:
        if encoding == "deflate":       # some clients send raw deflate, without the zlib wrapper
            try:
                return _inflate(data, -zlib.MAX_WBITS, limit)
            except zlib.error:
                pass
    raise InvalidRequest(f"The request body is not valid {encoding} data.")


def _inflate(data: bytes, wbits: int, limit: int) -> bytes:
    out, size = [], 0
    while data:
        d = zlib.decompressobj(wbits)
        chunk = d.decompress(data, limit + 1 - size)
        while True:
            out.append(chunk)
            size += len(chunk)
            if size > limit:
                raise PayloadTooLarge(f"The decompressed request body is over the {limit} byte limit.")
            if not d.unconsumed_tail:
                break
            chunk = d.decompress(d.unconsumed_tail, limit + 1 - size)
        if not d.eof:
            raise zlib.error("the compressed body ends early")
        data = d.unused_data        # gzip allows several members one after another
    return b"".join(out)


def accepts_gzip(req: Request) -> bool:
    """True when the client takes gzip (a q of 0 refuses it)."""
    return req.accept_encodings["gzip"] > 0 or req.accept_encodings["x-gzip"] > 0


def compress_response(response: Response) -> Response:
    """gzip a whole JSON answer over MIN_BYTES for a client that accepts it; never a stream."""
    if (not request.path.startswith("/v1/") or response.is_streamed or response.direct_passthrough
            or response.mimetype != "application/json" or "Content-Encoding" in response.headers):
        return response
    response.vary.add("Accept-Encoding")
    if "gzip" not in request.headers.get("Accept-Encoding", "") or not accepts_gzip(request):
        return response     # the plain look first: most API clients send no Accept-Encoding
    data = response.get_data()
    if len(data) <= MIN_BYTES:
        return response
    response.set_data(gzip.compress(data, compresslevel=5, mtime=0))
    response.headers["Content-Encoding"] = "gzip"
    return response
