"""Check a TAM against the rules of draft-ietf-teep-otrp-over-http-15 from the Broker's side.

For interop with TAMs we did not write: it sends the requests a Broker sends (and a few a Broker
should never send) and reports, rule by rule, what the TAM did. MUST rules fail, SHOULD rules warn.
It only reads the first answer far enough to say whether it is a COSE-signed (or JWS-signed)
QueryRequest; running a whole session is the job of the Broker (`teep-coap agent run`).

It lives in `profiles` (not in `transport.http`) because it looks inside the messages, which a
transport never does; it drives HTTP with aiohttp directly and uses the binding's `rules`.
"""

from __future__ import annotations

import json
import ssl
from dataclasses import dataclass

import aiohttp
import cbor2

from teep_coap.model.codes import MEDIA_TYPE_TEEP_CBOR, MEDIA_TYPE_TEEP_JSON
from teep_coap.security.cose import inspect
from teep_coap.security.errors import SecurityError
from teep_coap.security.jose import parse_json
from teep_coap.transport.http import rules

PASS, WARN, FAIL = "pass", "warn", "fail"


@dataclass(frozen=True)
class Check:
    """The outcome of one rule."""

    rule: str
    outcome: str  # PASS | WARN | FAIL
    detail: str


@dataclass(frozen=True)
class _Answer:
    status: int
    headers: dict[str, str]
    body: bytes


def _first_message_kind(body: bytes, media_type: str) -> str:
    """What the first answer looks like: 'QueryRequest (COSE_Sign1)' or a reason it is not one."""
    if media_type == MEDIA_TYPE_TEEP_JSON:
        try:
            parsed = parse_json(body)
            inner = json.loads(parsed.payload)
        except (SecurityError, ValueError) as exc:
            return f"not a JWS-signed JSON message ({exc})"
        kind = "general JWS" if parsed.general else "flattened JWS"
        msg_type = inner.get("type") if isinstance(inner, dict) else None
        return f"QueryRequest ({kind})" if msg_type in (1, "query-request") else f"type {msg_type!r} ({kind})"

    try:
        info = inspect(body, allow_untagged=False)
        assert info.payload is not None
        inner = cbor2.loads(info.payload)
    except (SecurityError, AssertionError, ValueError, cbor2.CBORDecodeError) as exc:
        return f"not a COSE-signed TEEP message ({exc})"
    if isinstance(inner, list) and inner and inner[0] == 1:
        return f"QueryRequest ({info.structure})"
    return f"TEEP type {inner[0] if isinstance(inner, list) and inner else '?'} ({info.structure})"


async def probe_tam(
    uri: str,
    *,
    media_type: str = MEDIA_TYPE_TEEP_CBOR,
    ssl_context: ssl.SSLContext | None = None,
    timeout: float = 10.0,
) -> list[Check]:
    """Run the checks against the TAM at `uri`; never follows redirects, keeps no cookies.

    Note: the first check opens a session on the TAM (it answers with a QueryRequest that we never
    answer), as any Broker that gives up would; TAMs expire such requests.
    """
    checks: list[Check] = []
    session = aiohttp.ClientSession(
        cookie_jar=aiohttp.DummyCookieJar(),
        timeout=aiohttp.ClientTimeout(total=timeout),
        connector=aiohttp.TCPConnector(ssl=ssl_context if ssl_context is not None else True),
    )

    async def ask(method: str, body: bytes, headers: dict[str, str]) -> _Answer | str:
        try:
            async with session.request(method, uri, data=body, headers=headers, allow_redirects=False) as r:
                return _Answer(r.status, dict(r.headers), await r.content.read(1 << 20))
        except (aiohttp.ClientError, TimeoutError) as exc:
            return f"{type(exc).__name__}: {exc}"

    try:
        first = await ask("POST", b"", {"Accept": media_type})
        if isinstance(first, str):
            return [Check("TAM reachable", FAIL, first)]
        ok = first.status == rules.STATUS_MESSAGE and bool(first.body)
        checks.append(
            Check(
                "empty POST with Accept starts a session: 200 with a message",
                PASS if ok else FAIL,
                f"status {first.status}, {len(first.body)} bytes",
            )
        )
        if first.body:
            got = rules.media_type_of(first.headers.get("Content-Type"))
            checks.append(
                Check(f"Content-Type is {media_type}", PASS if got == media_type else FAIL, got or "absent")
            )
            for name, value in rules.SECURITY_HEADERS.items():
                have = first.headers.get(name)
                checks.append(Check(f"{name}: {value}", PASS if have == value else FAIL, have or "absent"))
            kind = _first_message_kind(first.body, media_type)
            checks.append(
                Check(
                    "first message is a signed QueryRequest",
                    PASS if kind.startswith("QueryRequest") else FAIL,
                    kind,
                )
            )
        checks.append(
            Check(
                "no Cache-Control (-15)",
                PASS if "Cache-Control" not in first.headers else FAIL,
                first.headers.get("Cache-Control", "absent"),
            )
        )
        checks.append(
            Check(
                "no cookies set",
                PASS if "Set-Cookie" not in first.headers else WARN,
                first.headers.get("Set-Cookie", "none"),
            )
        )
        wrong = await ask("POST", b"\x00", {"Accept": media_type, "Content-Type": "application/octet-stream"})
        if isinstance(wrong, str):
            checks.append(Check("wrong Content-Type is refused with 415", FAIL, wrong))
        else:
            outcome = PASS if wrong.status == rules.STATUS_UNSUPPORTED_MEDIA else WARN
            checks.append(
                Check("wrong Content-Type is refused with 415 (SHOULD)", outcome, f"status {wrong.status}")
            )
        no_accept = await ask("POST", b"", {"Accept": "text/html"})
        if isinstance(no_accept, str):
            checks.append(Check("request without the TEEP Accept fails (SHOULD)", FAIL, no_accept))
        else:
            outcome = PASS if no_accept.status >= 400 else WARN
            checks.append(
                Check("request without the TEEP Accept fails (SHOULD)", outcome, f"status {no_accept.status}")
            )
        get = await ask("GET", b"", {"Accept": media_type})
        if isinstance(get, str):
            checks.append(Check("GET is not served (POST only)", FAIL, get))
        else:
            outcome = PASS if not 200 <= get.status < 300 else WARN
            checks.append(Check("GET is not served (POST only)", outcome, f"status {get.status}"))
    finally:
        await session.close()
    return checks
