"""The engines run on any implementation of their ports: whole sessions on the in-memory fakes give the
same outcomes as on SQLite and disk, and the real stores satisfy the ports (mypy checks the typed
assignments below)."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from teep_coap.protocol.agent import AgentEngine
from teep_coap.protocol.agentstate import AgentState
from teep_coap.protocol.broker import in_memory_post, run_in_memory
from teep_coap.protocol.ports import AgentComponents, TamRepository
from teep_coap.protocol.records import StoreError
from teep_coap.protocol.tam import TamConfig, TamEngine
from teep_coap.security.suit import build_envelope
from teep_coap.store.agentdir import open_component_store
from teep_coap.store.memory_components import MemoryComponents
from teep_coap.store.tam_db import TamStore

from .conftest import TAM_URI, FakeClock, MakeWorld, cid, key
from .fakes import MemoryTamRepository


def test_real_stores_satisfy_the_ports(tmp_path: Path) -> None:
    repo: TamRepository = TamStore(f"sqlite:///{tmp_path / 'tam.sqlite'}")
    components: AgentComponents = open_component_store(tmp_path / "components")
    fake_repo: TamRepository = MemoryTamRepository()
    fake_components: AgentComponents = MemoryComponents()
    assert repo.latest_components() == fake_repo.latest_components() == []
    assert list(components.list()) == list(fake_components.list()) == []


_NO_CHALLENGE = {"challenge": None, "now": 1.0, "lifetime": 5.0, "cap": 4}


def test_memory_repository_savepoint_undoes_its_part_alone() -> None:
    repo = MemoryTamRepository()
    with repo.atomic():
        kept = repo.start_session(1.0, device_id=None, transport_identity="kept")
        with pytest.raises(StoreError), repo.savepoint():
            repo.start_session(2.0, device_id=None, transport_identity="undone")
            raise StoreError("refused")
    assert list(repo.sessions) == [kept]


def test_memory_repository_atomic_rolls_back() -> None:
    """The fake keeps the one contract the engine leans on hardest: a failed atomic block leaves nothing."""
    repo = MemoryTamRepository()
    with pytest.raises(StoreError), repo.atomic():
        sid = repo.start_session(1.0, device_id=None, transport_identity="psk:a")
        repo.add_outstanding(
            session_id=sid,
            device_id=None,
            kind="query",
            token=b"t",
            challenge=None,
            now=1.0,
            lifetime=5,
            cap=4,
        )
        repo.add_outstanding(
            session_id=sid,
            device_id=None,
            kind="query",
            token=b"t",
            challenge=None,
            now=1.0,
            lifetime=5,
            cap=4,
        )
    assert repo.sessions == {} and repo.outstanding == {} and repo.audit_rows == []


def _memory_pair(tmp_path: Path) -> tuple[TamEngine, MemoryTamRepository, AgentEngine, MemoryComponents]:
    clock = FakeClock()
    rng = random.Random(7).randbytes
    tam_es, tam_ed = key("tam-es"), key("tam-ed", "ed25519")
    agent_key = key("agent-esp256")
    components = MemoryComponents()
    state = AgentState.init(
        tmp_path / "agent", tam_es.public, "esp256", tam_uri=TAM_URI, tc_signer_keys=[tam_es.public],
        key=agent_key, open_components=lambda _folder: components,
    )  # fmt: skip
    repo = MemoryTamRepository()
    repo.add_device(kid=agent_key.kid, alg=agent_key.alg, public_key=agent_key.public.to_pem(), now=clock())
    for seq in (1, 2):
        envelope = build_envelope(
            f"image {seq}".encode(), key=tam_es, component_id=cid(1), sequence_number=seq,
            vendor_id=state.config.vendor_id, class_id=state.config.class_id,
        )  # fmt: skip
        repo.add_component(
            component_id=cid(1), sequence_number=seq, envelope=envelope, now=clock(), audience="all"
        )
    tam = TamEngine(TamConfig(keys=(tam_es, tam_ed)), repo, clock=clock, rng=rng)
    return tam, repo, AgentEngine(state, clock=clock, rng=rng), components


def test_sessions_on_the_memory_ports(tmp_path: Path, make_world: MakeWorld) -> None:
    tam, repo, agent, components = _memory_pair(tmp_path)
    first = run_in_memory(agent, TAM_URI, in_memory_post(tam, None))
    second = run_in_memory(agent, TAM_URI, in_memory_post(tam, None))
    assert first.result is not None and first.result.ok and second.result is not None and second.result.ok
    # the newest version landed in the fake component store, and the TAM's fake repository knows it
    assert {e.component_id: e.sequence_number for e in components.list()} == {cid(1): 2}
    assert components.image(cid(1)) == b"image 2"
    device = next(iter(repo.devices.values()))
    assert {c.component_id: c.installed_seq for c in repo.device_components(device.id)} == {cid(1): 2}
    outcomes = [s[3] for s in repo.sessions.values()]
    # the same two sessions against SQLite and the on-disk store end the same way
    world = make_world()
    world.publish(1, seq=1)
    world.publish(1, seq=2)
    sql_first, sql_second = world.session(), world.session()
    assert (first.rounds, second.rounds) == (sql_first.rounds, sql_second.rounds)
    assert outcomes == world.outcomes() == ["success", "up-to-date"]
    assert world.installed() == {cid(1): 2}
