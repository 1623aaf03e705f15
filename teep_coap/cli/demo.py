"""`teep-coap demo`: the main job — a real TEEP session on loopback over CoAP + DTLS PSK.

Fresh temporary folders; a TAM and an Agent with new keys; DTLS PSK and OSCORE credentials; one
Trusted Component in a signed SUIT envelope; the TAM served over coaps with a counting UDP relay in
front; the Agent's Broker runs sessions until the TAM has nothing more. Every message is shown at
each layer (bare TEEP CBOR, COSE_Sign1, the CoAP-over-DTLS datagrams that carried it), then the same
session over plain CoAP and OSCORE for a size comparison. Any failure exits non-zero.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from teep_coap.bench.scenario import run_session as scenario_session
from teep_coap.cli.groups import root
from teep_coap.encoding.cbor_codec import decode
from teep_coap.encoding.cose_view import split_cose
from teep_coap.errors import TeepCoapError
from teep_coap.profiles import load_profile
from teep_coap.profiles.scenario import offer_component
from teep_coap.profiles.session import TamHandler, run_session
from teep_coap.profiles.stack import make_client, make_server
from teep_coap.protocol.agent import AgentEngine
from teep_coap.protocol.tam import TamEngine
from teep_coap.store.agentdir import init_agent_state, load_agent_state
from teep_coap.store.tamdir import init_tam_dir, load_tam_dir
from teep_coap.transport.coap.credentials import provision_device
from teep_coap.transport.relay import UP, UdpRelay

COMPONENT_ID = (b"demo-tc",)
DEVICE = "demo-device"


class DemoFailed(TeepCoapError):
    """The demo session did not install the Trusted Component."""


def _hex(data: bytes, limit: int) -> str:
    text = data.hex()
    if limit and len(data) > limit:
        return f"{data[:limit].hex()}… ({len(data) - limit} more bytes)"
    return text


def _wrap(text: str, indent: str = "      ", width: int = 96) -> str:
    return "\n".join(indent + text[i : i + width] for i in range(0, len(text), width)) or indent


@dataclass
class _Exchange:
    sent: bytes
    answer: bytes | None
    up: list[bytes]
    down: list[bytes]


def _message_name(sealed: bytes) -> tuple[str, bytes]:
    """(TEEP message name, bare TEEP CBOR) of a COSE_Sign1-wrapped message."""

    _, bare = split_cose(sealed)
    return type(decode(bare)).__name__, bare


def _is_handshake(datagram: bytes) -> bool:
    """DTLS records of content type 20-22 (change_cipher_spec, alert, handshake) open the datagram."""
    return datagram[:1] in (b"\x14", b"\x15", b"\x16")


def _show_message(direction: str, sealed: bytes, datagrams: list[bytes], limit: int) -> None:
    name, bare = _message_name(sealed)
    datagrams = [d for d in datagrams if not _is_handshake(d)]
    dtls_bytes = sum(len(d) for d in datagrams)
    click.echo(f"  {direction} {name}")
    click.echo(f"    TEEP (bare CBOR)      {len(bare):6d} B")
    click.echo(_wrap(_hex(bare, limit)))
    click.echo(
        f"    COSE_Sign1            {len(sealed):6d} B  (+{len(sealed) - len(bare)} B signature and headers)"
    )
    click.echo(_wrap(_hex(sealed, limit)))
    click.echo(
        f"    CoAP/DTLS datagrams   {dtls_bytes:6d} B in {len(datagrams)} datagram(s)"
        f"  (+{dtls_bytes - len(sealed)} B CoAP, block-wise, DTLS record and AEAD)"
    )
    for i, d in enumerate(datagrams[:3]):
        click.echo(
            _wrap(f"#{i + 1} ({len(d)} B, DTLS content type {d[0]}): " + _hex(d, min(limit, 40) or 40))
        )
    if len(datagrams) > 3:
        click.echo(f"      … {len(datagrams) - 3} more datagram(s)")


def _build_world(root_dir: Path, image_size: int) -> dict[str, Any]:

    tam_dir, agent_dir = root_dir / "tam", root_dir / "agent"
    init_tam_dir(tam_dir, algs=("esp256",))
    config, store = load_tam_dir(tam_dir)
    tam_key = config.keys[0]
    click.echo(f"1. TAM folder {tam_dir}: ESP256 signing key, kid {tam_key.kid.hex()[:16]}…")
    state = init_agent_state(agent_dir, tam_key.public, "esp256")
    click.echo(
        f"2. Agent folder {agent_dir}: ESP256 key, kid {state.key.kid.hex()[:16]}…; trusts the TAM key"
    )
    store.add_device(
        kid=state.key.kid,
        alg=state.key.alg,
        public_key=state.key.public.to_pem(),
        now=time.time(),
        name=DEVICE,
        psk_identity=DEVICE,
    )
    creds = provision_device(tam_dir, agent_dir, DEVICE)
    click.echo(
        f"3. Device registered at the TAM; DTLS PSK identity {creds.psk_identity!r} with a fresh "
        f"{len(creds.psk)}-byte PSK, and an OSCORE context (tam/credentials.toml, agent/transport.toml)"
    )
    image = bytes((i * 7 + 3) % 256 for i in range(image_size))
    envelope = offer_component(
        store, tam_key, state.config, COMPONENT_ID, image, now=time.time(), name="demo"
    )
    click.echo(
        f"4. Trusted Component {COMPONENT_ID[0].decode()!r}: {len(image)}-byte image in a "
        f"{len(envelope)}-byte signed SUIT envelope, in the TAM catalog for every device"
    )
    return {"tam_dir": tam_dir, "agent_dir": agent_dir, "config": config, "store": store, "image": image}


async def _main_session(world: dict[str, Any], limit: int) -> None:

    profile = load_profile("coaps-psk")
    handler = TamHandler(TamEngine(world["config"], world["store"]))
    agent = AgentEngine(load_agent_state(world["agent_dir"]))
    async with make_server(profile, handler, tam_dir=world["tam_dir"]) as server:  # noqa: SIM117
        async with UdpRelay(("127.0.0.1", server.port), record=True) as relay:
            uri = f"coaps://127.0.0.1:{relay.port}{profile.transport.path}"
            click.echo(f"5. TAM serving {server.uri} (profile coaps-psk); counting relay at {uri}")
            exchanges: list[_Exchange] = []
            mark = [0]

            def on_exchange(sent: bytes, answer: bytes | None) -> None:
                new = relay.datagrams[mark[0] :]
                mark[0] = len(relay.datagrams)
                up = [d.payload for d in new if d.direction == UP]
                down = [d.payload for d in new if d.direction != UP]
                exchanges.append(_Exchange(sent, answer, up, down))

            client = make_client(profile, uri, state_dir=world["agent_dir"])
            t0 = time.perf_counter()
            try:
                first = await run_session(agent, client, uri, timeout=10.0, on_exchange=on_exchange)
                n_first = len(exchanges)
                second = await run_session(agent, client, uri, timeout=10.0, on_exchange=on_exchange)
            finally:
                await client.close()
            seconds = time.perf_counter() - t0
    click.echo(f"6. Agent (Broker) ran 2 sessions in {seconds * 1000:.0f} ms:")
    for i, ex in enumerate(exchanges):
        if i == 0 or i == n_first:
            click.echo(f"  — session {1 if i == 0 else 2} —")
        if ex.sent:
            _show_message("Agent → TAM", ex.sent, ex.up, limit)
        else:
            hs = [d for d in ex.up + ex.down if _is_handshake(d)]
            if hs:
                click.echo(
                    f"  DTLS 1.2 PSK handshake (TLS_PSK_WITH_AES_128_CCM_8): {sum(map(len, hs))} B"
                    f" in {len(hs)} datagrams"
                )
            app = [d for d in ex.up if not _is_handshake(d)]
            click.echo(
                f"  Agent → TAM empty POST (ProcessConnect): {sum(map(len, app))} B in {len(app)} datagram(s)"
            )
        if ex.answer:
            _show_message("TAM → Agent", ex.answer, ex.down, limit)
        else:
            dg = sum(len(d) for d in ex.down)
            click.echo(
                f"  TAM → Agent 2.04 Changed, no payload (session over): {dg} B in {len(ex.down)} datagram(s)"
            )
    if not (first.ok and second.ok):
        raise DemoFailed(f"session failed: {first.reason if not first.ok else second.reason}")
    entry = agent.state.components.get(COMPONENT_ID)
    if entry is None or agent.state.components.image(COMPONENT_ID) != world["image"]:
        raise DemoFailed(f"the Trusted Component was not installed (Agent: {agent.last_note})")
    if second.rounds != 2:
        raise DemoFailed(f"the second session should find nothing to do, took {second.rounds} rounds")
    click.echo(
        f"7. Installed {COMPONENT_ID[0].decode()!r} sequence {entry.sequence_number}: {entry.image_size} B, "
        f"SHA-256 {hashlib.sha256(world['image']).hexdigest()[:16]}… (equal to the TAM's image); "
        f"the second session found nothing more to do. TAM log: {handler.sessions_done} sessions done."
    )


async def _comparison(image_size: int) -> list[tuple[str, int, int, int, int, float]]:

    rows = []
    for name in ("coap", "coaps-psk", "coap-oscore", "coap-constrained"):
        trace = await scenario_session(load_profile(name), image_size)
        teep = sum(len(e.sent) + len(e.received or b"") for e in trace.exchanges)
        wire = sum(len(u.data) for u in trace.wire)
        rows.append((name, len(trace.exchanges), teep, len(trace.wire), wire, trace.seconds))
    return rows


@root.command("demo")
@click.option("--image-size", type=click.IntRange(0, 1 << 20), default=2048, show_default=True)
@click.option("--full", is_flag=True, help="Print every byte (default: the first 64 of each message).")
@click.option("--no-compare", is_flag=True, help="Skip the size comparison over coap/oscore.")
def demo(image_size: int, full: bool, no_compare: bool) -> None:
    """Install one Trusted Component over TEEP/CoAP/DTLS-PSK on loopback, showing every layer's bytes."""

    logging.getLogger("coap").setLevel(logging.CRITICAL)
    logging.getLogger("coap-server").setLevel(logging.CRITICAL)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="teep-coap-demo-") as tmp:
        world = _build_world(Path(tmp), image_size)
        try:
            asyncio.run(_main_session(world, 0 if full else 64))
        finally:
            world["store"].close()
        if not no_compare:
            click.echo(
                f"8. The same install ({image_size}-byte image) over four profiles, bytes on the wire:"
            )
            rows = asyncio.run(_comparison(image_size))
            head = ("profile", "POSTs", "TEEP+COSE B", "datagrams", "UDP payload B", "ms")
            click.echo(f"   {head[0]:<18} {head[1]:>5} {head[2]:>11} {head[3]:>9} {head[4]:>13} {head[5]:>7}")
            for name, posts, teep, n, wire, secs in rows:
                click.echo(f"   {name:<18} {posts:>5} {teep:>11} {n:>9} {wire:>13} {secs * 1000:>7.0f}")
            click.echo(
                "   (coaps includes the DTLS handshake; coap-constrained = coaps with 64-byte blocks;"
                " `teep-coap bench sizes` breaks these down per layer)"
            )
    click.echo(f"demo OK in {time.perf_counter() - t0:.1f} s")
