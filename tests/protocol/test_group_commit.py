"""Group commit: `TamEngine.handle_batch` runs several requests in one transaction (real SQLite file,
real keys), and `TamHandler` batches the requests that arrive together.

What must hold: every session of a batch completes as it would alone; the batch commits once; a
refused request is undone alone; a store failure fails the whole batch with nothing committed; the
`tam.committed.*` crash points are reached only after the commit."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import cbor2
import pytest

from teep_coap import crashpoints
from teep_coap.bench.sessions import make_world
from teep_coap.profiles.session import CommitDelayError, TamHandler, commit_delay_seconds
from teep_coap.protocol import tam as tam_module
from teep_coap.protocol.agent import AgentEngine
from teep_coap.protocol.broker import BrokerSession, Done, Send
from teep_coap.protocol.errors import InvalidMessage, TamFailure
from teep_coap.protocol.events import SessionEnded, reply_of
from teep_coap.protocol.records import StoreError
from teep_coap.protocol.tam import TamEngine, TamRequest
from teep_coap.security import cose
from teep_coap.store.agentdir import load_agent_state
from teep_coap.store.tam_db import TamStore
from teep_coap.store.tamdir import load_tam_dir
from teep_coap.transport.base import PeerInfo

DEVICES = 4


class World:
    def __init__(self, root: Path) -> None:
        bench = make_world(root / "tam", root / "agents", DEVICES, 64)
        self.tam_dir, self.agent_dirs = bench.tam_dir, bench.agent_dirs
        config, self.store = load_tam_dir(self.tam_dir)
        self.tam = TamEngine(config, self.store)

    def name(self, i: int) -> str:
        return f"dev-{i:05d}"

    def commits(self) -> list[str]:
        """The COMMITs SQLite runs on the engine's connection from now on (statement trace)."""
        seen: list[str] = []
        raw = self.store._connection().connection.dbapi_connection  # the store's own connection
        raw.set_trace_callback(lambda sql: seen.append(sql) if sql.strip().upper() == "COMMIT" else None)
        return seen


@pytest.fixture
def world(tmp_path: Path) -> World:
    return World(tmp_path)


def lockstep(world: World, devices: range, ended: list[SessionEnded] | None = None) -> list[BrokerSession]:
    """One session per device, all their requests of one round in one batch, until all are done;
    the SessionEnded events of the batches go to `ended`."""
    agents = [AgentEngine(load_agent_state(world.agent_dirs[i])) for i in devices]
    sessions = [BrokerSession(agent, "coaps://tam") for agent in agents]
    actions: list[Send | Done] = [s.start() for s in sessions]
    while any(isinstance(a, Send) for a in actions):
        live = [i for i, a in enumerate(actions) if isinstance(a, Send)]
        requests = [TamRequest(actions[i].payload, time.time(), world.name(devices[i])) for i in live]  # type: ignore[union-attr]
        outcomes = world.tam.handle_batch(requests)
        for i, outcome in zip(live, outcomes, strict=True):
            assert not isinstance(outcome, Exception), outcome
            if ended is not None:
                ended.extend(e for e in outcome if isinstance(e, SessionEnded))
            actions[i] = sessions[i].on_response(reply_of(outcome))
    return sessions


def test_a_batch_of_sessions_completes_and_commits_once_per_round(world: World) -> None:
    commits = world.commits()
    events: list[SessionEnded] = []
    sessions = lockstep(world, range(DEVICES), events)
    assert all(s.result is not None and s.result.ok for s in sessions), [s.result for s in sessions]
    assert len(commits) == 3  # connect, QueryResponse, Success: one batch of 4 each
    rows = [row for row in world.store.sessions() if row[4] is not None]
    assert len(rows) == DEVICES and {row[4] for row in rows} == {"success"}
    assert sorted(e.session_id for e in events) == sorted(row[0] for row in rows)


def test_a_refused_request_is_undone_alone(world: World) -> None:
    before = len(world.store.sessions())
    outcomes = world.tam.handle_batch(
        [
            TamRequest(b"", time.time(), world.name(0)),
            TamRequest(b"\xa1\x01\x02 not a TEEP message", time.time(), world.name(1)),
            TamRequest(b"", time.time(), world.name(2)),
        ]
    )
    assert isinstance(outcomes[1], InvalidMessage)
    assert reply_of(outcomes[0]) and reply_of(outcomes[2])  # type: ignore[arg-type]
    assert len(world.store.sessions()) == before + 2


def savepoints(world: World) -> list[str]:
    """The SAVEPOINT statements SQLite runs on the engine's connection from now on."""
    seen: list[str] = []
    raw = world.store._connection().connection.dbapi_connection
    raw.set_trace_callback(lambda sql: seen.append(sql) if sql.startswith("SAVEPOINT") else None)
    return seen


def test_a_batch_without_refusals_runs_without_savepoints(world: World) -> None:
    seen = savepoints(world)
    sessions = lockstep(world, range(DEVICES))
    assert all(s.result is not None and s.result.ok for s in sessions)
    assert seen == []  # one transaction per batch, nothing to undo alone


def test_after_a_refusal_batches_run_in_parts_for_a_while(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tam_module, "BATCHES_IN_PARTS_AFTER_REFUSAL", 2)
    seen = savepoints(world)
    connects = [TamRequest(b"", time.time(), world.name(i)) for i in range(2)]
    junk = TamRequest(b"\xa1\x01\x02 not a TEEP message", time.time(), world.name(3))
    outcomes = world.tam.handle_batch([*connects, junk])
    assert isinstance(outcomes[2], InvalidMessage) and len(seen) == 3  # tried at once, then in parts
    for expected in (2, 2, 0):  # the two batches after the refusal in parts, then at once again
        del seen[:]
        assert all(not isinstance(o, Exception) for o in world.tam.handle_batch(connects))
        assert len(seen) == expected


class PolicyWritingAuditRows:
    """A policy whose sync leaves a mark in the store (an audit row), loaded once as a file would be."""

    def __init__(self) -> None:
        self.loaded = False

    def reload_if_changed(self) -> bool:
        changed, self.loaded = not self.loaded, True
        return changed

    def sync(self, store: TamStore, now: float) -> None:
        store.audit(None, now, "policy-synced")


def test_a_policy_sync_rolled_back_with_a_refused_batch_is_done_again(world: World) -> None:
    world.tam.config.policy = PolicyWritingAuditRows()  # type: ignore[assignment]
    junk = TamRequest(b"\xa1\x01\x02 not a TEEP message", time.time(), world.name(3))
    outcomes = world.tam.handle_batch([TamRequest(b"", time.time(), world.name(0)), junk])
    assert reply_of(outcomes[0]) and isinstance(outcomes[1], InvalidMessage)  # type: ignore[arg-type]
    # the first try at once synced the policy and was rolled back; the run in parts synced it again
    assert [row[2] for row in world.store.audit_log()].count("policy-synced") == 1


class FailingSecondStart:
    """The TAM's store, whose second `start_session_for` fails as a lost database would."""

    def __init__(self, store: TamStore) -> None:
        self._store = store
        self._starts = 0

    def start_session_for(self, now: float, tid: str) -> Any:
        self._starts += 1
        if self._starts == 2:
            raise StoreError("the database went away")
        return self._store.start_session_for(now, tid)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


def test_a_store_failure_fails_the_whole_batch_and_commits_nothing(world: World) -> None:
    before = len(world.store.sessions())
    engine = TamEngine(world.tam.config, FailingSecondStart(world.store))  # type: ignore[arg-type]
    outcomes = engine.handle_batch([TamRequest(b"", time.time(), world.name(i)) for i in range(3)])
    assert all(isinstance(o, TamFailure) for o in outcomes), outcomes
    assert len(world.store.sessions()) == before
    # the next batch on the same store goes through
    again = world.tam.handle_batch([TamRequest(b"", time.time(), world.name(0))] * 2)
    assert all(not isinstance(o, Exception) for o in again)


def test_committed_points_are_reached_after_the_commit(world: World) -> None:
    before = len(world.store.sessions())
    with crashpoints.simulate("tam.received.connect"), pytest.raises(crashpoints.SimulatedCrash):
        world.tam.handle_batch([TamRequest(b"", time.time(), world.name(i)) for i in range(2)])
    assert len(world.store.sessions()) == before  # died before anything was committed
    with crashpoints.simulate("tam.committed.connect"), pytest.raises(crashpoints.SimulatedCrash):
        world.tam.handle_batch([TamRequest(b"", time.time(), world.name(i)) for i in range(2)])
    reopened = TamStore(world.store.url)  # what a restarted process finds
    try:
        assert len(reopened.sessions()) == before + 2  # both were committed before the point
    finally:
        reopened.close()


@pytest.mark.parametrize("threads", [0, 2])
async def test_the_handler_batches_requests_that_arrive_together(world: World, threads: int) -> None:
    handler = TamHandler(world.tam, threads=threads)
    try:
        peers = [PeerInfo("coaps", f"127.0.0.1:{5000 + i}", world.name(i % DEVICES), True) for i in range(8)]
        answers = await asyncio.wait_for(asyncio.gather(*(handler(b"", p) for p in peers)), 30)
    finally:
        handler.close()
    assert len(set(answers)) == 8 and all(answers)  # each its own QueryRequest
    assert handler.engine_calls == 8
    assert 1 <= handler.batches < 8  # all in one batch on the loop; a few on threads


async def test_without_group_commit_each_request_is_its_own_call(world: World) -> None:
    handler = TamHandler(world.tam, threads=0, group_commit=False)
    peers = [PeerInfo("coaps", f"127.0.0.1:{5000 + i}", world.name(i), True) for i in range(3)]
    answers = await asyncio.gather(*(handler(b"", p) for p in peers))
    assert all(answers) and handler.engine_calls == 3 and handler.batches == 0


async def test_a_request_queued_as_the_last_batch_ends_is_answered(world: World) -> None:
    """B queues in the turn of the loop in which the flusher that took A finds the queue empty, and
    before that flusher's task is reported done: B must start a flusher of its own."""
    handler = TamHandler(world.tam, threads=0)
    peer = PeerInfo("coaps", "127.0.0.1:5000", world.name(0), True)
    first = asyncio.ensure_future(handler(b"", peer))
    await asyncio.sleep(0)  # A's step ran (it queued A and scheduled the flusher); this resumes before it
    second = asyncio.ensure_future(handler(b"", peer))  # its step runs right after the flusher's
    answers = await asyncio.wait_for(asyncio.gather(first, second), 10)
    assert all(answers) and handler.batches == 2


class BrokenOnce:
    """The engine, whose first batch fails with a bug (not a TeepCoapError)."""

    def __init__(self, tam: TamEngine) -> None:
        self._tam, self.failed = tam, False

    def handle_batch(self, requests: list[TamRequest]) -> Any:
        if not self.failed:
            self.failed = True
            raise RuntimeError("a bug in the engine")
        return self._tam.handle_batch(requests)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._tam, name)


async def test_a_bug_in_a_batch_reaches_each_of_its_requests_and_serving_goes_on(world: World) -> None:
    handler = TamHandler(BrokenOnce(world.tam), threads=0)
    peers = [PeerInfo("coaps", f"127.0.0.1:{5000 + i}", world.name(i), True) for i in range(3)]
    calls = asyncio.gather(*(handler(b"", p) for p in peers), return_exceptions=True)
    first = await asyncio.wait_for(calls, 10)
    assert [type(r) for r in first] == [RuntimeError] * 3
    again = await asyncio.wait_for(asyncio.gather(*(handler(b"", p) for p in peers)), 10)
    assert all(again) and handler.batches == 1


# ---------------------------------------------------------------------------- commit delay


def peers_for(world: World, count: int, base: int = 5000) -> list[PeerInfo]:
    return [PeerInfo("coaps", f"127.0.0.1:{base + i}", world.name(i % DEVICES), True) for i in range(count)]


async def test_a_lone_request_never_waits_for_the_commit_delay(world: World) -> None:
    handler = TamHandler(world.tam, threads=0, commit_delay=30.0)
    for peer in peers_for(world, 3):  # one after the other: never another request about
        assert await asyncio.wait_for(handler(b"", peer), 10)
    assert handler.delayed == 0 and handler.batches == 3


@pytest.mark.parametrize(("delay", "batches"), [(0.0, 2), (1.0, 1)])
async def test_requests_arriving_apart_share_a_commit_after_the_delay(
    world: World, delay: float, batches: int
) -> None:
    handler = TamHandler(world.tam, threads=0, commit_delay=delay)
    early, late = peers_for(world, 2), peers_for(world, 3, base=6000)
    first = [asyncio.ensure_future(handler(b"", p)) for p in early]  # two together: others are about
    await asyncio.sleep(0.05)  # within the delay (1 s), well after the first batch without one
    second = [asyncio.ensure_future(handler(b"", p)) for p in late]
    answers = await asyncio.wait_for(asyncio.gather(*first, *second), 30)
    assert len(set(answers)) == 5 and all(answers)
    assert handler.batches == batches and handler.delayed == (1 if delay else 0)


async def test_a_queue_full_enough_goes_at_once(world: World) -> None:
    handler = TamHandler(world.tam, threads=0, commit_delay=30.0)
    answers = await asyncio.wait_for(asyncio.gather(*(handler(b"", p) for p in peers_for(world, 8))), 10)
    assert all(answers) and handler.delayed == 0 and handler.batches == 1


async def test_requests_waiting_for_the_delay_end_when_the_server_stops(world: World) -> None:
    handler = TamHandler(world.tam, threads=0, commit_delay=30.0)
    calls = [asyncio.ensure_future(handler(b"", p)) for p in peers_for(world, 2)]
    await asyncio.sleep(0.01)
    assert handler.delayed == 1
    for flusher in list(handler._flush_tasks):
        flusher.cancel()
    results = await asyncio.wait_for(asyncio.gather(*calls, return_exceptions=True), 5)
    assert all(isinstance(r, asyncio.CancelledError) for r in results)
    assert world.store.sessions() == []  # nothing handed over, nothing stored


@pytest.mark.parametrize(("value", "seconds"), [("", 0.002), ("0", 0.0), ("2.5", 0.0025), ("100", 0.1)])
def test_commit_delay_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, value: str, seconds: float
) -> None:
    monkeypatch.setenv("TEEP_COAP_COMMIT_DELAY_MS", value)
    assert commit_delay_seconds() == pytest.approx(seconds)


@pytest.mark.parametrize("value", ["abc", "-1", "101", "nan", "inf", "2ms"])
def test_a_bad_commit_delay_is_refused_with_what_to_give(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("TEEP_COAP_COMMIT_DELAY_MS", value)
    with pytest.raises(CommitDelayError, match="milliseconds from 0"):
        commit_delay_seconds()


def test_a_signed_refusal_in_a_batch_run_twice_is_audited_once(world: World) -> None:
    """The first run of a batch (at once) is rolled back and skips the refusal's audit; the run in
    parts audits it: one `refused` row, as with a request alone."""
    [query] = world.tam.handle_batch([TamRequest(b"", time.time(), world.name(0))])
    # a registered device signs a message a TAM does not take (the QueryRequest it was sent)
    sent = reply_of(query)  # type: ignore[arg-type]
    assert sent is not None
    misdirected = cose.sign1(cbor2.loads(sent).value[2], load_agent_state(world.agent_dirs[0]).key)
    refused_before = [row[2] for row in world.store.audit_log()].count("refused")
    outcomes = world.tam.handle_batch(
        [TamRequest(b"", time.time(), world.name(1)), TamRequest(misdirected, time.time(), world.name(0))]
    )
    assert reply_of(outcomes[0])  # type: ignore[arg-type]
    assert isinstance(outcomes[1], InvalidMessage) and "does not accept" in str(outcomes[1])
    assert [row[2] for row in world.store.audit_log()].count("refused") == refused_before + 1
