"""The gateway's component cache over real sockets: CoAP GETs at the gateway, an aiohttp origin."""

from __future__ import annotations

import asyncio
from pathlib import Path
from urllib.parse import quote

import pytest
from aiohttp import web

from teep_coap.profiles import load_profile
from teep_coap.profiles.gateway import Gateway, add_device, init_gateway_dir
from teep_coap.profiles.stack import coap_options
from teep_coap.transport.coap.client import CoapClient
from teep_coap.transport.coap.credentials import load_agent_credentials
from teep_coap.transport.component_cache import ComponentCache

pytestmark = pytest.mark.timeout(60)
IMAGE = bytes(range(256)) * 40  # 10 KiB: block-wise to the device


async def _origin() -> tuple[web.AppRunner, str, list[int]]:
    hits = [0]

    async def image(_request: web.Request) -> web.Response:
        hits[0] += 1
        await asyncio.sleep(0.05)  # long enough for the devices' requests to overlap
        return web.Response(body=IMAGE)

    app = web.Application()
    app.router.add_get("/tc.bin", image)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    return runner, f"http://127.0.0.1:{port}/tc.bin", hits


async def _get(gw: Gateway, agent: Path, uri: str) -> tuple[str, bytes]:
    client = CoapClient(coap_options(load_profile("coaps-psk")), gw.uri, load_agent_credentials(agent))
    try:
        return await client.request("GET", path=f"/c?u={quote(uri, safe='')}")
    finally:
        await client.close()


@pytest.mark.parametrize("cache", [True, False])
async def test_devices_share_one_upstream_fetch(tmp_path: Path, cache: bool) -> None:
    gw_dir = init_gateway_dir(tmp_path / "gw")
    agents = [tmp_path / f"a{i}" for i in range(3)]
    for i, a in enumerate(agents):
        add_device(gw_dir, f"d{i}", a)
    runner, uri, hits = await _origin()
    try:
        async with Gateway(
            gw_dir, load_profile("coaps-psk"), "http://127.0.0.1:9/tam", cache=cache, image_origins=[uri]
        ) as gw:
            answers = await asyncio.gather(*(_get(gw, a, uri) for a in agents))
            again = await _get(gw, agents[0], uri)
            stats = gw.cache.stats
    finally:
        await runner.cleanup()
    assert all(a == ("2.05", IMAGE) for a in [*answers, again])
    assert hits[0] == (1 if cache else 4)
    assert stats.upstream_bytes == hits[0] * len(IMAGE) and stats.served == 4


async def test_unreachable_origin_and_bad_query_are_gateway_errors(tmp_path: Path) -> None:
    gw_dir = init_gateway_dir(tmp_path / "gw")
    add_device(gw_dir, "d0", tmp_path / "a0")
    async with Gateway(gw_dir, load_profile("coaps-psk"), "http://127.0.0.1:9/tam") as gw:
        code, detail = await _get(gw, tmp_path / "a0", "http://127.0.0.1:9/tc.bin")  # port 9: refused
        assert code == "5.02", detail
        code, detail = await _get(gw, tmp_path / "a0", "file:///etc/passwd")
        assert code == "5.02" and b"http(s) URIs only" in detail
        # Only the TAM's origin (and --image-origin ones): no fetching from hosts a device names.
        for elsewhere in ("http://127.0.0.1:8/tc.bin", "https://127.0.0.1:9/tc.bin", "http://localhost:9/x"):
            code, detail = await _get(gw, tmp_path / "a0", elsewhere)
            assert code == "4.03" and b"is not one the gateway fetches from" in detail, (elsewhere, detail)
        assert gw.cache.stats.upstream_fetches == 0
        client = CoapClient(
            coap_options(load_profile("coaps-psk")), gw.uri, load_agent_credentials(tmp_path / "a0")
        )
        try:
            code, _ = await client.request("GET", path="/c")
        finally:
            await client.close()
        assert code == "4.00"


@pytest.mark.parametrize("device_profile", ["coap-oscore", "coap-edhoc"])
async def test_over_oscore_only_protected_requests_may_fetch(tmp_path: Path, device_profile: str) -> None:
    gw_dir = init_gateway_dir(tmp_path / "gw")
    add_device(gw_dir, "d0", tmp_path / "a0")
    runner, uri, hits = await _origin()
    try:
        async with Gateway(
            gw_dir, load_profile(device_profile), "http://127.0.0.1:9/tam", image_origins=[uri]
        ) as gw:
            plain = CoapClient(coap_options(load_profile("coap")), gw.uri)
            try:
                code, _ = await plain.request("GET", path=f"/c?u={quote(uri, safe='')}")
            finally:
                await plain.close()
            assert code == "4.01" and hits[0] == 0
            oscore = CoapClient(
                coap_options(load_profile(device_profile)), gw.uri, load_agent_credentials(tmp_path / "a0")
            )
            try:
                code, data = await oscore.request("GET", path=f"/c?u={quote(uri, safe='')}")
            finally:
                await oscore.close()
            assert (code, data) == ("2.05", IMAGE) and hits[0] == 1
    finally:
        await runner.cleanup()


async def test_an_image_that_arrives_in_pieces_is_read_to_its_end(tmp_path: Path) -> None:
    """aiohttp's read(n) returns what has arrived so far; the cache once kept half an image that way
    (every device then failed image-match)."""

    async def slow(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        response.content_length = len(IMAGE)
        await response.prepare(request)
        half = len(IMAGE) // 2
        await response.write(IMAGE[:half])
        await asyncio.sleep(0.2)
        await response.write(IMAGE[half:])
        return response

    app = web.Application()
    app.router.add_get("/tc.bin", slow)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    uri = f"http://127.0.0.1:{runner.addresses[0][1]}/tc.bin"
    try:
        cache = ComponentCache(timeout=5.0, origins=[uri])
        try:
            assert await cache.get(uri) == IMAGE
        finally:
            await cache.close()
    finally:
        await runner.cleanup()
