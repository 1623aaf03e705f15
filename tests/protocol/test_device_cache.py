"""The TAM engine keeps the devices it read by kid (real SQLite store, real keys): a device's messages
after its first cost no device look-up, an unknown kid is looked up every time and never kept, and the
cache is bounded."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from teep_coap.bench.sessions import make_world
from teep_coap.protocol import tam as tam_module
from teep_coap.protocol.agent import AgentEngine
from teep_coap.protocol.broker import in_memory_post, run_in_memory
from teep_coap.protocol.errors import InvalidMessage
from teep_coap.protocol.tam import TamEngine, TamRequest
from teep_coap.security import cose
from teep_coap.security.keys import generate_key
from teep_coap.store.agentdir import load_agent_state
from teep_coap.store.tam_db import TamStore
from teep_coap.store.tamdir import load_tam_dir


class Counting:
    """The TAM's store, counting `device_by_kid` calls."""

    def __init__(self, store: TamStore) -> None:
        self._store = store
        self.by_kid = 0

    def device_by_kid(self, kid: bytes) -> Any:
        self.by_kid += 1
        return self._store.device_by_kid(kid)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


def _engine(tmp_path: Path, devices: int) -> tuple[TamEngine, Counting, list[Path]]:
    world = make_world(tmp_path / "tam", tmp_path / "agents", devices, 64)
    config, store = load_tam_dir(world.tam_dir)
    counting = Counting(store)
    return TamEngine(config, counting), counting, world.agent_dirs  # type: ignore[arg-type]


def _session(engine: TamEngine, agent_dir: Path, identity: str | None) -> None:
    agent = AgentEngine(load_agent_state(agent_dir))
    done = run_in_memory(agent, "coap://tam", in_memory_post(engine, identity))
    assert done.result is not None and done.result.ok, done.result


def test_a_psk_device_is_read_by_its_connect_only(tmp_path: Path) -> None:
    engine, store, agents = _engine(tmp_path, 1)
    _session(engine, agents[0], "dev-00000")  # connect (reads the device), QueryResponse, Success
    _session(engine, agents[0], "dev-00000")
    assert store.by_kid == 0


def test_a_device_without_transport_identity_is_looked_up_once(tmp_path: Path) -> None:
    engine, store, agents = _engine(tmp_path, 1)
    _session(engine, agents[0], None)
    _session(engine, agents[0], None)
    assert store.by_kid == 1  # the first QueryResponse


def test_unknown_kids_are_looked_up_each_time_and_never_kept(tmp_path: Path) -> None:
    engine, store, _ = _engine(tmp_path, 1)
    for _ in range(3):
        stranger = generate_key("esp256")
        junk = cose.sign1(b"\x81\x01", stranger)  # a signed message from a key nobody registered
        (outcome,) = engine.handle_batch([TamRequest(junk, time.time(), None)])
        assert isinstance(outcome, InvalidMessage) and "unknown signer" in str(outcome)
    assert store.by_kid == 3 and len(engine._devices) == 0


def test_the_cache_is_bounded(tmp_path: Path, monkeypatch: Any) -> None:
    monkeypatch.setattr(tam_module, "KEY_CACHE_SIZE", 2)
    engine, store, agents = _engine(tmp_path, 3)
    for agent_dir in agents:
        _session(engine, agent_dir, None)
    assert len(engine._devices) == 2
    _session(engine, agents[0], None)  # the oldest was let go: read again
    assert store.by_kid == 4


def test_a_returning_device_is_kept_without_its_attested_claims(tmp_path: Path) -> None:
    """A device that attested has its claims in its row (a parsed JSON tree of a few KiB); the engine
    never reads them from the cache, and 4,096 such devices made a TAM ~15 MiB heavier."""
    engine, store, agents = _engine(tmp_path, 1)
    _session(engine, agents[0], None)
    kid = store.devices()[0].kid
    engine._devices = type(engine._devices)(tam_module.KEY_CACHE_SIZE)  # forget it, as an LRU would
    _session(engine, agents[0], None)  # read again: now with the claims of the first session
    assert store.device_by_kid(kid).attested_claims  # the row has them
    _, cached = engine._devices.get(kid)
    assert cached is not None and cached.kid == kid and cached.public_key
    assert cached.attested_claims is None and cached.last_contact is None
