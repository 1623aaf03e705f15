"""The HTTP binding's rules, checked through real aiohttp sockets on loopback (HTTP and HTTPS)."""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path

import aiohttp
import pytest

from teep_coap.model.codes import MEDIA_TYPE_TEEP_CBOR, MEDIA_TYPE_TEEP_JSON
from teep_coap.security import certs
from teep_coap.transport.base import PeerInfo, PeerRejected, Rejection, RequestRejected, TransportError
from teep_coap.transport.http import HttpBrokerClient, HttpServerOptions, HttpTamServer
from teep_coap.transport.http.rules import accepts

REQUIRED = {
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'none'",
    "Referrer-Policy": "no-referrer",
}


class Scripted:
    """A handler that answers from a script and records what it saw."""

    def __init__(self, answers: list[bytes | None]) -> None:
        self.answers = list(answers)
        self.seen: list[tuple[bytes, PeerInfo]] = []

    async def __call__(self, payload: bytes, peer: PeerInfo) -> bytes | None:
        self.seen.append((payload, peer))
        return self.answers.pop(0)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> certs.CertBundle:
    return certs.write_bundle(tmp_path_factory.mktemp("certs"), client_name="device-7")


async def raw_post(
    uri: str,
    body: bytes = b"",
    headers: dict[str, str] | None = None,
    method: str = "POST",
    ssl_ctx: ssl.SSLContext | None = None,
) -> tuple[int, dict[str, str], bytes]:
    async with (
        aiohttp.ClientSession(
            cookie_jar=aiohttp.DummyCookieJar(), timeout=aiohttp.ClientTimeout(total=5)
        ) as s,
        s.request(
            method,
            uri,
            data=body,
            headers=headers or {},
            allow_redirects=False,
            ssl=ssl_ctx if ssl_ctx is not None else True,
        ) as r,
    ):
        return r.status, dict(r.headers), await r.read()


async def test_session_flow_200_then_204_with_required_headers() -> None:
    handler = Scripted([b"\x83query", b"\x83update", None])
    async with HttpTamServer(handler) as server:
        st, hd, body = await raw_post(server.uri, headers={"Accept": MEDIA_TYPE_TEEP_CBOR})
        assert (st, body) == (200, b"\x83query")
        assert hd["Content-Type"] == MEDIA_TYPE_TEEP_CBOR
        for k, v in REQUIRED.items():
            assert hd[k] == v
        assert "Cache-Control" not in hd and "Set-Cookie" not in hd
        st, hd, body = await raw_post(
            server.uri, b"resp", {"Accept": MEDIA_TYPE_TEEP_CBOR, "Content-Type": MEDIA_TYPE_TEEP_CBOR}
        )
        assert (st, body) == (200, b"\x83update")
        st, hd, body = await raw_post(
            server.uri, b"ok", {"Accept": MEDIA_TYPE_TEEP_CBOR, "Content-Type": MEDIA_TYPE_TEEP_CBOR}
        )
        assert (st, body) == (204, b"")
        assert "Cache-Control" not in hd
    assert [p for p, _ in handler.seen] == [b"", b"resp", b"ok"]
    assert handler.seen[0][1].transport == "http"
    assert handler.seen[0][1].address.startswith("127.0.0.1:")


async def test_wrong_content_type_is_415_and_not_passed_on() -> None:
    handler = Scripted([b"x"])
    async with HttpTamServer(handler) as server:
        st, hd, _ = await raw_post(
            server.uri, b"abc", {"Accept": MEDIA_TYPE_TEEP_CBOR, "Content-Type": "application/cbor"}
        )
        assert st == 415
        st, _, _ = await raw_post(server.uri, b"abc", {"Accept": MEDIA_TYPE_TEEP_CBOR})
        assert st == 415
        assert hd["X-Content-Type-Options"] == "nosniff"
    assert handler.seen == []


async def test_missing_accept_is_406_and_get_is_405() -> None:
    async with HttpTamServer(Scripted([b"x"])) as server:
        st, _, _ = await raw_post(server.uri, b"", {"Accept": "text/html"})
        assert st == 406
        st, hd, _ = await raw_post(server.uri, method="GET", headers={"Accept": MEDIA_TYPE_TEEP_CBOR})
        assert st == 405 and hd["Allow"] == "POST"


async def test_oversize_is_413() -> None:
    handler = Scripted([b"x"])
    async with HttpTamServer(handler, HttpServerOptions(max_message_size=100)) as server:
        client = HttpBrokerClient(server.uri, timeout=5)
        with pytest.raises(PeerRejected) as info:
            await client.post(b"a" * 101)
        assert info.value.status == "413"
        await client.close()
    assert handler.seen == []


async def test_handler_failure_is_500_and_rejection_maps() -> None:
    class Failing:
        def __init__(self) -> None:
            self.calls = 0

        async def __call__(self, payload: bytes, peer: PeerInfo) -> bytes | None:
            self.calls += 1
            if self.calls == 1:
                raise RuntimeError("engine broke")
            if self.calls == 2:
                raise RequestRejected(Rejection.BAD_REQUEST, "not CBOR")
            raise RequestRejected(Rejection.OVERLOADED, "busy", retry_after=7)

    async with HttpTamServer(Failing()) as server, HttpBrokerClient(server.uri, timeout=5) as client:
        with pytest.raises(PeerRejected) as info:
            await client.post(b"")
        assert info.value.status == "500"
        with pytest.raises(PeerRejected) as info:
            await client.post(b"zz")
        assert info.value.status == "400" and "not CBOR" in info.value.detail
        st, hd, _ = await raw_post(server.uri, headers={"Accept": MEDIA_TYPE_TEEP_CBOR})
        assert st == 503 and hd["Retry-After"] == "7"


async def test_overload_gives_503_with_retry_after() -> None:
    gate = asyncio.Event()

    async def slow(payload: bytes, peer: PeerInfo) -> bytes | None:
        await gate.wait()
        return b"late"

    opts = HttpServerOptions(max_concurrent_requests=1, retry_after=3)
    async with HttpTamServer(slow, opts) as server:
        first = asyncio.create_task(raw_post(server.uri, headers={"Accept": MEDIA_TYPE_TEEP_CBOR}))
        for _ in range(100):
            await asyncio.sleep(0.01)
            if server._in_flight:
                break
        st, hd, _ = await raw_post(server.uri, headers={"Accept": MEDIA_TYPE_TEEP_CBOR})
        assert st == 503 and hd["Retry-After"] == "3"
        gate.set()
        assert (await first)[0] == 200


async def test_handler_timeout_is_500() -> None:
    async def hang(payload: bytes, peer: PeerInfo) -> bytes | None:
        await asyncio.sleep(10)
        return None

    async with HttpTamServer(hang, HttpServerOptions(handler_timeout=0.2)) as server:
        st, _, _ = await raw_post(server.uri, headers={"Accept": MEDIA_TYPE_TEEP_CBOR})
        assert st == 500


async def test_client_does_not_follow_redirects_nor_keep_cookies() -> None:
    from aiohttp import web

    hits: list[str] = []

    async def redirect(request: web.Request) -> web.Response:
        hits.append(request.path)
        if request.path == "/tam":
            return web.Response(status=307, headers={"Location": "/elsewhere", "Set-Cookie": "a=b"})
        return web.Response(status=200, body=b"x", content_type=MEDIA_TYPE_TEEP_CBOR)

    app = web.Application()
    app.router.add_route("*", "/{p}", redirect)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        async with HttpBrokerClient(f"http://127.0.0.1:{port}/tam", timeout=5) as client:
            with pytest.raises(PeerRejected) as info:
                await client.post(b"")
            assert info.value.status == "307" and "/elsewhere" in info.value.detail
            with pytest.raises(PeerRejected):
                await client.post(b"")
            assert client._session is not None and len(client._session.cookie_jar) == 0
    finally:
        await runner.cleanup()
    assert hits == ["/tam", "/tam"]


async def test_client_refuses_wrong_content_type_and_timeouts() -> None:
    from aiohttp import web

    async def wrong(request: web.Request) -> web.Response:
        if request.headers.get("Content-Type") == MEDIA_TYPE_TEEP_CBOR:
            await asyncio.sleep(1)
        return web.Response(status=200, body=b"{}", content_type="application/json")

    app = web.Application()
    app.router.add_post("/tam", wrong)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        async with HttpBrokerClient(f"http://127.0.0.1:{port}/tam", timeout=0.5) as client:
            with pytest.raises(TransportError, match="Content-Type"):
                await client.post(b"")
            from teep_coap.transport.base import TransportTimeout

            with pytest.raises(TransportTimeout):
                await client.post(b"abc")
    finally:
        await runner.cleanup()


async def test_https_with_project_ca_and_client_identity(bundle: certs.CertBundle) -> None:
    handler = Scripted([b"hello", None])
    srv_ctx = certs.server_ssl_context(bundle.server_cert, bundle.server_key, client_ca=bundle.ca_cert)
    opts = HttpServerOptions(ssl_context=srv_ctx, media_type=MEDIA_TYPE_TEEP_JSON)
    async with HttpTamServer(handler, opts) as server:
        assert server.uri.startswith("https://127.0.0.1:")
        cli_ctx = certs.client_ssl_context(
            bundle.ca_cert, cert_file=bundle.client_cert, key_file=bundle.client_key
        )
        async with HttpBrokerClient(server.uri, MEDIA_TYPE_TEEP_JSON, cli_ctx, timeout=5) as client:
            assert await client.post(b"") == b"hello"
            assert await client.post(b'{"a":1}') is None
    peer = handler.seen[0][1]
    assert peer.transport == "https" and peer.identity == "device-7" and peer.authenticated


async def test_https_refuses_untrusted_server(bundle: certs.CertBundle, tmp_path: Path) -> None:
    other = certs.write_bundle(tmp_path / "other")
    srv_ctx = certs.server_ssl_context(bundle.server_cert, bundle.server_key)
    untrusting = certs.client_ssl_context(other.ca_cert)
    async with HttpTamServer(Scripted([b"x"]), HttpServerOptions(ssl_context=srv_ctx)) as server:
        client = HttpBrokerClient(server.uri, ssl_context=untrusting, timeout=5)
        with pytest.raises(TransportError, match="TLS"):
            await client.post(b"")
        await client.close()


def test_accept_matching() -> None:
    assert accepts("application/teep+cbor", MEDIA_TYPE_TEEP_CBOR)
    assert accepts("text/html, application/*;q=0.5", MEDIA_TYPE_TEEP_CBOR)
    assert accepts("*/*", MEDIA_TYPE_TEEP_CBOR)
    assert not accepts("application/teep+cbor;q=0", MEDIA_TYPE_TEEP_CBOR)
    assert not accepts(None, MEDIA_TYPE_TEEP_CBOR)
    assert not accepts("application/teep+json", MEDIA_TYPE_TEEP_CBOR)


def test_bad_uri_and_missing_certs(tmp_path: Path) -> None:
    with pytest.raises(TransportError):
        HttpBrokerClient("coap://127.0.0.1/tam")
    with pytest.raises(certs.CertificateError, match=r"ca\.pem"):
        certs.load_bundle(tmp_path)


async def test_large_bodies_arrive_whole_over_https(bundle: certs.CertBundle) -> None:
    """Bodies far above one TCP read (aiohttp's read(n) returns what is buffered) arrive complete."""
    big_up = bytes(i % 251 for i in range(300_000))
    big_down = bytes(i % 241 for i in range(500_000))

    async def echo(payload: bytes, peer: PeerInfo) -> bytes | None:
        assert payload == big_up
        return big_down

    srv_ctx = certs.server_ssl_context(bundle.server_cert, bundle.server_key)
    async with HttpTamServer(echo, HttpServerOptions(ssl_context=srv_ctx)) as server:
        cli_ctx = certs.client_ssl_context(bundle.ca_cert)
        async with HttpBrokerClient(server.uri, ssl_context=cli_ctx, timeout=10) as client:
            assert await client.post(big_up) == big_down


async def test_broker_requests_carry_exactly_the_drafts_headers() -> None:
    """Empty POST: Accept and Content-Length: 0, no Content-Type; with a body: both media-type headers;
    never Accept-Encoding or Cookie."""
    from teep_coap.transport.tcp_relay import TcpCountingRelay

    async with HttpTamServer(Scripted([b"\xd2q", None])) as server:
        relay = TcpCountingRelay("127.0.0.1", server.port)
        port = await relay.start()
        try:
            async with HttpBrokerClient(f"http://127.0.0.1:{port}/tam", timeout=5) as client:
                await client.post(b"")
                await client.post(b"abc")
        finally:
            await relay.stop()
    sent = b"".join(c.data for c in relay.chunks if c.direction == "c2s").decode()
    first, second = sent.split("POST /tam HTTP/1.1\r\n")[1:]
    assert "Accept: application/teep+cbor\r\n" in first and "Content-Length: 0\r\n" in first
    assert "Content-Type" not in first
    assert "Content-Type: application/teep+cbor\r\n" in second and "Accept: application/teep+cbor" in second
    assert "Accept-Encoding" not in sent and "Cookie" not in sent
