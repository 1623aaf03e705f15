"""The reference provisioning scenario of the size report, run for real over one profile.

A device with nothing installed meets a TAM whose catalog holds one Trusted Component of the given
payload size for every device: QueryRequest (attestation + component list) → QueryResponse (EAT
evidence) → Update (one SUIT envelope with the payload integrated) → Success (SUIT report). The TAM
and the Agent are the project's engines in temporary folders; the transport is the profile's, and a
counting relay on loopback sits between Broker and TAM so every byte on the wire is logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from teep_coap.bench.wire import C2S, S2C, RecordingClient, SessionTrace, WireUnit
from teep_coap.errors import TeepCoapError
from teep_coap.profiles.schema import Profile
from teep_coap.transport.base import MessageClient, MessageHandler

DEVICE_NAME = "bench-device"
COMPONENT_ID = (b"bench-tc",)
SETTLE = 0.05  # seconds to let teardown datagrams (close_notify) reach the relay log


class ScenarioError(TeepCoapError):
    """The reference session did not complete (the reason says where it stopped)."""


@dataclass
class World:
    """A TAM and an Agent that know each other, in a temporary folder."""

    root: Path
    tam: Any  # TamEngine (or an adapter with connect/receive)
    agent: Any  # AgentEngine (or an adapter with receive/process_error/request_policy_check)
    tam_dir: Path
    agent_dir: Path
    # (name, bare size) of each sealed message, for protocols whose bytes the report cannot open
    facts: dict[bytes, tuple[str, int]] | None = None
    check: Callable[[], None] | None = None  # raises ScenarioError when the session did not succeed


# A factory turns (profile, folder, payload size) into a World; the JSON binding swaps in adapters.
WorldFactory = Callable[[Profile, Path, int], World]


def teep_world(
    profile: Profile, root: Path, payload_size: int, *, tam_algs: tuple[str, ...] = ("esp256",)
) -> World:
    """TAM (ESP256 only by default, background-check attestation) and Agent (ESP256), one component
    for all. With both algorithms the TAM's first QueryRequest carries two signatures."""
    from teep_coap.protocol.agent import AgentEngine
    from teep_coap.protocol.agentstate import AgentState
    from teep_coap.protocol.tam import TamEngine
    from teep_coap.protocol.tamdir import init_tam_dir, load_tam_dir
    from teep_coap.security.suit.build import build_envelope
    from teep_coap.transport.coap.credentials import provision_device

    tam_dir, agent_dir = root / "tam", root / "agent"
    init_tam_dir(tam_dir, algs=tam_algs)
    config, store = load_tam_dir(tam_dir)
    tam_key = next(k for k in config.keys if k.key_type == "P-256")
    state = AgentState.init(agent_dir, tam_key.public, "esp256")
    provision_device(tam_dir, agent_dir, DEVICE_NAME)
    now = time.time()
    store.add_device(
        kid=state.key.kid,
        alg=state.key.alg,
        public_key=state.key.public.to_pem(),
        now=now,
        name=DEVICE_NAME,
        psk_identity=DEVICE_NAME,
    )
    # Deterministic payload bytes: sizes must not depend on luck (CBOR lengths do not, but be plain).
    payload = bytes(i % 251 for i in range(payload_size))
    envelope = build_envelope(
        payload,
        key=tam_key,
        component_id=COMPONENT_ID,
        sequence_number=1,
        vendor_id=state.config.vendor_id,
        class_id=state.config.class_id,
    )
    store.add_component(
        component_id=COMPONENT_ID, sequence_number=1, envelope=envelope, now=now, name="bench", audience="all"
    )
    return World(root, TamEngine(config, store), AgentEngine(AgentState.load(agent_dir)), tam_dir, agent_dir)


def engine_handler(tam: Any) -> MessageHandler:
    """The TAM engine as a transport `MessageHandler` (empty payload = ProcessConnect): the session
    glue's `TamHandler`, which maps engine errors to 400 / 403 / 500 like every other server here."""
    from teep_coap.profiles.session import TamHandler

    return TamHandler(tam)


@contextlib.asynccontextmanager
async def _server_and_relay(
    profile: Profile, world: World, handler: MessageHandler
) -> AsyncIterator[tuple[Any, Callable[[], list[WireUnit]], Callable[[], int], str]]:
    """Start the TAM transport and a counting relay in front of it; yield (relay, log, length, uri)."""
    scheme = profile.transport.scheme
    if scheme in ("http", "https"):
        from teep_coap.transport.http.stack import make_http_server
        from teep_coap.transport.tcp_relay import TcpCountingRelay

        certs = world.root / "certs"
        if scheme == "https":
            from teep_coap.security.certs import write_bundle

            write_bundle(certs)
        server = make_http_server(profile, handler, certs_path=certs)
        port = await server.start()
        relay = TcpCountingRelay("127.0.0.1", port)
        try:
            rport = await relay.start()
            uri = f"{scheme}://127.0.0.1:{rport}{profile.transport.path}"

            def log() -> list[WireUnit]:
                return [WireUnit(c.direction, c.data, c.conn) for c in relay.chunks]

            yield relay, log, lambda: len(relay.chunks), uri
        finally:
            await relay.stop()
            await server.stop()
        return
    from teep_coap.transport.coap.credentials import load_tam_credentials
    from teep_coap.transport.coap.server import CoapServer
    from teep_coap.transport.relay import UP, UdpRelay

    coap_server = CoapServer(profile, handler, devices=load_tam_credentials(world.tam_dir))
    await coap_server.start()
    udp = UdpRelay(("127.0.0.1", coap_server.port), record=True)
    try:
        await udp.start()
        uri = f"{'coaps' if scheme == 'coaps' else 'coap'}://127.0.0.1:{udp.port}{profile.transport.path}"

        def udp_log() -> list[WireUnit]:
            return [WireUnit(C2S if d.direction == UP else S2C, d.payload) for d in udp.datagrams]

        yield udp, udp_log, lambda: len(udp.datagrams), uri
    finally:
        await udp.close()
        await coap_server.close()


def _client(profile: Profile, world: World, uri: str) -> MessageClient:
    scheme = profile.transport.scheme
    if scheme in ("http", "https"):
        from teep_coap.transport.http.stack import make_http_client

        return make_http_client(profile, uri, certs_path=world.root / "certs" if scheme == "https" else None)
    from teep_coap.transport.coap.client import CoapClient
    from teep_coap.transport.coap.credentials import load_agent_credentials

    creds = load_agent_credentials(world.agent_dir) if scheme != "coap" else None
    return CoapClient(profile, uri, creds)


async def run_session(
    profile: Profile,
    payload_size: int,
    *,
    world_factory: WorldFactory = teep_world,
    workdir: str | os.PathLike[str] | None = None,
) -> SessionTrace:
    """Run the reference scenario once over `profile` and return what crossed the relay."""
    from teep_coap.protocol.broker import BrokerSession, Done, Send
    from teep_coap.transport.base import TransportError

    with tempfile.TemporaryDirectory(prefix="teep-bench-", dir=workdir) as tmp:
        world = world_factory(profile, Path(tmp), payload_size)
        handler = engine_handler(world.tam)
        async with _server_and_relay(profile, world, handler) as (_relay, log, length, uri):
            recorder = RecordingClient(_client(profile, world, uri), length)
            session = BrokerSession(world.agent, uri, max_rounds=profile.limits.max_session_rounds)
            t0 = time.perf_counter()
            action: Send | Done = session.start()
            try:
                while isinstance(action, Send):
                    try:
                        answer = await recorder.post(action.payload)
                    except TransportError as exc:
                        action = session.on_transport_error(exc)
                    else:
                        action = session.on_response(answer)
            finally:
                seconds = time.perf_counter() - t0
                await recorder.close()
            await asyncio.sleep(SETTLE)
            if not action.ok:
                raise ScenarioError(f"session over {profile.name} failed: {action.reason}")
            note = getattr(world.agent, "last_note", "")
            last = getattr(world.agent, "last_response", None)
            if last is not None and type(last).__name__ != "Success":
                raise ScenarioError(
                    f"session over {profile.name}: the Agent ended with {type(last).__name__} ({note})"
                )
            if len(recorder.exchanges) < 3:
                raise ScenarioError(
                    f"session over {profile.name} ended after {len(recorder.exchanges)} exchanges ({note})"
                )
            if world.check is not None:
                world.check()
            transport = "tcp" if profile.transport.scheme in ("http", "https") else "udp"
            trace = SessionTrace(recorder.exchanges, log(), seconds, transport, dict(world.facts or {}))
        # OSCORE contexts write their sequence numbers when collected: let that happen while the
        # temporary folder still exists.
        del recorder, world, handler, session
        gc.collect()
        return trace


def world_for(profile: Profile) -> WorldFactory:
    """The world factory of a profile's protocol and encoding."""
    if profile.protocol == "teep" and profile.encoding == "cbor":
        return teep_world
    if profile.protocol == "teep" and profile.encoding == "json":
        from teep_coap.protocol.json_binding import json_teep_world

        return json_teep_world
    if profile.protocol == "otrp":
        return otrp_world
    from teep_coap.errors import NotImplementedFeature

    raise NotImplementedFeature(
        f"the size scenario for {profile.protocol}/{profile.encoding} is not built yet"
    )


class _OtrpTam:
    """The OTrP TAM engine, noting name and bare size of every message it seals."""

    def __init__(self, engine: Any, facts: dict[bytes, tuple[str, int]]) -> None:
        self.engine, self.facts = engine, facts

    def _note(self, wire: bytes | None) -> bytes | None:
        sealed = self.engine.last_sent
        if wire is not None and sealed is not None:
            self.facts[bytes(wire)] = (self.engine.last_sent_name, len(sealed.tbs))
        return wire

    def connect(self, transport_identity: str | None = None) -> bytes:
        wire = self._note(self.engine.connect(transport_identity))
        assert wire is not None
        return wire

    def receive(self, data: bytes, transport_identity: str | None = None) -> bytes | None:
        return self._note(self.engine.receive(data, transport_identity))


class _OtrpAgent(_OtrpTam):
    """The OTrP Agent engine with the Broker-facing calls the TEEP Broker loop expects."""

    def receive(self, data: bytes, transport_identity: str | None = None) -> bytes | None:
        return self._note(self.engine.receive(data))

    def process_error(self, tam_uri: str) -> None:
        return None

    def request_policy_check(self) -> str | None:
        return None


def otrp_world(profile: Profile, root: Path, payload_size: int) -> World:
    """OTrP's half of the scenario (the OTrP helper's engines): GetDeviceState → CreateSD → InstallTA
    with one TA of `payload_size` bytes, RSA-2048 keys as draft-pei-opentrustprotocol-06 mandates."""
    from teep_coap.protocol.otrp_session import make_engines, reference_policy
    from teep_coap.security.otrp_pki import make_pki
    from teep_coap.transport.coap.credentials import provision_device

    tam_dir, agent_dir = root / "tam", root / "agent"
    provision_device(tam_dir, agent_dir, DEVICE_NAME)  # DTLS PSK / OSCORE credentials
    pki = make_pki("RSA")
    tam, agent = make_engines(
        profile.encoding,  # type: ignore[arg-type]
        pki,
        root / "otrp-agent",
        reference_policy(pki, payload_size),
    )
    facts: dict[bytes, tuple[str, int]] = {}

    def check() -> None:
        results = tam.results()
        if not results or any(r.status != "pass" for r in results):
            raise ScenarioError(f"OTrP session over {profile.name} did not pass: {results}")

    return World(root, _OtrpTam(tam, facts), _OtrpAgent(agent, facts), tam_dir, agent_dir, facts, check)
