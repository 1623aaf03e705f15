"""The CoAP client's request: aiocoap copies it for every Block2 follow-up (`Message.copy`), and those
copies must not deep-copy its options (~0.1 ms each) nor share the lists a copy may change; and over
plain CoAP it goes where the last answer came from, without a name look-up per request."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiocoap.numbers.optionnumbers import OptionNumber
from aiocoap.optiontypes import BlockOption
from coap_helpers import quick, without_echo

from teep_coap.profiles import load_profile
from teep_coap.profiles.stack import coap_options
from teep_coap.transport.base import PeerInfo, TransportError
from teep_coap.transport.coap import CoapClient, CoapServer


def test_copies_of_a_request_share_option_objects_but_not_lists() -> None:
    client = CoapClient(coap_options(load_profile("coap")), "coap://127.0.0.1:5683/tc")
    request = client._request(b"\xa0" * 2000)  # Block1-sized: a block option is set
    before = request.opt.encode()
    follow_up = request.copy(payload=b"", mid=None, token=None)  # what aiocoap does for a next block
    assert follow_up.opt.encode() == before
    path = OptionNumber.URI_PATH
    assert follow_up.opt.get_option(path)[0] is request.opt.get_option(path)[0]  # shared, not copied
    follow_up.opt.block2 = BlockOption.BlockwiseTuple(1, False, 6)
    follow_up.opt.add_option(path.create_option(value="more"))
    assert request.opt.encode() == before  # the original's lists are its own
    assert follow_up.opt.uri_path == (*request.opt.uri_path, "more")


async def test_plain_coap_resolves_the_tam_once_and_again_after_a_failed_exchange(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    loop = asyncio.get_running_loop()
    lookups: list[object] = []
    resolve = loop.getaddrinfo

    async def counted(host: object, *args: Any, **kwargs: Any) -> Any:
        lookups.append(host)
        return await resolve(host, *args, **kwargs)

    profile = without_echo(quick("coap", request_timeout=2.0))

    async def reverse(payload: bytes, _peer: PeerInfo) -> bytes:
        return payload[::-1] * 2 if payload else b"x" * 3000  # b"": an answer in three blocks

    server = CoapServer(profile, reverse)
    await server.start()
    monkeypatch.setattr(loop, "getaddrinfo", counted)  # the client's look-ups, not the server's bind
    client = CoapClient(profile, server.uri)
    try:
        assert await client.post(b"") == b"x" * 3000
        assert await client.post(b"ab") == b"baba"
        assert await client.post(b"cd") == b"dcdc"
        assert lookups == ["127.0.0.1"]  # the first request only: the others went where it was answered
        await server.close()
        with pytest.raises(TransportError, match="nothing is listening"):
            await client.post(b"ef")  # to the address it knew: no lookup
        assert lookups == ["127.0.0.1"]
        with pytest.raises(TransportError, match="nothing is listening"):
            await client.post(b"gh")  # after a failed exchange: resolved afresh
        assert lookups == ["127.0.0.1", "127.0.0.1"]
    finally:
        await client.close()
        await server.close()
