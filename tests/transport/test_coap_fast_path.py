"""The TEEP resource's short answer path (`aiocoap_compat.fastpath`): real sockets on loopback.

What it must keep from aiocoap's pipe: the same answers (codes, block cutting, piggy-backed or
separate responses), and every request it does not take still answered by aiocoap.
"""

from __future__ import annotations

import asyncio
import os

import aiocoap
import pytest
from coap_helpers import Creds, quick, without_echo, without_padding

from teep_coap.transport.base import PeerInfo
from teep_coap.transport.coap import CoapClient, CoapServer, aiocoap_compat

pytestmark = pytest.mark.timeout(60)

CF = 65000
BIG = bytes(i % 251 for i in range(3000))


class Answers:
    """b"" -> BIG (three 1024-byte blocks); b"slow" -> b"late" after 0.3 s; else the payload reversed."""

    def __init__(self) -> None:
        self.calls = 0

    async def __call__(self, payload: bytes, peer: PeerInfo) -> bytes | None:
        self.calls += 1
        if payload == b"":
            return BIG
        if payload == b"slow":
            await asyncio.sleep(0.3)  # beyond aiocoap's EMPTY_ACK_DELAY (0.1 s): a separate response
            return b"late"
        return payload[::-1]


@pytest.mark.parametrize("profile_name", ["coap", "coaps-psk", "coap-constrained"])
async def test_teep_posts_take_the_fast_path_and_later_blocks_come_from_its_cache(
    profile_name: str, creds: Creds
) -> None:
    profile = quick(profile_name)
    handler = Answers()
    async with CoapServer(profile, handler, devices=creds.tam_side) as server:
        assert server.fast is not None
        # BIG is far over what a padded connect may draw before the Echo: the client does not pad
        client = CoapClient(without_padding(profile), server.uri, creds.agent_side)
        try:
            assert await client.post(b"") == BIG
            block = profile.transport.block_size
            assert server.fast.answered == 1
            assert server.fast.blocks_served == -(-len(BIG) // block) - 1
            served = server.fast.blocks_served
            body = os.urandom(5000)  # a Block1 upload: every block taken here, its answer cut here too
            assert await client.post(body) == body[::-1]
            blocks = -(-len(body) // block)
            assert server.fast.blocks_taken == blocks and server.fast.answered == 2
            assert server.fast.blocks_served == served + blocks - 1
            assert await client.post(b"slow") == b"late"  # separate response after an empty ACK
            assert server.fast.answered == 3
        finally:
            await client.close()
    assert handler.calls == 3
    assert server.fast.pending() == 0
    assert server.resource._block1._assemblies.max_items and len(server.resource._block1._assemblies) == 0


async def _raw(ctx: aiocoap.Context, server: CoapServer, **options: object) -> aiocoap.Message:
    """One request, one response: no block-wise follow-up by the client."""
    options.setdefault("code", aiocoap.POST)
    msg = aiocoap.Message(uri=server.uri, **options)  # type: ignore[arg-type]
    return await asyncio.wait_for(ctx.request(msg, handle_blockwise=False).response, 10)


async def test_answers_are_those_of_aiocoaps_pipe() -> None:
    profile = without_echo(quick("coap"))
    handler = Answers()
    ctx = await aiocoap.Context.create_client_context()  # one port: the blocks' cache key has it
    async with CoapServer(profile, handler) as server:
        assert server.fast is not None
        first = await _raw(ctx, server, content_format=CF)  # no Block2 asked: the remote's block size
        assert first.code == aiocoap.CHANGED and first.payload == BIG[:1024]
        assert first.opt.block2 == (0, True, 6) and first.opt.content_format == CF
        small = await _raw(ctx, server, content_format=CF, block2=(0, False, 2))  # 64-byte blocks asked
        assert small.payload == BIG[:64] and small.opt.block2 == (0, True, 2)
        later = await _raw(ctx, server, content_format=CF, block2=(5, False, 2))  # from the fast path's cache
        assert later.payload == BIG[320:384] and later.opt.block2 == (5, True, 2)
        last = await _raw(ctx, server, content_format=CF, block2=(46, False, 2))
        assert last.payload == BIG[2944:] and last.opt.block2 == (46, False, 2)
        beyond = await _raw(ctx, server, content_format=CF, block2=(47, False, 2))
        assert beyond.code == aiocoap.BAD_REQUEST
        served = server.fast.blocks_served
        unknown = await _raw(ctx, server, content_format=CF, accept=CF, block2=(1, False, 6))  # another key
        assert unknown.code == aiocoap.REQUEST_ENTITY_INCOMPLETE  # not cut here: aiocoap's 4.08
        assert server.fast.blocks_served == served
        wrong_cf = await _raw(ctx, server, payload=b"x", content_format=0)
        assert wrong_cf.code == aiocoap.UNSUPPORTED_CONTENT_FORMAT  # the resource's own check
        get = await _raw(ctx, server, code=aiocoap.GET)
        assert get.code == aiocoap.METHOD_NOT_ALLOWED  # not a POST: aiocoap's pipe
        elsewhere = await _raw(ctx, server, code=aiocoap.POST, uri_path=("other",))
        assert elsewhere.code == aiocoap.NOT_FOUND
    await ctx.shutdown()
    assert handler.calls == 2  # the two block-0 requests; the refusals never reach the handler
    assert server.stats.rejected.get("4.15") == 1


async def _upload_answers(ctx: aiocoap.Context, server: CoapServer) -> list[tuple[object, ...]]:
    """A Block1 upload with every turn a server meets: continue, a gap, a block of the wrong size,
    a whole upload asking for 64-byte answer blocks, and its answer's later blocks."""
    body = bytes(range(200))

    async def send(**options: object) -> tuple[object, ...]:
        options.setdefault("content_format", CF)
        answer = await _raw(ctx, server, **options)
        return (str(answer.code), answer.opt.block1, answer.opt.block2, bytes(answer.payload))

    seen = [
        await send(payload=body[:64], block1=(0, True, 2)),
        await send(payload=body[128:192], block1=(2, True, 2)),  # a gap: 4.08, the upload dropped
        await send(payload=body[64:128], block1=(1, True, 2)),  # so this one has nothing to follow
        await send(payload=body[:64], block1=(0, True, 2)),
        await send(payload=body[64:74], block1=(1, True, 2)),  # 10 bytes in a 64-byte block: 4.00
    ]
    seen += [await send(payload=body[:64], block1=(0, True, 2))]
    seen += [await send(payload=body[i * 64 : i * 64 + 64], block1=(i, True, 2)) for i in (1, 2)]
    seen += [await send(payload=body[192:], block1=(3, False, 2), block2=(0, False, 2))]
    seen += [await send(block2=(n, False, 2)) for n in (1, 3)]
    return seen


async def test_uploads_are_answered_as_aiocoaps_pipe_answers_them() -> None:
    profile = without_echo(quick("coap"))
    handler = Answers()
    ctx = await aiocoap.Context.create_client_context()  # one port: the blocks' cache key has it
    async with CoapServer(profile, handler) as server:
        assert server.fast is not None
        fast = await _upload_answers(ctx, server)
        taken, answered, served = server.fast.blocks_taken, server.fast.answered, server.fast.blocks_served
        assert served == 2  # the answer's later blocks, from the fast path's cache
        server.fast._uploads = None  # the same requests through aiocoap's pipe and its Block2 cache
        server.fast._blocks._items.clear()
        piped = await _upload_answers(ctx, server)
        assert (server.fast.blocks_taken, server.fast.answered) == (taken, answered)
        assert server.fast.blocks_served == served
    await ctx.shutdown()
    assert taken == 9 and answered == 1 and handler.calls == 2
    assert fast == piped
    answer = bytes(range(200))[::-1]
    continued, incomplete, changed = "2.31 Continue", "4.08 Request Entity Incomplete", "2.04 Changed"
    assert [code for code, *_ in fast] == [
        *(continued, incomplete, incomplete, continued, "4.00 Bad Request"),
        *(continued, continued, continued, changed, changed, changed),
    ]
    assert fast[0][1] == (0, True, 2) and fast[7][1] == (2, True, 2)
    assert fast[8][1:] == ((3, False, 2), (0, True, 2), answer[:64])  # the last Block1 echoed, block 0
    assert fast[9][1:] == (None, (1, True, 2), answer[64:128])  # later blocks echo no Block1
    assert fast[10][1:] == (None, (3, False, 2), answer[192:])


async def test_an_answer_for_a_dtls_session_that_ended_is_not_sent(creds: Creds) -> None:
    profile = quick("coaps-psk")
    handler = Answers()
    async with CoapServer(profile, handler, devices=creds.tam_side) as server:
        assert server.fast is not None
        client = CoapClient(profile, server.uri, creds.agent_side)
        try:
            assert await client.post(b"") == BIG  # the session is up
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(client.post(b"slow"), 0.15)  # the TAM is still at it
        finally:
            await client.close()  # close_notify: the session ends before the answer is ready
        for _ in range(50):
            # the render task counts the unsent answer, then leaves `pending` at its done-callback,
            # one turn of the loop later
            if server.fast.unsent and not server.fast.pending():
                break
            await asyncio.sleep(0.05)
        assert server.fast.unsent == 1 and server.fast.pending() == 0
        assert server.dtls_sessions == 0
    assert handler.calls == 2


async def test_later_blocks_of_plain_coap_are_answered_before_aiocoaps_message_layer() -> None:
    """Plain CoAP: the datagram gate sends a kept response's later blocks itself, after the Echo
    check, so they leave no duplicate-cache entry; a retransmitted follow-up gets the same block."""
    profile = quick("coap")
    handler = Answers()
    ctx = await aiocoap.Context.create_client_context()  # one port: the blocks' cache key has it
    async with CoapServer(profile, handler) as server:
        assert server.fast is not None and server.early is not None
        client = CoapClient(without_padding(profile), server.uri)
        try:
            assert await client.post(b"") == BIG  # Echo round trip, block 0, then two later blocks
        finally:
            await client.close()
        assert server.fast.blocks_served == 2
        cache = aiocoap_compat.duplicate_caches(server._context)[0]
        assert len(cache) == 1  # block 0 only (the gate's 4.01 + Echo is not kept either)
        # a follow-up from an address that has not proven itself still gets 4.01 + Echo, no block
        unproven = await _raw(ctx, server, content_format=CF, block2=(1, False, 6))
        assert unproven.code == aiocoap.UNAUTHORIZED and unproven.opt.echo
        # the same request twice (as a lost ACK makes a client resend it): the same block both times
        echo = unproven.opt.echo
        first = await _raw(ctx, server, content_format=CF, echo=echo)
        assert first.payload == BIG[:1024] and first.opt.block2 == (0, True, 6)
        again = [await _raw(ctx, server, content_format=CF, block2=(2, False, 6)) for _ in range(2)]
        assert [a.payload for a in again] == [BIG[2048:]] * 2
        assert [a.opt.block2 for a in again] == [(2, False, 6)] * 2
        assert server.fast.blocks_served == 4 and len(cache) == 2  # + this block-0 request
    await ctx.shutdown()
    assert handler.calls == 2


async def test_later_blocks_over_dtls_are_answered_inside_the_session(creds: Creds) -> None:
    """coaps: a later block goes straight back into the DTLS session it was asked on; only block 0
    requests went through the message manager (one duplicate-cache entry each)."""
    profile = quick("coaps-psk")
    handler = Answers()
    async with CoapServer(profile, handler, devices=creds.tam_side) as server:
        assert server.fast is not None
        client = CoapClient(profile, server.uri, creds.agent_side)
        try:
            assert await client.post(b"") == BIG
            assert await client.post(b"") == BIG  # again in the same session: block 0 rendered again
            assert server.fast.answered == 2 and server.fast.blocks_served == 4
            # (the session's entries go when it ends: counted while it is up)
            assert sum(len(c) for c in aiocoap_compat.duplicate_caches(server._context)) == 2
        finally:
            await client.close()
    assert handler.calls == 2


@pytest.mark.parametrize("szx", [0, 2, 4, 6])
def test_a_later_block_built_from_kept_bytes_is_the_long_ways_datagram(szx: int) -> None:
    """`block_datagram` against `encode_reply(request, _block(full, request))`, byte for byte (the
    Message ID of a NON reply is random on both ways: compared apart)."""
    from teep_coap.transport.coap.aiocoap_compat.fastpath import _block, block_datagram
    from teep_coap.transport.coap.aiocoap_compat.messages import encode_reply

    class Remote:
        maximum_block_size_exp = 6
        maximum_payload_size = 1024

    checked = 0
    for size in (17, 64, 1000, 1024, 3000, 70_000):
        for options in ({}, {"content_format": CF}, {"content_format": 0, "etag": b"abcd"}, {"max_age": 5}):
            full = aiocoap.Message(
                code=aiocoap.CHANGED, payload=bytes(i % 253 for i in range(size)), **options
            )
            blocks = -(-size // (16 << szx))
            for number in sorted({1, 2, blocks - 1, blocks, 4100} - {0}):
                for mtype, token in ((aiocoap.CON, b""), (aiocoap.CON, b"\x01" * 8), (aiocoap.NON, b"tk")):
                    request = aiocoap.Message(code=aiocoap.POST, uri_path=("teep",))
                    request.mtype, request.mid, request.token = mtype, 0xBEEF, token
                    request.remote = Remote()
                    request.opt.block2 = (number, False, szx)
                    built = block_datagram(full, request)
                    if number >= blocks:
                        assert built is None  # beyond the end: the long way's 4.00
                        continue
                    assert built is not None
                    long_way = encode_reply(request, _block(full, request))
                    assert built[:2] + built[4:] == long_way[:2] + long_way[4:], (size, options, number)
                    if mtype == aiocoap.CON:
                        assert built[2:4] == long_way[2:4] == b"\xbe\xef"
                    checked += 1
    assert checked >= 45  # (4 sizes x 4 option sets x 3 request kinds, at least one block each)
    with_size1 = aiocoap.Message(code=aiocoap.CHANGED, payload=b"x" * 100, size1=5)  # an option past Block2
    request = aiocoap.Message(code=aiocoap.POST)
    request.mtype, request.mid, request.token, request.opt.block2 = aiocoap.CON, 1, b"", (1, False, 2)
    assert block_datagram(with_size1, request) is None
