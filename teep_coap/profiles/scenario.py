"""The reference provisioning scenario, assembled for any profile: one TAM, one Agent, real transports.

A device with nothing installed meets a TAM whose catalog holds one Trusted Component of the given
payload size for every device. TEEP (CBOR/COSE or JSON/JWS, by the profile's `encoding`): QueryRequest
→ QueryResponse (EAT evidence) → Update (one SUIT envelope, payload integrated) → Success. OTrP:
GetDeviceState → CreateSD → InstallTA. Both engines live in a temporary folder; the TAM is served by the
profile's transport on loopback and the Broker loop talks to it through the profile's client.

`run_scenario` is the one session runner: `teep-coap session` calls it as is, the size benchmark
(`bench.scenario`) calls it with a counting relay in front of the server (`front`) and a recording
client (`wrap_client`), and reads what it needs in `collect` while the stack still runs.
"""

from __future__ import annotations

import contextlib
import gc
import os
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar, cast

from teep_coap.errors import NotImplementedFeature, TeepCoapError
from teep_coap.model.codes import MessageType
from teep_coap.model.teep import MESSAGE_CLASSES
from teep_coap.otrp.profiles import tam_handler as otrp_tam_handler
from teep_coap.otrp.protocol.session import make_engines, reference_policy
from teep_coap.otrp.protocol.tam import OtrpTamEngine
from teep_coap.otrp.security.pki import make_pki
from teep_coap.profiles.capture import session_front, tls_keys_logged, write_psk_file
from teep_coap.profiles.schema import Profile
from teep_coap.profiles.session import TamHandler
from teep_coap.profiles.stack import make_client, make_server
from teep_coap.protocol.agent import AgentEngine
from teep_coap.protocol.broker import BrokerSession, Done, Send
from teep_coap.protocol.tam import TamEngine
from teep_coap.protocol.wire import wire_for
from teep_coap.security.certs import write_bundle
from teep_coap.security.suit.build import build_envelope
from teep_coap.store.agentdir import init_agent_state, load_agent_state
from teep_coap.store.tamdir import init_tam_dir, load_tam_dir
from teep_coap.transport.base import MessageClient, MessageHandler, TransportError
from teep_coap.transport.coap.credentials import load_tam_credentials, provision_device
from teep_coap.transport.pcap import PcapWriter

DEVICE_NAME = "bench-device"
COMPONENT_ID = (b"bench-tc",)

T = TypeVar("T")


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
    installed: Callable[[], list[dict[str, Any]]] = field(default=lambda: [])  # what the device holds


# A factory turns (profile, folder, payload size) into a World.
WorldFactory = Callable[[Profile, Path, int], World]


def teep_world(
    profile: Profile, root: Path, payload_size: int, *, tam_algs: tuple[str, ...] = ("esp256",)
) -> World:
    """TAM (ESP256 only by default, background-check attestation) and Agent (ESP256), one component
    for all, both speaking the profile's wire (CBOR/COSE or JSON/JWS). With both algorithms the TAM's
    first QueryRequest carries two signatures."""

    wire = wire_for(profile.encoding, profile.compat)
    tam_dir, agent_dir = root / "tam", root / "agent"
    init_tam_dir(tam_dir, algs=tam_algs)
    config, store = load_tam_dir(tam_dir)
    tam_key = next(k for k in config.keys if k.key_type == "P-256")
    state = init_agent_state(agent_dir, tam_key.public, "esp256")
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
    offer_component(store, tam_key, state.config, COMPONENT_ID, payload, now=now, name="bench")
    agent = AgentEngine(load_agent_state(agent_dir), wire=wire)

    def installed() -> list[dict[str, Any]]:
        return [
            {"component_id": [p.hex() for p in e.component_id], "sequence_number": int(e.sequence_number)}
            for e in agent.state.components.list()
        ]

    return World(root, TamEngine(config, store, wire=wire), agent, tam_dir, agent_dir, installed=installed)


def offer_component(
    store: Any,
    tam_key: Any,
    device: Any,
    component_id: tuple[bytes, ...],
    payload: bytes,
    *,
    now: float,
    name: str,
) -> bytes:
    """Sign `payload` as a SUIT envelope (sequence 1) for the vendor and class of `device` (an
    AgentConfig) and put it in the TAM's catalog for every device; returns the envelope."""

    envelope = build_envelope(
        payload,
        key=tam_key,
        component_id=component_id,
        sequence_number=1,
        vendor_id=device.vendor_id,
        class_id=device.class_id,
    )
    store.add_component(
        component_id=component_id, sequence_number=1, envelope=envelope, now=now, name=name, audience="all"
    )
    return envelope


def engine_handler(tam: Any) -> MessageHandler:
    """The TAM engine as a transport `MessageHandler` (empty payload = ProcessConnect): TEEP's
    `TamHandler`, or OTrP's handler for the OTrP engine; both map engine errors to 400 / 403 / 500
    like every other server here."""

    if isinstance(tam, _OtrpTam):  # the OTrP engine's byte-in/byte-out calls, noted for the facts
        return otrp_tam_handler(cast(OtrpTamEngine, tam))
    return TamHandler(tam)


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
        if wire is None:
            raise ScenarioError("the OTrP TAM sent nothing on connect")
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
    """OTrP's half of the scenario: GetDeviceState → CreateSD → InstallTA with one TA of
    `payload_size` bytes, RSA-2048 keys as draft-pei-opentrustprotocol-06 mandates."""

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

    def installed() -> list[dict[str, Any]]:
        return [
            {"sd": sd, "ta": taid, "size": len(data)}
            for sd, tas in agent.installed().items()
            for taid, data in tas.items()
        ]

    return World(
        root, _OtrpTam(tam, facts), _OtrpAgent(agent, facts), tam_dir, agent_dir, facts, check, installed
    )


def world_for(profile: Profile) -> WorldFactory:
    """The world factory of a profile's protocol (TEEP picks its wire from the profile's encoding)."""
    if profile.protocol == "teep":
        return teep_world
    if profile.protocol == "otrp":
        return otrp_world

    raise NotImplementedFeature(f"no session scenario for protocol {profile.protocol!r}")


@contextlib.asynccontextmanager
async def serving(profile: Profile, world: World, handler: MessageHandler) -> AsyncIterator[int]:
    """Start the profile's TAM server on 127.0.0.1 (any free port) and yield its port; HTTPS gets a
    fresh certificate bundle in ROOT/certs."""

    certs = world.root / "certs"
    if profile.transport.scheme == "https":
        write_bundle(certs)
    server = make_server(profile, handler, tam_dir=world.tam_dir, certs_path=certs)
    bound = await server.start()
    try:
        yield bound if isinstance(bound, int) else int(server.port)
    finally:
        closer = getattr(server, "close", None) or server.stop
        await closer()


def client_for(profile: Profile, world: World, uri: str) -> MessageClient:
    """The Broker's client of the profile, with the Agent folder's credentials and the HTTPS CA."""

    scheme = profile.transport.scheme
    return make_client(
        profile,
        uri,
        state_dir=world.agent_dir,
        certs_path=world.root / "certs" if scheme == "https" else None,
    )


def local_uri(profile: Profile, port: int, host: str = "127.0.0.1") -> str:
    """The URI a Broker uses for a server on `port` (coap+oscore is spoken over coap://)."""
    scheme = profile.transport.scheme
    scheme = "coap" if scheme == "coap+oscore" else scheme
    return f"{scheme}://{host}:{port}{profile.transport.path}"


@dataclass
class ScenarioRun:
    """What the Broker loop saw: every (sent, answer) pair and the time from first POST to the end."""

    profile: Profile
    world: World
    exchanges: list[tuple[bytes, bytes | None]]
    seconds: float


Front = Callable[[Profile, int], contextlib.AbstractAsyncContextManager[str]]


async def run_scenario(
    profile: Profile,
    payload_size: int,
    collect: Callable[[ScenarioRun], Awaitable[T]],
    *,
    world_factory: WorldFactory | None = None,
    workdir: str | os.PathLike[str] | None = None,
    front: Front | None = None,
    wrap_client: Callable[[MessageClient], MessageClient] | None = None,
) -> T:
    """Run the reference scenario once over `profile`; `collect` reads the result while the stack runs.

    `front(profile, server_port)` may put something between Broker and TAM (it yields the URI to use);
    `wrap_client` may wrap the Broker's client. Raises ScenarioError when the session fails.
    """

    factory = world_factory or world_for(profile)
    with tempfile.TemporaryDirectory(prefix="teep-session-", dir=workdir) as tmp:
        world = factory(profile, Path(tmp), payload_size)
        handler = engine_handler(world.tam)
        async with contextlib.AsyncExitStack() as stack:
            port = await stack.enter_async_context(serving(profile, world, handler))
            uri = await stack.enter_async_context(front(profile, port)) if front else local_uri(profile, port)
            client = client_for(profile, world, uri)
            if wrap_client is not None:
                client = wrap_client(client)
            session = BrokerSession(world.agent, uri, max_rounds=profile.limits.max_session_rounds)
            exchanges: list[tuple[bytes, bytes | None]] = []
            t0 = time.perf_counter()
            action: Send | Done = session.start()
            try:
                while isinstance(action, Send):
                    try:
                        answer = await client.post(action.payload)
                    except TransportError as exc:
                        action = session.on_transport_error(exc)
                    else:
                        exchanges.append((action.payload, answer))
                        action = session.on_response(answer)
            finally:
                seconds = time.perf_counter() - t0
                await client.close()
            _check(profile, world, action.ok, action.reason, len(exchanges))
            result = await collect(ScenarioRun(profile, world, exchanges, seconds))
        # OSCORE contexts write their sequence numbers when collected: let that happen while the
        # temporary folder still exists.
        del client, world, handler, session
        gc.collect()
        return result


def _check(profile: Profile, world: World, ok: bool, reason: str, n_exchanges: int) -> None:
    if not ok:
        raise ScenarioError(f"session over {profile.name} failed: {reason}")
    note = getattr(world.agent, "last_note", "")
    last = getattr(world.agent, "last_response", None)
    if last is not None and type(last).__name__ != "Success":
        raise ScenarioError(
            f"session over {profile.name}: the Agent ended with {type(last).__name__} ({note})"
        )
    if n_exchanges < 3:
        raise ScenarioError(f"session over {profile.name} ended after {n_exchanges} exchanges ({note})")
    if world.check is not None:
        world.check()


def message_name(profile: Profile, world: World, data: bytes | None) -> str:
    """Name of a message we produced or verified: TEEP messages are opened (no verification),
    OTrP ones come from the engines' notes."""
    if not data:
        return "(empty)"
    if world.facts is not None:
        fact = world.facts.get(bytes(data))
        return fact[0] if fact else "?"

    view = wire_for(profile.encoding).describe(data) or {}
    mtype = view.get("message", {}).get("type")
    try:
        return MESSAGE_CLASSES[MessageType(mtype)].__name__
    except (ValueError, KeyError):
        return "?"


@dataclass
class SessionSummary:
    """What `teep-coap session` prints: the profile, what was installed, each message and its size."""

    profile: str
    protocol: str
    encoding: str
    scheme: str
    payload_size: int
    seconds: float
    installed: list[dict[str, Any]]
    messages: list[dict[str, Any]]

    @property
    def total_bytes(self) -> int:
        return sum(int(m["size"]) for m in self.messages)

    def to_json(self) -> dict[str, Any]:
        return {
            "profile": self.profile,
            "protocol": self.protocol,
            "encoding": self.encoding,
            "scheme": self.scheme,
            "payload_size": self.payload_size,
            "seconds": round(self.seconds, 4),
            "installed": self.installed,
            "messages": self.messages,
            "total_message_bytes": self.total_bytes,
        }


async def run_local_session(
    profile: Profile,
    payload_size: int = 1024,
    *,
    workdir: str | os.PathLike[str] | None = None,
    pcap: str | os.PathLike[str] | None = None,
) -> SessionSummary:
    """One complete provisioning session over `profile` on loopback (what `teep-coap session` runs).

    With `pcap`, a relay in front of the TAM writes every datagram / TCP segment there (the server
    shown on its scheme's usual port) and, for DTLS profiles, the PSK to `PCAP.psk`."""
    front: Front | None = None
    writer = None
    if pcap is not None:
        writer = PcapWriter(pcap)
        front = session_front(writer)

    async def collect(run: ScenarioRun) -> SessionSummary:
        if pcap is not None and profile.security.mode == "dtls-psk":
            write_psk_file(pcap, load_tam_credentials(run.world.tam_dir)[0].psk)
        messages: list[dict[str, Any]] = []
        for sent, answer in run.exchanges:
            if sent:
                messages.append(
                    {
                        "direction": "agent->tam",
                        "name": message_name(profile, run.world, sent),
                        "size": len(sent),
                    }
                )
            if answer:
                messages.append(
                    {
                        "direction": "tam->agent",
                        "name": message_name(profile, run.world, answer),
                        "size": len(answer),
                    }
                )
        return SessionSummary(
            profile.name,
            profile.protocol,
            profile.encoding,
            profile.transport.scheme,
            payload_size,
            run.seconds,
            run.world.installed(),
            messages,
        )

    keys: contextlib.AbstractContextManager[Any] = contextlib.nullcontext()
    if pcap is not None and profile.security.mode == "tls":
        keys = tls_keys_logged(pcap)  # FILE.keylog, for tshark -o tls.keylog_file:
    try:
        with keys:
            return await run_scenario(profile, payload_size, collect, workdir=workdir, front=front)
    finally:
        if writer is not None:
            writer.close()
