"""EDHOC input that lakers cannot take is refused first (transport/coap/edhoc_input.py), over a real
coap-edhoc server too: lakers-python 0.6.2 panics on a message_1 whose G_X is not on P-256 and on a
message_3 shorter than its tag, and answered nothing."""

from __future__ import annotations

import asyncio
import random

import aiocoap
import aiocoap.resource
import cbor2
import lakers
import pytest
from aiocoap.edhoc import CoseKeyForEdhoc, OwnCredStyle
from coap_helpers import Creds, quick, without_echo

from teep_coap.transport.base import TransportError
from teep_coap.transport.coap import CoapClient, CoapServer, aiocoap_compat
from teep_coap.transport.coap.credentials import DeviceCredentials, read_edhoc_key
from teep_coap.transport.coap.edhoc_input import message_1_problem, message_3_problem

pytestmark = pytest.mark.timeout(120)
SEED = 20261207
NOT_ON_P256 = (1).to_bytes(32, "big")  # x = 1: no point of P-256 has it (x = 0 has one)


def _mutate(data: bytes, rng: random.Random) -> bytes:
    out = bytearray(data)
    how = rng.randrange(5)
    if how == 0 and out:
        for _ in range(rng.randint(1, 4)):
            out[rng.randrange(len(out))] = rng.getrandbits(8)
    elif how == 1:
        del out[rng.randrange(len(out) + 1) :]
    elif how == 2:
        out += rng.randbytes(rng.randint(1, 40))
    elif how == 3:
        out = bytearray(rng.randbytes(rng.randint(0, 60)))
    else:
        out = bytearray(cbor2.dumps(rng.randbytes(rng.randint(0, 40))))
    return bytes(out)


def test_what_passes_the_checks_never_makes_lakers_panic() -> None:
    """Seeded mutations of real messages: what the checks let through, lakers refuses or takes with
    ordinary errors; the checks let real messages through and refuse what made lakers panic."""
    rng = random.Random(SEED)
    key = CoseKeyForEdhoc.generate()
    cred = cbor2.dumps(key.as_ccs(b"\x02", "tam")[14], canonical=True)
    passed = {"message_1": 0, "message_3": 0}
    for _ in range(1500):
        real = bytes(lakers.EdhocInitiator().prepare_message_1(c_i=None))
        assert message_1_problem(real) is None
        candidate = _mutate(real, rng)
        if message_1_problem(candidate) is not None:
            continue
        passed["message_1"] += 1
        responder = lakers.EdhocResponder(r=key.d, cred_r=cred)
        try:
            responder.process_message_1(candidate)
            responder.prepare_message_2(OwnCredStyle.ByKeyId.as_lakers(), cbor2.dumps(-24), None)
        except (ValueError, RuntimeError):
            pass  # an ordinary refusal; a PanicException (BaseException) fails the test
    for _ in range(1500):
        responder = lakers.EdhocResponder(r=key.d, cred_r=cred)
        responder.process_message_1(lakers.EdhocInitiator().prepare_message_1(c_i=None))
        responder.prepare_message_2(OwnCredStyle.ByKeyId.as_lakers(), cbor2.dumps(-24), None)
        candidate = _mutate(cbor2.dumps(rng.randbytes(rng.randint(0, 30))), rng)
        if message_3_problem(candidate) is not None:
            continue
        passed["message_3"] += 1
        with pytest.raises((ValueError, RuntimeError)):  # never a panic; never accepted either
            responder.parse_message_3(candidate)
    # lakers draws a fresh ephemeral key for each real message_1, so how many mutations pass the
    # checks moves from run to run (100 to about 150 of 1,500 seen): enough to have tested something
    assert passed["message_1"] >= 60 and passed["message_3"] >= 60, passed


@pytest.mark.parametrize(
    ("message_1", "why"),
    [
        (cbor2.dumps(3) + cbor2.dumps(2) + cbor2.dumps(NOT_ON_P256) + cbor2.dumps(0), "not the x-coordinate"),
        (cbor2.dumps(2) + cbor2.dumps(2) + cbor2.dumps(bytes(32)) + cbor2.dumps(0), "METHOD must be 3"),
        (cbor2.dumps(3) + cbor2.dumps([6, 1]) + cbor2.dumps(bytes(32)) + cbor2.dumps(0), "must be 2"),
        (cbor2.dumps(3) + cbor2.dumps(2) + cbor2.dumps(bytes(31)) + cbor2.dumps(0), "32-byte"),
        (cbor2.dumps(3) + cbor2.dumps(2), "not a CBOR sequence"),
        (b"\xff\x00", "not a CBOR sequence"),
    ],
)
def test_message_1_refusals_say_why(message_1: bytes, why: str) -> None:
    assert why in (message_1_problem(message_1) or "")


def test_message_3_refusals_say_why() -> None:
    assert "shorter than its 8-byte tag" in (message_3_problem(cbor2.dumps(b"\x00")) or "")
    assert "not one CBOR byte string" in (message_3_problem(cbor2.dumps({1: 2})) or "")
    assert "not one CBOR byte string" in (message_3_problem(cbor2.dumps(bytes(9)) + b"\x00") or "")
    assert message_3_problem(cbor2.dumps(bytes(8))) is None


async def _post(ctx: aiocoap.Context, message: aiocoap.Message) -> aiocoap.Message:
    return await asyncio.wait_for(ctx.request(message).response, 5)


async def test_the_tam_answers_such_input_4_00_and_devices_go_on(creds: Creds) -> None:
    profile = without_echo(quick("coap-edhoc"))  # the raw message_1s below answer no Echo

    async def echo(payload: bytes, peer: object) -> bytes | None:
        return payload[::-1]

    async with CoapServer(profile, echo, devices=creds.tam_side) as server:
        edhoc_uri = server.uri.rsplit("/", 1)[0] + "/.well-known/edhoc"
        ctx = await aiocoap.Context.create_client_context()
        try:
            bad_point = b"".join(cbor2.dumps(item) for item in (True, 3, 2, NOT_ON_P256, 0))
            answer = await _post(ctx, aiocoap.Message(code=aiocoap.POST, uri=edhoc_uri, payload=bad_point))
            assert answer.code == aiocoap.BAD_REQUEST and b"P-256" in answer.payload  # was: no answer
            initiator = lakers.EdhocInitiator()
            message_1 = cbor2.dumps(True) + bytes(initiator.prepare_message_1(c_i=None))
            answer = await _post(ctx, aiocoap.Message(code=aiocoap.POST, uri=edhoc_uri, payload=message_1))
            assert answer.code == aiocoap.CHANGED
            c_r, _, _ = initiator.parse_message_2(bytes(answer.payload))
            for junk in (cbor2.dumps(b"\x00"), cbor2.dumps(bytes(32))):  # a panic, then a failed MAC
                request = aiocoap.Message(code=aiocoap.POST, uri=server.uri, payload=junk + bytes(12))
                request.opt.oscore = b"\x08" + bytes(c_r)  # kid = C_R; the EDHOC option: message_3 first
                request.opt.edhoc = True
                answer = await _post(ctx, request)
                assert answer.code == aiocoap.BAD_REQUEST, answer  # was: nothing, then 5.00
                assert b"message_3 refused" in answer.payload
        finally:
            await ctx.shutdown()
        device = CoapClient(profile, server.uri, creds.agent_side)
        try:
            assert await device.post(b"hello") == b"olleh"
        finally:
            await device.close()


async def test_a_message_2_lakers_panics_on_is_a_clear_error_at_once(creds: Creds) -> None:
    """A server answering message_1 with a G_Y off the curve: the device's client used to wait out its
    whole timeout (the panic escaped from an aiocoap callback); now the handshake fails at once, in
    one line."""
    not_a_point = cbor2.dumps(b"\x01" * 32)  # G_Y = 0x0101…01 is no x-coordinate of P-256

    class BrokenEdhoc(aiocoap.resource.Resource):
        async def render_post(self, request: aiocoap.Message) -> aiocoap.Message:
            return aiocoap.Message(code=aiocoap.CHANGED, payload=not_a_point)

    async def handler(payload: bytes, peer: object) -> bytes | None:
        return b"never reached"

    server = CoapServer(without_echo(quick("coap")), handler)
    server.add_resource((".well-known", "edhoc"), BrokenEdhoc())
    async with server:
        client = CoapClient(quick("coap-edhoc", request_timeout=20.0), server.uri, creds.agent_side)
        started = asyncio.get_running_loop().time()
        try:
            with pytest.raises(TransportError, match="message_2 is malformed"):
                await client.post(b"hello")
        finally:
            await client.close()
        assert asyncio.get_running_loop().time() - started < 10  # not the 20 s timeout


async def _reverse(payload: bytes, peer: object) -> bytes | None:
    return payload[::-1]


async def _half_handshake(
    ctx: aiocoap.Context, edhoc_uri: str, device: DeviceCredentials
) -> tuple[bytes, bytes]:
    """A device's EDHOC handshake by hand up to its message_3: (C_R as sent, the message_3 request's
    payload for /.well-known/edhoc: C_R as a CBOR item, then message_3)."""
    assert device.edhoc_key is not None
    key_i = read_edhoc_key(device.edhoc_key).private_numbers().private_value.to_bytes(32, "big")
    cred_i = cbor2.dumps(cbor2.loads(device.edhoc_own)[14], canonical=True)
    cred_r = cbor2.dumps(cbor2.loads(device.edhoc_peer)[14], canonical=True)
    initiator = lakers.EdhocInitiator()
    message_1 = cbor2.dumps(True) + bytes(initiator.prepare_message_1(c_i=b"\x05"))
    answer = await _post(ctx, aiocoap.Message(code=aiocoap.POST, uri=edhoc_uri, payload=message_1))
    assert answer.code == aiocoap.CHANGED
    c_r, _, _ = initiator.parse_message_2(bytes(answer.payload))
    initiator.verify_message_2(key_i, cred_i, cred_r)
    message_3, _ = initiator.prepare_message_3(lakers.CredentialTransfer.ByReference, None)
    prefix = cbor2.dumps(cbor2.loads(bytes(c_r))) if len(c_r) == 1 else cbor2.dumps(bytes(c_r))
    return bytes(c_r), prefix + bytes(message_3)


async def test_message_1s_from_one_address_push_out_only_their_own_handshakes(creds: Creds) -> None:
    """The TAM keeps 8 handshakes waiting for message_3; 30 message_1s from one port between a
    device's message_2 and message_3 used to push the device's out (its message_3 then 4.00)."""
    async with CoapServer(without_echo(quick("coap-edhoc")), _reverse, devices=creds.tam_side) as server:
        edhoc_uri = server.uri.rsplit("/", 1)[0] + "/.well-known/edhoc"
        device = await aiocoap.Context.create_client_context()
        flooder = await aiocoap.Context.create_client_context()
        try:
            _, message_3 = await _half_handshake(device, edhoc_uri, creds.agent_side)
            for _ in range(30):
                message_1 = cbor2.dumps(True) + bytes(lakers.EdhocInitiator().prepare_message_1(c_i=None))
                flood = aiocoap.Message(code=aiocoap.POST, uri=edhoc_uri, payload=message_1)
                assert (await _post(flooder, flood)).code == aiocoap.CHANGED
            real = aiocoap.Message(code=aiocoap.POST, uri=edhoc_uri, payload=message_3)
            answer = await _post(device, real)
            assert answer.code == aiocoap.CHANGED, (answer, answer.payload)
        finally:
            await device.shutdown()
            await flooder.shutdown()


async def test_a_message_3_from_another_address_leaves_the_handshake_alone(creds: Creds) -> None:
    """C_R is one of 48 small numbers: anyone could send a junk message_3 for each and spoil every
    EDHOC handshake between its message_2 and message_3 (lakers consumes the responder's state on a
    failed message_3). A message_3 is now taken only from the address its message_1 came from."""
    async with CoapServer(without_echo(quick("coap-edhoc")), _reverse, devices=creds.tam_side) as server:
        edhoc_uri = server.uri.rsplit("/", 1)[0] + "/.well-known/edhoc"
        victim = await aiocoap.Context.create_client_context()
        attacker = await aiocoap.Context.create_client_context()  # another port
        try:
            c_r, message_3 = await _half_handshake(victim, edhoc_uri, creds.agent_side)
            assert len(c_r) == 1  # aiocoap's C_R: a one-byte CBOR integer, its own CBOR item
            junk_payload = c_r + cbor2.dumps(bytes(20))
            junk = aiocoap.Message(code=aiocoap.POST, uri=edhoc_uri, payload=junk_payload)
            refused = await _post(attacker, junk)
            assert refused.code == aiocoap.BAD_REQUEST and b"its message_1 came from" in refused.payload
            # the same in an OSCORE request with the EDHOC option (message_3 first)
            combined = aiocoap.Message(
                code=aiocoap.POST, uri=server.uri, payload=cbor2.dumps(bytes(20)) + bytes(12)
            )
            combined.opt.oscore = b"\x08" + c_r  # kid = C_R
            combined.opt.edhoc = True
            refused = await _post(attacker, combined)
            assert refused.code == aiocoap.BAD_REQUEST and b"its message_1 came from" in refused.payload
            real = aiocoap.Message(code=aiocoap.POST, uri=edhoc_uri, payload=message_3)
            answer = await _post(victim, real)
            assert answer.code == aiocoap.CHANGED, (answer, answer.payload)  # was: 4.00, the state spoiled
        finally:
            await victim.shutdown()
            await attacker.shutdown()


async def test_a_message_1_from_an_unproven_address_gets_an_echo_first(creds: Creds) -> None:
    """RFC 9175 Echo before any key work: a message_1 costs the TAM a key pair and two Diffie-Hellman
    computations (≈ 0.74 ms), which a spoofed source could have it spend without end; now an address
    proves itself first, and the device's client answers the Echo by itself."""
    async with CoapServer(quick("coap-edhoc"), _reverse, devices=creds.tam_side) as server:
        assert server.edhoc_echo is not None
        credentials = server._context.server_credentials
        contexts = lambda: sum(map(aiocoap_compat.is_edhoc_responder_context, credentials.values()))  # noqa: E731
        edhoc_uri = server.uri.rsplit("/", 1)[0] + "/.well-known/edhoc"
        ctx = await aiocoap.Context.create_client_context()
        try:
            message_1 = cbor2.dumps(True) + bytes(lakers.EdhocInitiator().prepare_message_1(c_i=None))
            first = await _post(ctx, aiocoap.Message(code=aiocoap.POST, uri=edhoc_uri, payload=message_1))
            assert first.code == aiocoap.UNAUTHORIZED and first.opt.echo and not first.payload
            assert contexts() == 0  # no key work for it
            again = aiocoap.Message(code=aiocoap.POST, uri=edhoc_uri, payload=message_1, echo=first.opt.echo)
            assert (await _post(ctx, again)).code == aiocoap.CHANGED
            assert contexts() == 1
            wrong = aiocoap.Message(code=aiocoap.POST, uri=edhoc_uri, payload=message_1, echo=bytes(12))
            other = await aiocoap.Context.create_client_context()  # a new address, a forged Echo
            try:
                assert (await _post(other, wrong)).code == aiocoap.UNAUTHORIZED
            finally:
                await other.shutdown()
        finally:
            await ctx.shutdown()
        assert contexts() == 1 and server.edhoc_echo.challenges == 2
        device = CoapClient(quick("coap-edhoc"), server.uri, creds.agent_side)
        try:
            assert await device.post(b"hello") == b"olleh"  # its client answered the Echo
        finally:
            await device.close()
        assert server.edhoc_echo.challenges == 3
