"""The fleet's lean DTLS client (`bench/lean_dtls.py`, `bench sessions --device-client`) against a
real `tam serve` over coaps-psk on loopback: whole sessions, block-wise both ways, a lossy link, a
wrong key, and which client a run used."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from aiocoap import ACK, CON, Message
from aiocoap.numbers.codes import Code
from aiocoap.optiontypes import BlockOption

from teep_coap.bench.compare import parse_setup
from teep_coap.bench.fleet import FleetWorld, drive_fleet, make_fleet_world, used_client
from teep_coap.bench.lean_dtls import LeanDtlsClient
from teep_coap.bench.sessions import BenchError, tam_process
from teep_coap.profiles import load_profile
from teep_coap.profiles.schema import Profile, Retransmission
from teep_coap.profiles.session import run_session
from teep_coap.transport.base import TransportError, TransportTimeout
from teep_coap.transport.coap.credentials import DeviceCredentials
from teep_coap.transport.relay import DOWN, FaultPlan, UdpRelay

pytestmark = pytest.mark.timeout(120)


def _world(tmp_path: Path, devices: int, image_size: int) -> FleetWorld:
    return make_fleet_world(tmp_path / "tam", tmp_path / "creds", devices, image_size, "coaps-psk")


def _installed(world: FleetWorld, i: int) -> bool:
    from teep_coap.store.tam_db import TamStore
    from teep_coap.store.tamdir import load_tam_dir

    _config, store = load_tam_dir(world.tam_dir)
    try:
        assert isinstance(store, TamStore)
        device = store.device_by_kid(world.fleet.registration(i).kid)
        assert device is not None
        return any(c.installed_seq for c in store.device_components(device.id))
    finally:
        store.close()


def test_the_fleet_runs_whole_sessions_through_it(tmp_path: Path) -> None:
    world = _world(tmp_path, 4, 3000)  # the Update comes in three Block2 blocks of 1024
    with tam_process("coaps-psk", world.tam_dir, devices=4) as (uri, _pid):
        drive = asyncio.run(drive_fleet("coaps-psk", uri, world, 8, 3, device_client="lean"))
    assert drive.failures == [] and len(drive.latencies) == 8
    assert all(_installed(world, i) for i in range(4))


def _small_blocks(profile: Profile, size: int) -> Profile:
    return dataclasses.replace(profile, transport=dataclasses.replace(profile.transport, block_size=size))


def test_small_blocks_go_block_wise_both_ways(tmp_path: Path) -> None:
    world = _world(tmp_path, 1, 700)
    profile = _small_blocks(load_profile("coaps-psk"), 64)
    creds = world.credentials(0)
    assert creds is not None
    sent: list[int] = []

    async def one(uri: str) -> bool:
        async with LeanDtlsClient(profile, uri, creds) as client:
            result = await run_session(
                world.fleet.engine(0), client, uri, timeout=10.0,
                on_exchange=lambda out, _answer: sent.append(len(out)),
            )  # fmt: skip
            return result.ok

    with tam_process("coaps-psk", world.tam_dir, devices=1) as (uri, _pid):
        assert asyncio.run(one(uri))
    assert max(sent) > 64  # the QueryResponse went in Block1 blocks, the Update came in Block2 blocks
    assert _installed(world, 0)


def test_a_lossy_link_is_bridged_by_retransmission(tmp_path: Path) -> None:
    world = _world(tmp_path, 3, 500)
    base = load_profile("coaps-psk")
    profile = dataclasses.replace(base, retransmission=Retransmission(ack_timeout=0.1, max_retransmit=6))

    async def run(uri: str) -> tuple[int, int]:
        target = urlsplit(uri)
        assert target.hostname is not None and target.port is not None
        faults = FaultPlan(drop=0.3, seed=7, spare_dtls_handshake=True)  # CoAP records only
        async with UdpRelay((target.hostname, target.port), faults=faults) as relay:
            via = f"coaps://127.0.0.1:{relay.port}{target.path}"
            ok = 0
            for i in range(3):
                creds = world.credentials(i)
                assert creds is not None
                async with LeanDtlsClient(profile, via, creds) as client:
                    ok += (await run_session(world.fleet.engine(i), client, via, timeout=10.0)).ok
            return ok, relay.stats.up.dropped + relay.stats.down.dropped

    with tam_process("coaps-psk", world.tam_dir, devices=3) as (uri, _pid):
        ok, dropped = asyncio.run(run(uri))
    assert ok == 3 and dropped > 0


def test_a_wrong_psk_is_named_and_silence_times_out(tmp_path: Path) -> None:
    world = _world(tmp_path, 1, 100)
    base = load_profile("coaps-psk")
    profile = dataclasses.replace(base, limits=dataclasses.replace(base.limits, handshake_timeout=1.0))
    creds = world.credentials(0)
    assert creds is not None
    wrong = dataclasses.replace(creds, psk=bytes(len(creds.psk)))

    async def one(uri: str, key: DeviceCredentials) -> None:
        async with LeanDtlsClient(profile, uri, key) as client:
            await client.post(b"")

    async def silent(uri: str) -> None:
        target = urlsplit(uri)
        assert target.hostname is not None and target.port is not None
        async with UdpRelay((target.hostname, target.port)) as relay:
            relay.blackhole.add(DOWN)  # the TAM's answers never come back
            await one(f"coaps://127.0.0.1:{relay.port}{target.path}", creds)

    with tam_process("coaps-psk", world.tam_dir, devices=1) as (uri, _pid):
        with pytest.raises(TransportError, match=r"DTLS alert 51 \(decrypt_error: the TAM holds another PSK"):
            asyncio.run(one(uri, wrong))
        with pytest.raises(TransportTimeout, match=r"DTLS handshake .* not finished within 1 s"):
            asyncio.run(silent(uri))


def test_only_dtls_psk_profiles_and_coaps_uris() -> None:
    coaps = load_profile("coaps-psk")
    creds = _creds()
    with pytest.raises(TransportError, match="for DTLS-PSK profiles, not 'coap'"):
        LeanDtlsClient(load_profile("coap"), "coap://127.0.0.1/teep", creds)
    with pytest.raises(TransportError, match="needs a coaps://"):
        LeanDtlsClient(coaps, "coap://127.0.0.1/teep", creds)
    small = dataclasses.replace(coaps, limits=dataclasses.replace(coaps.limits, max_message_size=10))
    with pytest.raises(TransportError, match="message of 11 bytes exceeds the profile limit 10"):
        asyncio.run(LeanDtlsClient(small, "coaps://127.0.0.1/teep", creds).post(bytes(11)))
    with pytest.raises(TransportError, match="needs a coaps://"):
        LeanDtlsClient(coaps, "coaps://127.0.0.1:99999/teep", creds)
    # a link-local address without an interface: the kernel refuses the socket, no datagram leaves
    with pytest.raises(
        TransportError, match=r"no UDP socket towards coaps://\[fe80::1\]/teep: .*Invalid argument"
    ):
        asyncio.run(LeanDtlsClient(coaps, "coaps://[fe80::1]/teep", creds).post(b""))
    assert used_client(coaps, "lean") == "lean" and used_client(coaps, "broker") == "broker"
    assert used_client(load_profile("coap"), "lean") == "broker"  # the lean client is DTLS-PSK only


def _creds() -> DeviceCredentials:
    return DeviceCredentials(name="dev-x", psk_identity="dev-x", psk=b"k" * 16)


def test_an_unknown_device_client_is_refused(tmp_path: Path) -> None:
    world = _world(tmp_path, 1, 100)
    with pytest.raises(ValueError, match="device client 'fast': one of lean, broker"):
        asyncio.run(drive_fleet("coaps-psk", "coaps://127.0.0.1:9/teep", world, 1, 1, device_client="fast"))
    with pytest.raises(BenchError, match="device-client is one of lean, broker"):
        parse_setup("profile=coaps-psk,device-client=fast")
    assert parse_setup("device-client=broker").label() == "coaps-psk, broker device client"


def test_bench_sessions_says_which_client_the_devices_used() -> None:
    def run(*extra: str) -> dict[str, object]:
        out = subprocess.run(
            [sys.executable, "-c", "from teep_coap.cli import main; main()", "bench", "sessions",
             "--devices", "3", "--concurrency", "2", "--image-size", "200", "--json", *extra],
            capture_output=True, text=True, timeout=90, check=True,
        )  # fmt: skip
        return json.loads(out.stdout)  # type: ignore[no-any-return]

    lean, broker = run(), run("--device-client", "broker")
    assert (lean["device_client"], lean["ok"], lean["failed"]) == ("lean", 3, 0)
    assert (broker["device_client"], broker["ok"], broker["failed"]) == ("broker", 3, 0)
    assert run("--profile", "coap")["device_client"] == "broker"


def test_an_empty_ack_then_a_separate_response_is_acknowledged_and_answers() -> None:
    """RFC 7252 §5.2.2, the TAM's slow path: its empty ACK stops the resends, its CON response with
    our token is the answer and gets an ACK with its own message ID. (The TAM on loopback answers in
    the ACK, so this is driven by hand: a stand-in for the DTLS session records what is written.)"""
    client = LeanDtlsClient(load_profile("coaps-psk"), "coaps://127.0.0.1/teep", _creds())
    written: list[Message] = []

    class Session:
        def write(self, _session: object, data: bytes) -> None:
            written.append(Message.decode(data))

    async def run() -> Message:
        loop = asyncio.get_running_loop()
        client._dtls, client._session = Session(), object()
        client._answer = loop.create_future()
        client._sent_mid, client._token = 7, b"tokn"
        client._resend = loop.call_later(60, lambda: None)
        empty = Message(code=Code.EMPTY)
        empty.mtype, empty.mid = ACK, 7
        client._message(empty)
        assert client._resend is None and not client._answer.done()
        other = Message(code=Code.CHANGED, payload=b"old")
        other.mtype, other.mid, other.token = CON, 899, b"othr"
        client._message(other)  # another exchange's late response: acknowledged, not the answer
        assert not client._answer.done()
        late = Message(code=Code.CHANGED, payload=b"x")
        late.mtype, late.mid, late.token = CON, 900, b"tokn"
        client._message(late)
        return await client._answer

    assert asyncio.run(run()).payload == b"x"
    assert [(m.mtype, m.code, m.mid) for m in written] == [(ACK, Code.EMPTY, 899), (ACK, Code.EMPTY, 900)]


def test_a_block_wise_answer_that_skips_a_block_or_never_ends_is_refused() -> None:
    """The Block2 follow-ups of a TAM that answers another block than asked for, or says 'more'
    for ever: refused in one line, never a corrupt or unbounded message (answers made by hand)."""
    base = load_profile("coaps-psk")
    small = dataclasses.replace(base, limits=dataclasses.replace(base.limits, max_message_size=4096))

    def block(number: int, more: bool) -> Message:
        answer = Message(code=Code.CHANGED, payload=bytes(1024))
        answer.opt.block2 = BlockOption.BlockwiseTuple(number, more, 6)
        return answer

    async def run(answers: Callable[[int], Message]) -> None:
        client = LeanDtlsClient(small, "coaps://127.0.0.1/teep", _creds())
        asked: list[int] = []

        async def exchange(request: Message, _deadline: float) -> Message:
            asked.append(0 if request.opt.block2 is None else request.opt.block2.block_number)
            return answers(asked[-1])

        client._exchange = exchange  # type: ignore[method-assign]
        await client._post_once(b"x", 1e12)

    with pytest.raises(TransportError, match="answered block 1 with another"):
        asyncio.run(run(lambda n: block(0 if n == 1 else n, True)))
    with pytest.raises(TransportError, match="exceeds the profile limit of 4096 bytes"):
        asyncio.run(run(lambda n: block(n, True)))
