"""A simulated fleet whose cost does not grow with its size: devices made from a seed, in memory.

`bench sessions` used to build one Agent folder per device (keys, trust, configuration, an on-disk
component store: 78 KB and 5-20 ms each) and keep an AgentEngine per device for the whole run: 7.8 GB
of /dev/shm and over ten minutes before the first session at 100,000 devices. Here device i is a
pure function of (seed, i): its TEEP key and SUIT report key are derived from the seed, so the TAM
can register it (kid, public key) without anything kept for it, and its Agent is built in memory
(`MemoryAgentState`, `MemoryComponents`) when its session starts and dropped when it ends. What the
simulator holds at any moment is bounded by the sessions in flight, not by the number of devices.

Per-device files are made only where a profile needs them: DTLS PSK, OSCORE and EDHOC credentials
(`transport.toml`, the OSCORE context folder: its sequence numbers must survive between sessions).
Plain CoAP and the HTTP bindings need none, and the TAM folder then gets no `credentials.toml` either.

A device's Agent starts every session empty (a device whose session ends is forgotten); with
`--sessions` larger than `--devices` a device that comes back is, to the TAM, one that lost its
component and gets it again.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from teep_coap.bench.lean_dtls import LeanDtlsClient
from teep_coap.model.codes import (
    PROFILE_ED25519_A128CTR,
    PROFILE_ED25519_CHACHA_POLY,
    PROFILE_ESP256_A128CTR,
    PROFILE_ESP256_A128GCM,
    SuitCoseProfile,
)
from teep_coap.profiles import load_profile
from teep_coap.profiles.scenario import offer_component
from teep_coap.profiles.schema import Profile
from teep_coap.profiles.session import run_session
from teep_coap.profiles.stack import make_client
from teep_coap.protocol.agent import AgentEngine
from teep_coap.protocol.agentstate import AgentConfig, AgentState, BrokerState
from teep_coap.security.keys import ALG_ED25519, P256_ALGS, SigningKey, VerifyingKey, alg_id
from teep_coap.security.truststore import TrustStore
from teep_coap.store.memory_components import MemoryComponents
from teep_coap.store.tam_bulk import NewDevice, add_devices
from teep_coap.store.tam_db import TamStore
from teep_coap.store.tamdir import init_tam_dir, load_tam_dir
from teep_coap.transport.base import MessageClient
from teep_coap.transport.coap.credentials import DeviceCredentials, load_agent_credentials, provision_devices

ComponentId = tuple[bytes, ...]
COMPONENT_ID = (b"bench-sessions-tc",)  # the one Trusted Component every device of the bench gets
# Called with (sessions done, sessions failed, sessions in total).
Progress = Callable[[int, int, int], None]

# The order of the P-256 group: a derived scalar is reduced into [1, n-1].
_P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
DEFAULT_SEED = b"teep-coap bench fleet"


# ---------------------------------------------------------------------------- the Agent in memory


@dataclass
class MemoryAgentState(AgentState):
    """An `AgentState` that writes nothing: broker bookkeeping and the last SUIT reports stay in
    memory (`root` names the device; no file is read or written under it)."""

    reports: list[bytes] = field(default_factory=list)

    def save_broker(self, *, durable: bool = True) -> None:
        pass  # self.broker is the only copy

    def save_reports(self, reports: list[bytes]) -> None:
        self.reports = list(reports)

    def last_reports(self) -> list[bytes]:
        return list(self.reports)

    def reset(self) -> None:
        self.components = MemoryComponents()


# ---------------------------------------------------------------------------- devices from a seed


# Keys of the devices used last, kept: deriving a P-256 key costs ~30 µs, twice per session (its
# TEEP and SUIT-report keys), 3-4 % of a simulated device's CPU. Bounded, so that memory follows the
# devices in flight, not the fleet's size.
KEY_CACHE = 4096


@functools.lru_cache(maxsize=KEY_CACHE)
def derive_key(seed: bytes, label: str, alg: int) -> SigningKey:
    """A signing key that is a pure function of (seed, label): the same device on every call."""
    digest = hashlib.sha256(seed + b"\x00" + label.encode()).digest()
    if alg in P256_ALGS:
        scalar = int.from_bytes(digest, "big") % (_P256_ORDER - 1) + 1
        return SigningKey(ec.derive_private_key(scalar, ec.SECP256R1()), alg=alg)
    return SigningKey(ed25519.Ed25519PrivateKey.from_private_bytes(digest), alg=alg)


def _suit_profiles(alg: int) -> tuple[SuitCoseProfile, ...]:
    if alg == ALG_ED25519 or alg not in P256_ALGS:
        return (PROFILE_ED25519_A128CTR, PROFILE_ED25519_CHACHA_POLY)
    return (PROFILE_ESP256_A128CTR, PROFILE_ESP256_A128GCM)


@dataclass(frozen=True)
class Fleet:
    """`size` simulated devices; device i is derived from (seed, i) and costs nothing until used."""

    size: int
    tam_key: VerifyingKey
    seed: bytes = DEFAULT_SEED
    alg: int = alg_id("esp256")
    trust: TrustStore = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.size < 1:
            raise ValueError("a fleet has at least one device")
        # One read-only trust store (the TAM's key) shared by every Agent: the engine only reads it.
        object.__setattr__(self, "trust", TrustStore((self.tam_key,)))

    def name(self, i: int) -> str:
        return f"dev-{i:05d}"

    def device_key(self, i: int) -> SigningKey:
        return derive_key(self.seed, f"{i}/teep", self.alg)

    def report_key(self, i: int) -> SigningKey:
        return derive_key(self.seed, f"{i}/suit-report", self.alg)

    def config(self, key: SigningKey) -> AgentConfig:
        """What `AgentState.init` would write for this key (same vendor and class for all)."""
        return AgentConfig(
            vendor_id=uuid.uuid5(uuid.NAMESPACE_DNS, "teep-coap.example").bytes,
            class_id=uuid.uuid5(uuid.NAMESPACE_DNS, "sim-tee.teep-coap.example").bytes,
            ueid=b"\x01" + key.kid[:16],
            suit_cose_profiles=_suit_profiles(key.alg),
        )

    def registration(self, i: int, *, psk_identity: bool = True) -> NewDevice:
        """The TAM's row for device i (PSK identity = its name, as `provision_devices` names it)."""
        key = self.device_key(i).public
        name = self.name(i)
        return NewDevice(key.kid, key.alg, key.to_pem(), name, name if psk_identity else None)

    def registrations(self) -> Iterator[NewDevice]:
        return (self.registration(i) for i in range(self.size))

    def state(self, i: int) -> MemoryAgentState:
        key = self.device_key(i)
        return MemoryAgentState(
            root=Path(self.name(i)),
            config=self.config(key),
            key=key,
            report_key=self.report_key(i),
            trust=self.trust,
            tc_trust=self.trust,
            components=MemoryComponents(),
            broker=BrokerState(),
        )

    def engine(self, i: int) -> AgentEngine:
        return AgentEngine(self.state(i))


# ---------------------------------------------------------------------------- the world and the drive


@dataclass
class FleetWorld:
    """A TAM folder with the fleet registered, and where each device's transport files are (if any)."""

    tam_dir: Path
    fleet: Fleet
    cred_root: Path | None  # per-device credential folders (secure CoAP profiles), else None
    build_seconds: float = 0.0
    register_seconds: float = 0.0
    credentials_seconds: float = 0.0
    # device -> its transport.toml as read for its first session: a device keeps its keys in memory
    # between sessions; reading and parsing the file again each time cost the simulator ~0.1 ms per
    # session (at most one entry per device, --devices is at most 100,000)
    _credentials: dict[int, DeviceCredentials] = field(default_factory=dict, repr=False)

    def state_dir(self, i: int) -> Path | None:
        return None if self.cred_root is None else self.cred_root / self.fleet.name(i)

    def credentials(self, i: int) -> DeviceCredentials | None:
        """Device `i`'s transport credentials (None for profiles without device files), read from its
        folder the first time."""
        folder = self.state_dir(i)
        if folder is None:
            return None
        creds = self._credentials.get(i)
        if creds is None:
            creds = self._credentials[i] = load_agent_credentials(folder)
        return creds


def needs_device_files(profile_name: str) -> bool:
    """DTLS PSK, OSCORE and EDHOC need credentials on both sides; plain CoAP and HTTP(S) none."""
    profile = load_profile(profile_name)
    return profile.transport.is_coap and profile.security.mode != "none"


def make_fleet_world(
    tam_dir: Path,
    cred_root: Path,
    devices: int,
    image_size: int,
    profile_name: str,
    *,
    db: str | None = None,
    seed: bytes = DEFAULT_SEED,
) -> FleetWorld:
    """A TAM folder (or `db`) with `devices` devices registered in one transaction and one TC for all;
    credentials (TAM's `credentials.toml`, the devices' folders under `cred_root`) only if the
    profile needs them."""
    t0 = time.perf_counter()
    init_tam_dir(tam_dir, algs=("esp256",))
    config, store = load_tam_dir(tam_dir)
    if db is not None:
        store.close()
        store = TamStore(db)
    try:
        tam_key = config.keys[0]
        fleet = Fleet(devices, tam_key.public, seed)
        now = time.time()
        files = needs_device_files(profile_name)
        t1 = time.perf_counter()
        add_devices(store, fleet.registrations(), now)
        t2 = time.perf_counter()
        if files:
            provision_devices(tam_dir, [(fleet.name(i), cred_root / fleet.name(i)) for i in range(devices)])
        t3 = time.perf_counter()
        payload = bytes(i % 251 for i in range(image_size))
        offer_component(
            store, tam_key, fleet.config(fleet.device_key(0)), COMPONENT_ID, payload, now=now, name="bench"
        )
    finally:
        store.close()
    return FleetWorld(
        tam_dir, fleet, cred_root if files else None,
        build_seconds=time.perf_counter() - t0, register_seconds=t2 - t1, credentials_seconds=t3 - t2,
    )  # fmt: skip


# What a simulated device talks through. "lean": coaps-psk devices use the fleet's own light DTLS
# client (bench.lean_dtls: a simulated device then costs a third less CPU, so on a small machine the
# TAM is offered the load it can take), every other profile the Broker's client; "broker": the
# Broker's client for every device, to measure what a real Broker's stack costs.
DEVICE_CLIENTS = ("lean", "broker")


def used_client(profile: Profile, device_client: str) -> str:
    """The client `device_client` gives this profile's devices: "lean" only for DTLS-PSK ones."""
    return "lean" if device_client == "lean" and profile.security.mode == "dtls-psk" else "broker"


def _device_client(
    profile: Profile, uri: str, world: FleetWorld, index: int, certs: Path | None, device_client: str
) -> MessageClient:
    credentials = world.credentials(index)
    if used_client(profile, device_client) == "lean" and credentials is not None:
        return LeanDtlsClient(profile, uri, credentials)
    return make_client(
        profile, uri, state_dir=world.state_dir(index), certs_path=certs, credentials=credentials
    )


@dataclass
class SessionTally:
    """What a benchmark driver counts over its sessions: latencies of those that succeeded, why the
    others failed, handshake restarts; `progress` is told after each session."""

    total: int
    progress: Progress | None = None
    latencies: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    restarts: int = 0

    async def run(self, agent: Any, client: Any, uri: str, *, timeout: float, name: str) -> None:
        """One timed session of `agent` over `client` (closed after it), counted."""
        t0 = time.perf_counter()
        try:
            result = await run_session(agent, client, uri, timeout=timeout, max_rounds=8)
        finally:
            await client.close()
        self.restarts += getattr(client, "handshake_restarts", 0)
        if result.ok:
            self.latencies.append(time.perf_counter() - t0)
        else:
            self.failures.append(f"{name}: {result.reason}")
        if self.progress is not None:
            self.progress(len(self.latencies), len(self.failures), self.total)


@dataclass
class DriveResult:
    latencies: list[float]
    failures: list[str]
    seconds: float
    handshake_restarts: int
    agent_build_seconds: float  # wall time spent making devices' Agents (outside the latencies)
    peak_agents: int  # most device Agents alive at once


async def drive_fleet(
    profile_name: str,
    uri: str,
    world: FleetWorld,
    sessions: int,
    concurrency: int,
    certs: Path | None = None,
    progress: Progress | None = None,
    rate: float | None = None,
    *,
    offset: int = 0,
    stride: int = 1,
    device_client: str = "lean",
    start: int = 0,
) -> DriveResult:
    """Sessions number `start + offset`, `start + offset + stride`, … below `sessions`, `concurrency`
    at a time, device i % size for session i; each device's Agent is made just before its session
    (not timed) and dropped after it. `offset` and `stride` share one run between processes
    (`fleet_procs`); `start` skips the sessions of an earlier run (a warm-up on other devices).

    `rate`: session i starts no earlier than i / rate seconds after the first (and still only when
    one of the `concurrency` slots is free), so set-ups that differ in speed can be compared at the
    same offered load; a session's latency counts from its own start, not from when it was due.

    `device_client`: "lean" (coaps-psk devices use `LeanDtlsClient`, the others the Broker's client)
    or "broker" (every device the Broker's client), see DEVICE_CLIENTS."""
    if stride < 1 or not 0 <= offset < stride or start < 0:
        raise ValueError(
            f"start {start}, offset {offset}, stride {stride}: need 0 <= offset < stride, 0 <= start"
        )
    if device_client not in DEVICE_CLIENTS:
        raise ValueError(f"device client {device_client!r}: one of {', '.join(DEVICE_CLIENTS)}")
    profile = load_profile(profile_name)
    fleet = world.fleet
    numbers = range(start + offset, sessions, stride)
    tally = SessionTally(len(numbers), progress)
    build = 0.0
    alive = peak = 0
    next_session = 0

    async def worker() -> None:
        nonlocal build, alive, peak, next_session
        while next_session < len(numbers):
            number = numbers[next_session]
            index = number % fleet.size
            next_session += 1
            if rate is not None:
                wait = t0 + (number - start) / rate - time.perf_counter()
                if wait > 0:
                    await asyncio.sleep(wait)
            b0 = time.perf_counter()
            agent = fleet.engine(index)
            build += time.perf_counter() - b0
            alive += 1
            peak = max(peak, alive)
            client = _device_client(profile, uri, world, index, certs, device_client)
            timeout = profile.limits.request_timeout
            try:
                await tally.run(agent, client, uri, timeout=timeout, name=fleet.name(index))
            finally:
                alive -= 1
            del agent

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return DriveResult(tally.latencies, tally.failures, time.perf_counter() - t0, tally.restarts, build, peak)


__all__ = [
    "COMPONENT_ID",
    "DEFAULT_SEED",
    "DEVICE_CLIENTS",
    "KEY_CACHE",
    "DriveResult",
    "Fleet",
    "FleetWorld",
    "MemoryAgentState",
    "MemoryComponents",
    "Progress",
    "SessionTally",
    "derive_key",
    "drive_fleet",
    "make_fleet_world",
    "needs_device_files",
    "used_client",
]  # fmt: skip
