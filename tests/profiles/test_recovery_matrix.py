"""Systematic loss and crash points of an install, an update and a delete session (in one process).

For every message of a session (connect, QueryRequest, QueryResponse, Update, Success, final answer)
one fault, once: (a) the message is lost, (b) the Agent dies at that point, (c) the TAM dies at that
point — plus the Agent dying at each step of its component-store commit. A death is a
`teep_coap.crashpoints` point reached inside the engine: what was committed (SQLite file, component
store index) stays, nothing else does, and the "restarted" process loads its state from disk. After
each fault the next `agent run` (the real `run_until_done`) must succeed, the device must hold the new
state (installed once: not re-installed when it already had it), and the TAM's record must match it.

The same cells run over real bindings (CoAP, DTLS-PSK, HTTP: real sockets through a loopback relay
that loses the chosen message); real processes killed for real: tests/profiles/test_recovery_processes.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from teep_coap import crashpoints
from teep_coap.profiles import Profile, load_profile
from teep_coap.profiles.scenario import COMPONENT_ID, teep_world
from teep_coap.profiles.session import RunReport, TamHandler, run_until_done
from teep_coap.profiles.stack import make_client, make_server
from teep_coap.protocol.agent import AgentEngine
from teep_coap.protocol.agentstate import AgentState
from teep_coap.protocol.tam import TamEngine
from teep_coap.protocol.tamdir import load_tam_dir
from teep_coap.transport.base import MessageClient, PeerInfo, Rejection, RequestRejected, TransportError
from teep_coap.transport.relay import DOWN, UP, UdpRelay
from teep_coap.transport.tcp_relay import C2S, S2C, TcpCountingRelay

pytestmark = [pytest.mark.recovery, pytest.mark.timeout(300)]

# The messages of one session, in order; the Agent POSTs the 1st, 3rd and 5th.
MESSAGES = ("connect", "query-request", "query-response", "update", "success", "final")
AGENT_DIES = {  # the Agent process dies ...
    "connect": "agent.received.query-request",  # ... after it sent connect, before the QueryRequest
    "query-request": "agent.answered.query-response",  # ... with its QueryResponse not yet sent
    "query-response": "agent.received.update",  # ... after the QueryResponse, before the Update
    "update": "store.index-written",  # ... inside the install, before its commit point
    "success": "agent.answered.success",  # ... with the Update applied, the Success not yet sent
    "final": "agent.received.final",  # ... as the TAM's last answer arrives
}
STORE_STEPS = ("store.blobs-written", "store.index-replaced", "store.garbage-collected")
TAM_DIES = {  # the TAM process dies ...
    "connect": "tam.received.connect",  # ... on connect, before doing anything
    "query-request": "tam.committed.connect",  # ... after committing the QueryRequest, before sending
    "query-response": "tam.received.query-response",  # ... before processing the QueryResponse
    "update": "tam.committed.query-response",  # ... after committing the Update, before sending it
    "success": "tam.received.success",  # ... before processing the Success
    "final": "tam.committed.success",  # ... after committing the Success, before its answer
}
CELLS = (
    [("drop", m) for m in MESSAGES]
    + [("agent", AGENT_DIES[m]) for m in MESSAGES]
    + [("agent", s) for s in STORE_STEPS]
    + [("tam", TAM_DIES[m]) for m in MESSAGES]
)
FLOWS = ("install", "update", "delete")
UPDATE_REACHED_AGENT = {
    ("drop", "success"), ("drop", "final"), ("agent", "agent.answered.success"),
    ("agent", "agent.received.final"), ("tam", "tam.received.success"), ("tam", "tam.committed.success"),
    ("agent", "store.index-replaced"), ("agent", "store.garbage-collected"),
}  # fmt: skip
ROLLED_BACK = {("agent", "store.blobs-written"), ("agent", "store.index-written")}


def expected(fault: tuple[str, str]) -> str:
    """The outcome a cell must show: first run, then the next run (always ok), and what that run
    reports as recovered (an Update the Agent had begun and no TAM confirmed)."""
    first = "died" if fault[0] == "agent" else "failed"
    if fault in UPDATE_REACHED_AGENT:
        return f"{first} → ok, recovered: had been applied"
    if fault in ROLLED_BACK:
        return f"{first} → ok, recovered: was rolled back, then redone"
    return f"{first} → ok"


def outcome(first: RunReport | None, second: RunReport) -> str:
    text = "died" if first is None else "ok" if first.ok else "failed"
    text += " → " + ("ok" if second.ok else "failed")
    if second.recovered is not None:
        applied = second.recovered["applied_before"]
        text += ", recovered: " + ("had been applied" if applied else "was rolled back, then redone")
    return text


class Link:
    """An in-memory MessageClient to the TAM that injects one fault, once; a dead TAM restarts from
    its folder (engine and store reloaded) before the next message."""

    def __init__(self, world: Any, fault: tuple[str, str] | None = None) -> None:
        self.world = world
        self.fault = fault
        self.index = 0  # number of the next POST in this link's current session
        self.fired = False

    def restart_tam(self) -> None:
        self.world.tam.store.close()
        config, store = load_tam_dir(self.world.tam_dir)
        self.world.tam = TamEngine(config, store, wire=self.world.tam.wire)

    async def post(self, payload: bytes) -> bytes | None:
        if not payload:
            self.index = 0
        request, response = MESSAGES[2 * self.index], MESSAGES[2 * self.index + 1]
        self.index += 1
        kind, where = self.fault or ("", "")
        if kind == "drop" and not self.fired and where == request:
            self.fired = True
            raise TransportError(f"{request} lost")
        tam = self.world.tam
        try:
            answer = tam.receive(payload) if payload else tam.connect()
        except crashpoints.SimulatedCrash:
            self.fired = True
            self.restart_tam()
            raise TransportError("the TAM died") from None
        if kind == "drop" and not self.fired and where == response:
            self.fired = True
            raise TransportError(f"{response} lost")
        return answer

    async def close(self) -> None:
        pass


def restart_agent(world: Any) -> None:
    world.agent = AgentEngine(AgentState.load(world.agent_dir), wire=world.agent.wire)


async def agent_run(world: Any, link: Link) -> RunReport | None:
    """One `agent run`; None when the Agent process died in it (then it is restarted from disk)."""
    try:
        return await run_until_done(world.agent, link, "coap://tam.invalid/teep", timeout=CALM_TIMEOUT)
    except crashpoints.SimulatedCrash:
        link.fired = True
        restart_agent(world)
        return None


def device(world: Any) -> dict[tuple[bytes, ...], tuple[int, float]]:
    return {
        tuple(e.component_id): (e.sequence_number, e.installed_at)
        for e in world.agent.state.components.list()
    }


def assert_store_clean(world: Any) -> None:
    """No half-applied install is left behind: only the blobs the index names, no temp files."""
    store = world.agent.state.components
    entries = store.list()
    for sub, names in (
        ("images", {e.image_digest.hex() for e in entries}),
        ("manifests", {e.manifest_digest.hex() for e in entries}),
    ):
        assert {p.name for p in (store.root / sub).iterdir()} == names, sub
    assert not [p.name for p in store.root.iterdir() if p.name.endswith(".tmp")]


def tam_record(world: Any) -> dict[tuple[bytes, ...], int]:
    store = world.tam.store
    (dev,) = store.devices()
    return {
        tuple(c.component_id): c.installed_seq for c in store.device_components(dev.id) if c.installed_seq
    }


async def prepare(flow: str, tmp_path: Path, wire: str) -> tuple[Any, dict[tuple[bytes, ...], int]]:
    """A world whose next session does `flow`; returns it and the device state that flow must reach."""
    profile = dataclasses.replace(load_profile("coap"), encoding=wire)
    world = teep_world(profile, tmp_path, 600)
    if flow == "install":
        return world, {COMPONENT_ID: 1}
    assert (await agent_run(world, Link(world))) is not None
    assert {c: s for c, (s, _) in device(world).items()} == {COMPONENT_ID: 1}
    _, store = load_tam_dir(world.tam_dir)  # the operator's own connection, as `tam component add`
    config = world.tam.config
    tam_key = next(k for k in config.keys if k.key_type == "P-256")
    if flow == "update":
        from teep_coap.security.suit.build import build_envelope

        cfg = world.agent.state.config
        envelope = build_envelope(
            b"version 2" * 50,
            key=tam_key,
            component_id=COMPONENT_ID,
            sequence_number=2,
            vendor_id=cfg.vendor_id,
            class_id=cfg.class_id,
        )
        store.add_component(
            component_id=COMPONENT_ID, sequence_number=2, envelope=envelope, now=0.0, audience="all"
        )
        target = {COMPONENT_ID: 2}
    else:
        store.add_component(
            component_id=COMPONENT_ID,
            sequence_number=1,
            envelope=store.latest_component(COMPONENT_ID).envelope,  # type: ignore[union-attr]
            now=0.0,
            audience="delete",
        )
        target = {}
    store.close()
    return world, target


async def check_cell(flow: str, fault: tuple[str, str], tmp_path: Path, wire: str = "cbor") -> dict[str, Any]:
    world, target = await prepare(flow, tmp_path, wire)
    link = Link(world, fault)
    kind, point = fault
    if kind == "drop":
        first = await agent_run(world, link)
    else:
        with crashpoints.simulate(point):
            first = await agent_run(world, link)
            assert crashpoints.was_reached(), f"{point} never reached in a {flow} session"
    assert link.fired, f"{fault} never happened"
    had = device(world)
    # The next `agent run`, on a clean link: converges in one run.
    second = await agent_run(world, Link(world))
    assert second is not None and second.ok, second and [s.reason for s in second.sessions]
    now = device(world)
    assert {c: s for c, (s, _) in now.items()} == target, (flow, fault, now)
    for cid, (seq, at) in had.items():  # what the device already had was not installed again
        if target.get(cid) == seq:
            assert now[cid] == (seq, at), f"{cid} was installed twice"
    assert tam_record(world) == target, (flow, fault, tam_record(world))
    assert_store_clean(world)
    world.tam.store.close()
    return outcome(first, second)


@pytest.mark.parametrize("flow", FLOWS)
async def test_every_fault_point_converges_in_one_run(flow: str, tmp_path: Path) -> None:
    table = {fault: await check_cell(flow, fault, tmp_path / str(i)) for i, fault in enumerate(CELLS)}
    assert table == {fault: expected(fault) for fault in CELLS}


async def test_json_wire_converges_after_a_lost_success(tmp_path: Path) -> None:
    """The JSON/JWS twin carries the same tc-manifest-sequence-number (HTTP binding's other encoding)."""
    got = await check_cell("update", ("drop", "success"), tmp_path, wire="json")
    assert got == expected(("drop", "success"))


# ---------------------------------------------------------------- the same cells over real bindings

BINDINGS = ("coap", "coaps-psk", "teep-cbor-http")
EXCHANGE_TIMEOUT = 1.0  # seconds the Broker waits for one answer where a message is lost or the TAM dies
CALM_TIMEOUT = 10.0  # everywhere else: a loaded machine must not fail a run that has no fault


def tuned(name: str, timeout: float) -> Profile:
    p = load_profile(name)
    r = dataclasses.replace(p.retransmission, ack_timeout=0.2, ack_random_factor=1.2, max_retransmit=2)
    limits = dataclasses.replace(p.limits, request_timeout=timeout)
    return dataclasses.replace(p, retransmission=r, limits=limits)


class DyingTam:
    """The TAM's MessageHandler; at an armed crash point its "process" dies: that request is never
    answered, and the engine is loaded again from its folder (SQLite file) for the next one. The
    socket stays (a real restart, DTLS state lost included, is test_recovery_processes.py)."""

    def __init__(self, world: Any) -> None:
        self.world = world
        self.deaths = 0

    async def __call__(self, payload: bytes, peer: PeerInfo) -> bytes | None:
        try:
            return await TamHandler(self.world.tam)(payload, peer)
        except crashpoints.SimulatedCrash:
            self.deaths += 1
            Link(self.world).restart_tam()
            await asyncio.sleep(EXCHANGE_TIMEOUT + 0.5)  # the dead process never answers (in time)
            raise RequestRejected(Rejection.SERVER_ERROR, "a dead TAM") from None


class LossyClient:
    """The Broker's real client, with the relay switched off in one direction for one message (the
    request never arrives, or the answer never comes back: every retransmission of it is lost)."""

    def __init__(self, inner: MessageClient, relay: Any, up: str, down: str, lose: str | None) -> None:
        self.inner, self.relay, self.up, self.down, self.lose = inner, relay, up, down, lose
        self.index = 0
        self.lost = False

    async def post(self, payload: bytes) -> bytes | None:
        if not payload:
            self.index = 0
        request, response = MESSAGES[2 * self.index], MESSAGES[2 * self.index + 1]
        self.index += 1
        if not self.lost and self.lose in (request, response):
            self.lost = True
            self.relay.blackhole.add(self.up if self.lose == request else self.down)
        try:
            return await self.inner.post(payload)
        finally:
            self.relay.blackhole.clear()

    async def close(self) -> None:
        await self.inner.close()


@contextlib.asynccontextmanager
async def relayed(profile: Profile, port: int) -> AsyncIterator[tuple[Any, str, str, str]]:
    """A relay in front of the TAM: (relay, uri, up direction, down direction)."""
    scheme = profile.transport.scheme
    if scheme in ("http", "https"):
        tcp = TcpCountingRelay("127.0.0.1", port)
        rport = await tcp.start()
        try:
            yield tcp, f"{scheme}://127.0.0.1:{rport}{profile.transport.path}", C2S, S2C
        finally:
            await tcp.stop()
        return
    async with UdpRelay(("127.0.0.1", port)) as udp:
        yield udp, f"{scheme}://127.0.0.1:{udp.port}{profile.transport.path}", UP, DOWN


async def binding_cell(binding: str, fault: tuple[str, str], root: Path) -> str:
    """One install with one fault over a real binding, then the next run; returns the table entry."""
    profile = tuned(binding, CALM_TIMEOUT)
    faulty = tuned(binding, EXCHANGE_TIMEOUT if fault[0] != "agent" else CALM_TIMEOUT)
    world = teep_world(profile, root, 600)
    tam = DyingTam(world)
    kind, where = fault
    async with make_server(profile, tam, tam_dir=world.tam_dir) as server:  # noqa: SIM117
        async with relayed(profile, server.port) as (relay, uri, up, down):
            client = LossyClient(
                make_client(faulty, uri, state_dir=world.agent_dir),
                relay,
                up,
                down,
                where if kind == "drop" else None,
            )
            try:
                if kind == "drop":
                    first = await agent_run(world, client)
                else:
                    with crashpoints.simulate(where):
                        first = await agent_run(world, client)
                        assert crashpoints.was_reached(), f"{where} never reached over {binding}"
            finally:
                await client.close()
            assert kind != "drop" or client.lost
            assert kind != "tam" or tam.deaths == 1
            client2 = make_client(profile, uri, state_dir=world.agent_dir)
            try:
                second = await agent_run(world, client2)
            finally:
                await client2.close()
    assert second is not None and second.ok, (binding, fault, second and [s.reason for s in second.sessions])
    assert {c: s for c, (s, _) in device(world).items()} == {COMPONENT_ID: 1}, (binding, fault)
    assert tam_record(world) == {COMPONENT_ID: 1}, (binding, fault, tam_record(world))
    world.tam.store.close()
    return outcome(first, second)


@pytest.mark.parametrize("binding", BINDINGS)
async def test_every_fault_point_converges_over_real_bindings(binding: str, tmp_path: Path) -> None:
    table = {fault: await binding_cell(binding, fault, tmp_path / str(i)) for i, fault in enumerate(CELLS)}
    assert table == {fault: expected(fault) for fault in CELLS}
