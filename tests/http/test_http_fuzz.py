"""Whatever a client sends, the TAM answers with a status the binding defines and the required headers."""

from __future__ import annotations

import asyncio

import aiohttp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from teep_coap.model.codes import MEDIA_TYPE_TEEP_CBOR
from teep_coap.transport.base import PeerInfo, Rejection, RequestRejected
from teep_coap.transport.http import HttpServerOptions, HttpTamServer

ALLOWED = {200, 204, 400, 405, 406, 413, 415, 500}
CONTENT_TYPES = st.sampled_from(
    [
        None,
        MEDIA_TYPE_TEEP_CBOR,
        "application/teep+cbor; charset=x",
        "APPLICATION/TEEP+CBOR",
        "text/plain",
        "application/cbor",
        "",
    ]
)
ACCEPTS = st.sampled_from(
    [None, MEDIA_TYPE_TEEP_CBOR, "*/*", "text/html", "application/*;q=0", "application/*"]
)


async def strict(payload: bytes, peer: PeerInfo) -> bytes | None:
    if not payload:
        return b"\xd2\x84"
    if payload[:1] == b"\x00":
        raise RequestRejected(Rejection.BAD_REQUEST, "zero")
    if payload[:1] == b"\xff":
        raise ValueError("boom")
    return None


async def one_request(
    method: str, accept: str | None, ctype: str | None, body: bytes
) -> tuple[int, dict[str, str]]:
    async with HttpTamServer(strict, HttpServerOptions(max_message_size=256)) as server:
        headers = {}
        if accept is not None:
            headers["Accept"] = accept
        if ctype is not None:
            headers["Content-Type"] = ctype
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as s,
            s.request(
                method, server.uri, data=body, headers=headers, skip_auto_headers=("Content-Type",)
            ) as r,
        ):
            await r.read()
            return r.status, dict(r.headers)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from(["POST", "POST", "POST", "GET", "PUT"]), ACCEPTS, CONTENT_TYPES, st.binary(max_size=400)
)
def test_any_request_gets_a_defined_answer(
    method: str, accept: str | None, ctype: str | None, body: bytes
) -> None:
    status, headers = asyncio.run(one_request(method, accept, ctype, body))
    assert status in ALLOWED
    assert headers.get("X-Content-Type-Options") == "nosniff"
    assert "Cache-Control" not in headers
    if status == 200:
        assert headers["Content-Type"] == MEDIA_TYPE_TEEP_CBOR and method == "POST" and not body
    if (
        method == "POST"
        and body
        and len(body) <= 256
        and accept in (MEDIA_TYPE_TEEP_CBOR, "*/*", "application/*")
    ):
        ok_type = ctype is not None and ctype.split(";")[0].strip().lower() == MEDIA_TYPE_TEEP_CBOR
        assert (status == 415) == (not ok_type)
    if len(body) > 256 and method == "POST" and accept in (MEDIA_TYPE_TEEP_CBOR, "*/*"):
        assert status == 413
