"""Retention driven by the engine's housekeeping timer (`TamConfig.keep_history`, `keep-history` in
tam.toml): old history goes one bounded batch per timer call, a backlog is worked off at PRUNE_AGAIN
intervals, nothing is pruned without the setting, and a TAM whose history was pruned still serves
its devices (it keeps what they have). Real engines, real signatures, real SQLite, and a real CoAP
server on loopback for the last test."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import pytest

from teep_coap.profiles import load_profile
from teep_coap.profiles.scenario import COMPONENT_ID, teep_world
from teep_coap.profiles.session import TamHandler, run_until_done
from teep_coap.profiles.stack import make_client, make_server
from teep_coap.protocol import tam as tam_module
from teep_coap.protocol.agent import AgentEngine
from teep_coap.protocol.errors import ConfigError, TamFailure
from teep_coap.protocol.events import SessionEnded
from teep_coap.protocol.records import StoreError
from teep_coap.protocol.retention import PRUNE_AGAIN, PruneCounts
from teep_coap.protocol.tam import EXPIRE_EVERY, TamConfig, TamEngine
from teep_coap.store.tam_db import TamStore
from teep_coap.store.tamdir import CONFIG_FILE, init_tam_dir, load_tam_dir

from .conftest import FakeClock, MakeWorld, cid, key
from .fakes import MemoryTamRepository

DAY = 86400.0


def _old_sessions(store: TamStore, count: int, at: float) -> list[int]:
    """`count` ended sessions from `at` on, one second apart, each with one more audit row."""
    ids = []
    for i in range(count):
        sid = store.start_session(at + i, device_id=None, transport_identity=None)
        store.audit(sid, at + i, "something")
        store.end_session(sid, at + i + 1, "success")
        ids.append(sid)
    return ids


def test_the_timer_prunes_old_history_and_the_tam_still_serves(make_world: MakeWorld) -> None:
    w = make_world(tam_attestation="none", keep_history=7 * DAY)
    w.publish(1, seq=1)
    first = w.session()
    assert first.result is not None and first.result.ok and w.installed() == {cid(1): 1}
    assert w.outcomes() == ["success"]
    w.clock.advance(8 * DAY)  # the session ended 8 days ago; its requests expired long before
    assert w.tam.next_timer() <= w.clock()
    assert w.tam.handle_timer(w.clock()) == ()
    assert w.store.sessions() == [] and w.store.audit_log() == [] and w.store.outstanding() == []
    assert w.tam_installed() == {cid(1): 1}  # what the device has is not history: it stays
    again = w.session()
    assert again.result is not None and again.result.ok
    assert w.outcomes() == ["up-to-date"]  # the TAM still knows the device has the component
    assert w.installed() == {cid(1): 1}


def test_one_batch_per_call_and_a_backlog_at_prune_again_pace(
    make_world: MakeWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tam_module, "PRUNE_BATCH", 2)
    w = make_world(tam_attestation="none", keep_history=DAY)
    now = w.clock()
    _old_sessions(w.store, 5, now - 10 * DAY)
    recent = _old_sessions(w.store, 1, now - DAY / 2)
    left = [len(w.store.sessions())]
    for step in range(3):
        w.tam.handle_timer(now + step * PRUNE_AGAIN)
        left.append(len(w.store.sessions()))
    assert left == [6, 4, 2, 1]  # 2, 2, then the last old one: never more than a batch per call
    assert [s[0] for s in w.store.sessions()] == recent
    # the third batch was not full: the next prune waits for the next sweep
    assert w.tam.next_timer() == now + EXPIRE_EVERY
    before = w.store.snapshot()
    w.tam.handle_timer(now + 2 * PRUNE_AGAIN + 0.5)  # nothing due: nothing runs
    assert w.store.snapshot() == before


def test_a_full_batch_brings_the_next_timer_forward(
    make_world: MakeWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tam_module, "PRUNE_BATCH", 2)
    w = make_world(tam_attestation="none", keep_history=DAY)
    now = w.clock()
    _old_sessions(w.store, 3, now - 10 * DAY)
    w.tam.handle_timer(now)
    assert w.tam.next_timer() == now + PRUNE_AGAIN


def test_without_keep_history_nothing_is_pruned(make_world: MakeWorld) -> None:
    w = make_world(tam_attestation="none")
    now = w.clock()
    _old_sessions(w.store, 3, now - 1000 * DAY)
    w.store.audit(None, now - 1000 * DAY, "refused", "old")
    before = w.store.snapshot()
    w.tam.handle_timer(now)
    assert w.store.snapshot() == before
    assert w.tam.next_timer() == now + EXPIRE_EVERY


class _FailingPrune(MemoryTamRepository):
    def prune_history(self, cutoff: float, limit: int) -> PruneCounts:
        raise StoreError("disk full")


def test_a_failed_prune_is_logged_and_the_sweep_still_reports(caplog: pytest.LogCaptureFixture) -> None:
    """Pruning is upkeep: its failure must not swallow the abandoned sessions the sweep committed."""
    store = _FailingPrune()
    clock = FakeClock()
    tam = TamEngine(TamConfig(keys=(key("tam-es"),), keep_history=DAY), store, clock=clock)
    tam.handle_connect(clock())  # a session whose request nobody answers
    later = clock() + 2 * DAY
    with caplog.at_level(logging.WARNING, logger="teep_coap.protocol.tam"):
        events = tam.handle_timer(later)
    (ended,) = events
    assert isinstance(ended, SessionEnded) and ended.outcome == "abandoned"
    assert "pruning old TAM history failed" in caplog.text and "disk full" in caplog.text
    assert tam.next_timer() == later + EXPIRE_EVERY  # tried again at the next sweep


def test_keep_history_must_be_positive() -> None:
    with pytest.raises(TamFailure, match="keep_history"):
        TamConfig(keys=(key("tam-es"),), keep_history=0)


def _set_keep_history(folder: Path, line: str) -> None:
    path = folder / CONFIG_FILE
    path.write_text(path.read_text() + line + "\n")


def test_keep_history_in_tam_toml(tmp_path: Path) -> None:
    init_tam_dir(tmp_path / "tam", algs=("esp256",))
    config, store = load_tam_dir(tmp_path / "tam")
    store.close()
    assert config.keep_history is None  # `tam init` writes the setting commented out: keep everything
    assert '# keep-history = "90d"' in (tmp_path / "tam" / CONFIG_FILE).read_text()
    _set_keep_history(tmp_path / "tam", 'keep-history = "90d"')
    config, store = load_tam_dir(tmp_path / "tam")
    store.close()
    assert config.keep_history == 90 * DAY


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("90", "has no unit"),
        ('"90"', "has no unit"),
        ('"ninety days"', "is not a duration"),
        ('"0h"', "above zero"),
    ],
)
def test_a_bad_keep_history_names_the_file_and_key(tmp_path: Path, value: str, says: str) -> None:
    init_tam_dir(tmp_path / "tam", algs=("esp256",))
    _set_keep_history(tmp_path / "tam", f"keep-history = {value}")
    with pytest.raises(ConfigError, match=says) as caught:
        load_tam_dir(tmp_path / "tam")
    assert f"{CONFIG_FILE}: keep-history" in str(caught.value)


@pytest.mark.timeout(120)
async def test_a_coap_server_prunes_on_its_timer_and_serves_on(tmp_path: Path) -> None:
    """`tam serve`'s handler over real UDP on loopback: the request that finds the prune due runs
    it first, then its session, which still finds the device up to date."""
    profile = load_profile("coap")
    profile = dataclasses.replace(profile, limits=dataclasses.replace(profile.limits, request_timeout=10.0))
    world = teep_world(profile, tmp_path, 200)
    clock = FakeClock(world.tam.clock())
    tam = TamEngine(
        dataclasses.replace(world.tam.config, keep_history=7 * DAY),
        world.tam.store,
        clock=clock,
        wire=world.tam.wire,
    )
    agent = AgentEngine(world.agent.state, clock=clock, wire=world.agent.wire)
    handler = TamHandler(tam)
    server = make_server(profile, handler, tam_dir=world.tam_dir)
    store = world.tam.store
    async with server:
        client = make_client(profile, server.uri, state_dir=world.agent_dir)
        try:
            report = await run_until_done(agent, client, server.uri, timeout=10.0)
            assert report.ok and report.installed == [(COMPONENT_ID, 1)]
            assert len(store.sessions()) == 2  # the install, then one that finds nothing to do
            pruned_before = clock() + 1
            clock.advance(8 * DAY)
            report = await run_until_done(agent, client, server.uri, timeout=10.0)
        finally:
            await client.close()
    assert report.ok and len(report.sessions) == 1
    sessions = store.sessions()
    # (SQLite may give the new session an id of a pruned one: it reuses the highest rowid + 1)
    assert len(sessions) == 1 and sessions[0][2] > pruned_before and sessions[0][4] == "up-to-date"
    assert {a[0] for a in store.audit_log()} == {sessions[0][0]}
    (device,) = store.devices()
    assert [c.installed_seq for c in store.device_components(device.id)] == [1]
    store.close()
