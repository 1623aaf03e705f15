"""The fixed rules of draft-ietf-teep-otrp-over-http-15 that both ends share (docs/protocol-facts.md §4).

Kept apart from the server and the client so the two cannot drift: the headers every response with
content carries, the status codes, and the media-type match that Accept and Content-Type use.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

# RFC 9205 §4.13 headers the draft requires on every response with content. Cache-Control is NOT sent:
# -15 dropped the `no-store` of earlier versions (POST responses are uncacheable anyway).
SECURITY_HEADERS: Mapping[str, str] = MappingProxyType(
    {
        "X-Content-Type-Options": "nosniff",
        "Content-Security-Policy": "default-src 'none'",
        "Referrer-Policy": "no-referrer",
    }
)

STATUS_MESSAGE = 200  # the TAM returns its next message
STATUS_DONE = 204  # the TAM has nothing more: the session ends
STATUS_BAD_REQUEST = 400
STATUS_FORBIDDEN = 403
STATUS_METHOD_NOT_ALLOWED = 405
STATUS_NOT_ACCEPTABLE = 406  # Accept missing or without the TEEP media type ("an appropriate error")
STATUS_TOO_LARGE = 413
STATUS_UNSUPPORTED_MEDIA = 415
STATUS_SERVER_ERROR = 500
STATUS_OVERLOADED = 503
STATUS_BAD_GATEWAY = 502  # a gateway's upstream failed or refused
STATUS_GATEWAY_TIMEOUT = 504  # a gateway's upstream did not answer in time

DEFAULT_PATH = "/tam"


def media_type_of(header: str | None) -> str:
    """The bare media type of a Content-Type header (`application/teep+cbor; x=y` -> the type, lower case)."""
    if not header:
        return ""
    return header.split(";", 1)[0].strip().lower()


def accepts(accept: str | None, media_type: str) -> bool:
    """True if an Accept header admits `media_type` (exact, `type/*` or `*/*`, q > 0)."""
    if not accept:
        return False
    want = media_type.lower()
    main = want.split("/", 1)[0]
    for item in accept.split(","):
        parts = [p.strip() for p in item.split(";")]
        rng = parts[0].lower()
        q = 1.0
        for param in parts[1:]:
            if param.lower().startswith("q="):
                try:
                    q = float(param[2:])
                except ValueError:
                    q = 0.0
        if q > 0 and rng in (want, f"{main}/*", "*/*"):
            return True
    return False


def first_accepted(accept: str | None, media_types: tuple[str, ...]) -> str | None:
    """The first of `media_types` (ours, in our order of preference) that an Accept header admits."""
    return next((m for m in media_types if accepts(accept, m)), None)


async def read_capped(stream: Any, limit: int) -> tuple[bytes, bool]:
    """Read a body to its end but never more than `limit` bytes; returns (bytes, over_limit).

    aiohttp's `StreamReader.read(n)` returns what is buffered (up to n), not n bytes: loop until EOF.
    """
    parts: list[bytes] = []
    total = 0
    while True:
        chunk = await stream.read(min(65536, limit + 1 - total))
        if not chunk:
            return b"".join(parts), False
        parts.append(chunk)
        total += len(chunk)
        if total > limit:
            return b"".join(parts)[: limit + 1], True
