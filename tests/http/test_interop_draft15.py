"""Issue 10 case 5 over real HTTP on loopback: draft-15-era peers written here (aiohttp, hand-made
CBOR/COSE bytes), against our Broker + Agent and against our TAM, with the opt-in profile
`teep-cbor-http-draft15` and with the strict default `teep-cbor-http`.

The draft-15-era peer: answers and posts `application/teep+cose`, offers only ES256 (`[[18, -7]]`),
sends SUIT COSE profiles as `[-7, 1]`, an empty kid h'', and a QueryResponse with `tc-list: []`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp
import cbor2
import pytest
from aiohttp import web

from teep_coap.errors import TeepCoapError
from teep_coap.profiles import load_profile
from teep_coap.profiles.runtime import run_agent
from teep_coap.profiles.session import TamHandler
from teep_coap.profiles.stack import make_server
from teep_coap.protocol.tam import TamConfig, TamEngine
from teep_coap.security import cose
from teep_coap.security.keys import SigningKey, VerifyingKey, generate_key
from teep_coap.security.suit import build_envelope
from teep_coap.store.agentdir import init_agent_state
from teep_coap.store.tam_db import TamStore

OLD_TYPE = "application/teep+cose"
NEW_TYPE = "application/teep+cbor"
TOKEN = bytes.fromhex("0011223344556677")
ES256 = -7
VENDOR, CLASS = bytes(range(16)), bytes(range(16, 32))
TC = (b"old-peer", b"tc")
TIMEOUT = aiohttp.ClientTimeout(total=10)


def _sign1(payload: bytes, signer: SigningKey) -> bytes:
    """COSE_Sign1 as a draft-15-era peer sends it: protected {1: -7}, unprotected {4: h''}."""
    prot = cbor2.dumps({1: ES256})
    to_sign = cbor2.dumps(["Signature1", prot, b"", payload])
    return cbor2.dumps(cbor2.CBORTag(18, [prot, {4: b""}, payload, signer.sign(to_sign)]))


def _payload(data: bytes) -> Any:
    return cbor2.loads(cose.inspect(data).payload or b"")


def _es256(key: SigningKey) -> VerifyingKey:
    return VerifyingKey(key.public.crypto_key, alg=ES256, kid=key.kid)


# ------------------------------------------------------------------ a draft-15 TAM, our Broker + Agent


class OldTam:
    """A draft-15-era TAM: QueryRequest on the empty POST, 204 after the QueryResponse."""

    def __init__(self, key: SigningKey) -> None:
        self.key = key
        self.seen: list[tuple[dict[str, str], bytes]] = []
        self.runner: web.AppRunner | None = None
        self.uri = ""

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.seen.append((dict(request.headers), body))
        if body:
            return web.Response(status=204)
        # [1, {20: token}, [[[18, -7]]], [[-7, 1]], 2 (trusted components)]
        qr = cbor2.dumps([1, {20: TOKEN}, [[[18, ES256]]], [[ES256, 1]], 2])
        return web.Response(status=200, body=_sign1(qr, self.key), headers={"Content-Type": OLD_TYPE})

    async def __aenter__(self) -> OldTam:
        app = web.Application()
        app.router.add_post("/tam", self.handle)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.uri = f"http://127.0.0.1:{port}/tam"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.runner is not None
        await self.runner.cleanup()


async def test_our_agent_completes_a_session_with_a_draft15_tam(tmp_path: Path) -> None:
    tam_key = generate_key("esp256")
    state = init_agent_state(tmp_path / "agent", tam_key.public, "esp256", tc_signer_keys=[tam_key.public])
    async with OldTam(tam_key) as tam:
        result = await run_agent(load_profile("teep-cbor-http-draft15"), tam.uri, tmp_path / "agent")
    assert result["ok"] is True
    assert len(tam.seen) == 2 and tam.seen[0][1] == b""
    headers, answer = tam.seen[1]
    assert headers["Content-Type"] == OLD_TYPE  # answered in the type the TAM spoke
    assert OLD_TYPE in headers["Accept"]
    assert cose.inspect(answer).protected == {1: ES256}  # the label the TAM offered, not -9
    cose.verify(answer, _es256(state.key), allowed_algs=[ES256])
    msg = _payload(answer)
    assert msg[0] == 2 and msg[1][20] == TOKEN  # QueryResponse echoing the token


async def test_strict_profile_refuses_the_draft15_media_type(tmp_path: Path) -> None:
    tam_key = generate_key("esp256")
    init_agent_state(tmp_path / "agent", tam_key.public, "esp256", tc_signer_keys=[tam_key.public])
    async with OldTam(tam_key) as tam:
        with pytest.raises(TeepCoapError, match="application/teep\\+cose"):
            await run_agent(load_profile("teep-cbor-http"), tam.uri, tmp_path / "agent")
    assert len(tam.seen) == 1  # nothing was answered


# ------------------------------------------------------------------ a draft-15 Agent, our TAM


@pytest.fixture
def our_tam(tmp_path: Path) -> tuple[TamEngine, SigningKey, SigningKey]:
    tam_key, device_key = generate_key("esp256"), generate_key("esp256")
    store = TamStore(f"sqlite:///{tmp_path / 'tam.sqlite'}")
    store.add_device(kid=device_key.kid, alg=device_key.alg, public_key=device_key.public.to_pem(), now=1.0)
    envelope = build_envelope(
        b"image", key=tam_key, component_id=TC, sequence_number=1, vendor_id=VENDOR, class_id=CLASS
    )
    store.add_component(
        component_id=TC, sequence_number=1, envelope=envelope, now=1.0, name="tc", audience="all"
    )
    engine = TamEngine(TamConfig(keys=(tam_key,), attestation="none"), store)
    return engine, tam_key, device_key


async def _post(
    http: aiohttp.ClientSession, uri: str, body: bytes, headers: dict[str, str]
) -> tuple[int, str, bytes]:
    async with http.post(uri, data=body, headers=headers) as resp:
        return resp.status, resp.headers.get("Content-Type", ""), await resp.read()


async def test_a_draft15_agent_completes_a_session_with_our_tam(
    our_tam: tuple[TamEngine, SigningKey, SigningKey],
) -> None:
    engine, tam_key, device_key = our_tam
    server = make_server(load_profile("teep-cbor-http-draft15"), TamHandler(engine))
    await server.start()
    old = {"Accept": OLD_TYPE, "Content-Type": OLD_TYPE}
    try:
        async with aiohttp.ClientSession(timeout=TIMEOUT) as http:
            status, ctype, qr = await _post(http, server.uri, b"", {"Accept": OLD_TYPE})
            assert (status, ctype) == (200, OLD_TYPE)
            cose.verify(qr, tam_key.public)
            request = _payload(qr)
            assert request[0] == 1
            token = request[1][20]
            # QueryResponse [2, {20: token, 8: []}]: nothing installed, said with an empty tc-list
            qresp = _sign1(cbor2.dumps([2, {20: token, 8: []}]), device_key)
            status, ctype, upd = await _post(http, server.uri, qresp, old)
            assert (status, ctype) == (200, OLD_TYPE), upd
            update = _payload(upd)
            assert update[0] == 3 and len(update[1][10]) == 1  # one manifest in manifest-list
            success = _sign1(cbor2.dumps([5, {20: update[1][20]}]), device_key)
            status, _, rest = await _post(http, server.uri, success, old)
            assert (status, rest) == (204, b"")
    finally:
        await server.close()
    assert [row[4] for row in engine.store.sessions()] == ["success"]


async def test_strict_tam_refuses_the_draft15_media_type(
    our_tam: tuple[TamEngine, SigningKey, SigningKey],
) -> None:
    engine, _, device_key = our_tam
    server = make_server(load_profile("teep-cbor-http"), TamHandler(engine))
    await server.start()
    try:
        async with aiohttp.ClientSession(timeout=TIMEOUT) as http:
            status, _, _ = await _post(http, server.uri, b"", {"Accept": OLD_TYPE})
            assert status == 406
            body = _sign1(cbor2.dumps([2, {20: TOKEN}]), device_key)
            status, _, _ = await _post(http, server.uri, body, {"Accept": NEW_TYPE, "Content-Type": OLD_TYPE})
            assert status == 415
            status, ctype, _ = await _post(http, server.uri, b"", {"Accept": NEW_TYPE})
            assert (status, ctype) == (200, NEW_TYPE)  # the strict binding itself still works
    finally:
        await server.close()
