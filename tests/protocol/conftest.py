"""A TAM and an Agent wired together in memory: real keys, real signatures, real SQLite, real disk."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from teep_coap.encoding.cbor_codec import decode
from teep_coap.model.teep import TeepMessage
from teep_coap.protocol.agent import AgentEngine
from teep_coap.protocol.agentstate import AgentState
from teep_coap.protocol.broker import BrokerSession, in_memory_post, run_in_memory
from teep_coap.protocol.tam import TamConfig, TamEngine
from teep_coap.security import cose
from teep_coap.security.keys import SigningKey, generate_key
from teep_coap.security.suit import build_envelope
from teep_coap.store.agentdir import init_agent_state
from teep_coap.store.tam_db import Device, TamStore

T0 = 1_800_000_000.0
TAM_URI = "coap://tam.example/tam"

# Keys are slow-ish to make and do not need to differ between tests: one set per test session.
_KEYS: dict[str, SigningKey] = {}


def key(name: str, alg: str = "esp256") -> SigningKey:
    if name not in _KEYS:
        _KEYS[name] = generate_key(alg)
    return _KEYS[name]


def cid(n: int) -> tuple[bytes, ...]:
    return (b"TEEP-Device", b"SecureFS", bytes([n]) * 16, b"ta")


class FakeClock:
    def __init__(self, t: float = T0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


def payload_of(data: bytes) -> TeepMessage:
    """The TEEP message inside signed bytes (no verification: for assertions only)."""
    return decode(bytes(cose.inspect(data).payload or b""))


@dataclass
class World:
    tmp: Path
    clock: FakeClock
    rng: Callable[[int], bytes]
    tam_es: SigningKey
    tam_ed: SigningKey
    store: TamStore
    tam: TamEngine
    state: AgentState
    agent: AgentEngine
    device: Device

    def envelope(
        self, n: int, seq: int, payload: bytes = b"TA image", signer: SigningKey | None = None
    ) -> bytes:
        return build_envelope(
            payload,
            key=signer or self.tam_es,
            component_id=cid(n),
            sequence_number=seq,
            vendor_id=self.state.config.vendor_id,
            class_id=self.state.config.class_id,
        )

    def publish(self, n: int, seq: int, audience: str = "all", payload: bytes = b"TA image") -> bytes:
        env = self.envelope(n, seq, payload)
        self.store.add_component(
            component_id=cid(n),
            sequence_number=seq,
            envelope=env,
            now=self.clock(),
            name=f"tc{n}",
            audience=audience,
        )
        return env

    def session(self, transport_identity: str | None = None) -> BrokerSession:
        return run_in_memory(self.agent, TAM_URI, in_memory_post(self.tam, transport_identity))

    def tam_state(self) -> dict[str, Any]:
        snap = self.store.snapshot()
        snap.pop("audit")
        return snap

    def agent_state(self) -> tuple[Any, ...]:
        root = self.state.root
        files = sorted(
            (str(p.relative_to(root)), p.read_bytes())
            for p in root.rglob("*")
            if p.is_file() and p.name[0] != "."
        )
        return tuple(files)

    def installed(self) -> dict[tuple[bytes, ...], int]:
        return {e.component_id: e.sequence_number for e in self.state.components.list()}

    def tam_installed(self) -> dict[tuple[bytes, ...], int | None]:
        return {c.component_id: c.installed_seq for c in self.store.device_components(self.device.id)}

    def outcomes(self) -> list[str | None]:
        return [s[4] for s in self.store.sessions()]


MakeWorld = Callable[..., World]


@pytest.fixture
def make_world(tmp_path: Path) -> MakeWorld:
    counter = [0]

    def make(
        *,
        agent_alg: str = "esp256",
        agent_attestation: str = "background-check",
        tam_attestation: str = "background-check",
        tam_keys: tuple[str, ...] = ("esp256", "ed25519"),
        psk_identity: str | None = None,
        seed: int = 7,
        **tam_kw: Any,
    ) -> World:
        counter[0] += 1
        base = tmp_path / f"w{counter[0]}"
        clock = FakeClock()
        rng = random.Random(seed).randbytes
        tam_es, tam_ed = key("tam-es"), key("tam-ed", "ed25519")
        trusted = tam_es if agent_alg == "esp256" else tam_ed
        agent_key = key(f"agent-{agent_alg}", agent_alg)
        state = init_agent_state(
            base / "agent", trusted.public, agent_alg, attestation=agent_attestation, tam_uri=TAM_URI,
            tc_signer_keys=[tam_es.public], key=agent_key,
        )  # fmt: skip
        agent = AgentEngine(state, clock=clock, rng=rng)
        store = TamStore(f"sqlite:///{base / 'tam.sqlite'}")
        device = store.add_device(
            kid=agent_key.kid, alg=agent_key.alg, public_key=agent_key.public.to_pem(), now=clock(),
            psk_identity=psk_identity,
        )  # fmt: skip
        keys = tuple({"esp256": tam_es, "ed25519": tam_ed}[k] for k in tam_keys)
        if tam_attestation == "passport" and state.verifier_key is not None:
            tam_kw.setdefault("verifier_keys", (state.verifier_key.public,))
        config = TamConfig(keys=keys, attestation=tam_attestation, **tam_kw)
        tam = TamEngine(config, store, clock=clock, rng=rng)
        return World(base, clock, rng, tam_es, tam_ed, store, tam, state, agent, device)

    return make


@pytest.fixture
def world(make_world: MakeWorld) -> World:
    return make_world()
