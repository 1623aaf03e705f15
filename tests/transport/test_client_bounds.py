"""The device's CoAP client against a server that never stops answering block-wise (aiocoap_compat
`bound_response_assembly`): it used to ask for blocks, a core busy, until its request timed out."""

from __future__ import annotations

import asyncio

import aiocoap
import aiocoap.resource
import pytest
from aiocoap.optiontypes import BlockOption
from coap_helpers import quick, without_echo

from teep_coap.transport.base import PeerInfo, TransportError
from teep_coap.transport.coap import CoapClient, CoapServer

pytestmark = pytest.mark.timeout(120)


class Endless(aiocoap.resource.Resource):
    """Every block is 1 KiB and says more follow."""

    def __init__(self) -> None:
        super().__init__()
        self.served = 0

    async def render_to_pipe(self, pipe: aiocoap.pipe.Pipe) -> None:
        block2 = pipe.request.opt.block2
        self.served += 1
        answer = aiocoap.Message(code=aiocoap.CHANGED, payload=b"x" * 1024, content_format=96)
        answer.opt.block2 = BlockOption.BlockwiseTuple(block2.block_number if block2 else 0, True, 6)
        pipe.add_response(answer, is_last=True)


async def _unused(payload: bytes, peer: PeerInfo) -> bytes | None:
    return None


@pytest.mark.parametrize("limit", [4096, 65536])
async def test_an_endless_block_wise_answer_stops_at_the_profile_limit(limit: int) -> None:
    endless = Endless()
    server = CoapServer(without_echo(quick("coap")), _unused)
    server.add_resource(("endless",), endless)
    async with server:
        uri = server.uri.rsplit("/", 1)[0] + "/endless"
        profile = quick("coap", request_timeout=20.0, max_message_size=limit)
        client = CoapClient(profile, uri)
        started = asyncio.get_running_loop().time()
        try:
            with pytest.raises(TransportError, match=f"grew beyond {limit} bytes"):
                await client.post(b"x")
        finally:
            await client.close()
        assert asyncio.get_running_loop().time() - started < 10  # not the 20 s request timeout
        assert endless.served == limit // 1024 + 1  # the block that went over is the last asked for
