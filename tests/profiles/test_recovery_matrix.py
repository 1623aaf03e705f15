"""Systematic loss and crash points of an install, an update and a delete session (in one process).

For every message of a session (connect, QueryRequest, QueryResponse, Update, Success, final answer)
one fault, once: (a) the message is lost, (b) the Agent dies at that point, (c) the TAM dies at that
point — plus the Agent dying at each step of its component-store commit. A death is a
`teep_coap.crashpoints` point reached inside the engine: what was committed (SQLite file, component
store index) stays, nothing else does, and the "restarted" process loads its state from disk. After
each fault the next `agent run` (the real `run_until_done`) must succeed, the device must hold the new
state (installed once: not re-installed when it already had it), and the TAM's record must match it.

The same cells run over real bindings (CoAP, DTLS-PSK, HTTP: real sockets through a loopback relay
that loses the chosen message), for the install, the update and the delete; real processes killed for
real: tests/profiles/test_recovery_processes.py. Every measured outcome must equal its row of the
table in docs/engines.md ("Recovery after loss and crashes"), so the table and the tests cannot drift.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from asyncio import FIRST_COMPLETED
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from recovery_doc import doc_table

from teep_coap import crashpoints
from teep_coap.profiles import Profile, load_profile
from teep_coap.profiles.scenario import COMPONENT_ID, teep_world
from teep_coap.profiles.session import RunReport, TamHandler, run_until_done
from teep_coap.profiles.stack import make_client, make_server
from teep_coap.protocol.agent import AgentEngine
from teep_coap.protocol.tam import TamEngine
from teep_coap.store.agentdir import load_agent_state
from teep_coap.store.tamdir import load_tam_dir
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
    world.agent = AgentEngine(load_agent_state(world.agent_dir), wire=world.agent.wire)


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


async def prepare(flow: str, world: Any) -> dict[tuple[bytes, ...], int]:
    """Make the world's next session do `flow` (the setup runs in memory); returns the device state
    that flow must reach."""
    if flow == "install":
        return {COMPONENT_ID: 1}
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
    return target


def converged(
    world: Any,
    target: dict[tuple[bytes, ...], int],
    had: dict[tuple[bytes, ...], tuple[int, float]],
    first: RunReport | None,
    second: RunReport | None,
    cell: tuple[str, ...],
) -> str:
    """Assert what every cell must reach after the one further run; returns the cell's outcome."""
    assert second is not None and second.ok, (cell, second and [s.reason for s in second.sessions])
    now = device(world)
    assert {c: s for c, (s, _) in now.items()} == target, (cell, now)
    for cid, (seq, at) in had.items():  # what the device already had was not installed again
        if target.get(cid) == seq:
            assert now[cid] == (seq, at), f"{cid} was installed twice ({cell})"
    assert tam_record(world) == target, (cell, tam_record(world))
    assert_store_clean(world)
    return outcome(first, second)


async def check_cell(flow: str, fault: tuple[str, str], tmp_path: Path, wire: str = "cbor") -> str:
    world = teep_world(dataclasses.replace(load_profile("coap"), encoding=wire), tmp_path, 600)
    target = await prepare(flow, world)
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
    try:
        return converged(world, target, had, first, second, (flow, *fault))
    finally:
        world.tam.store.close()


@pytest.mark.parametrize("flow", FLOWS)
async def test_every_fault_point_converges_in_one_run(flow: str, tmp_path: Path) -> None:
    table = {fault: await check_cell(flow, fault, tmp_path / str(i)) for i, fault in enumerate(CELLS)}
    assert table == {fault: expected(fault) for fault in CELLS}
    assert_documented(table, "in memory", flow)


async def test_json_wire_converges_after_a_lost_success(tmp_path: Path) -> None:
    """The JSON/JWS twin carries the same tc-manifest-sequence-number (HTTP binding's other encoding)."""
    got = await check_cell("update", ("drop", "success"), tmp_path, wire="json")
    assert got == expected(("drop", "success"))


# ---------------------------------------------------------------- the table in docs/engines.md

MESSAGE_NAMES = {
    "connect": "connect", "query-request": "QueryRequest", "query-response": "QueryResponse",
    "update": "Update", "success": "Success", "final": "final answer",
}  # fmt: skip
OUTCOME = "first run → next run"


def row_key(fault: tuple[str, str]) -> tuple[str, str]:
    """The first two cells of a fault's row in the doc's table."""
    kind, where = fault
    if kind == "drop":
        return "lost", MESSAGE_NAMES[where]
    return ("Agent dies at" if kind == "agent" else "TAM dies at"), f"`{where}`"


def assert_documented(table: dict[tuple[str, str], str], column: str, flow: str) -> None:
    """Every measured cell says in the doc what it measured: the row's outcome, a ✓ (converged in
    one further run) in its column at the flow's place (install, update, delete)."""
    doc = doc_table("recovery-matrix")
    assert sorted(doc) == sorted(row_key(f) for f in CELLS), "the doc's rows are not the tested cells"
    for fault, got in table.items():
        row = doc[row_key(fault)]
        assert row[OUTCOME] == got, f"docs/engines.md says {row[OUTCOME]!r} for {fault}, measured {got!r}"
        assert row[column].split()[FLOWS.index(flow)] == "✓", (fault, column, flow, row[column])


# ---------------------------------------------------------------- the same cells over real bindings

BINDINGS = ("coap", "coaps-psk", "teep-cbor-http")
COLUMNS = {"coap": "coap", "coaps-psk": "coaps-psk", "teep-cbor-http": "http"}
EXCHANGE_TIMEOUT = 1.0  # seconds the Broker waits for the answer to a request that was lost
CALM_TIMEOUT = 10.0  # every other exchange: a loaded machine must not fail a run that has no fault
DEAD_SILENCE = 1.0  # seconds a dead TAM's request stays unanswered (then 5.00, to nobody)
TAM_DIES_ON_POST = {"connect": 0, "query-response": 1, "success": 2}  # tam.*.<message> → POST number


def tuned(name: str) -> Profile:
    """The binding's profile as shipped (CoAP retransmission timers too), with the calm timeout."""
    p = load_profile(name)
    return dataclasses.replace(p, limits=dataclasses.replace(p.limits, request_timeout=CALM_TIMEOUT))


class Arming:
    """A crash point armed only while one cell's TAM engine runs (synchronously, without giving the
    event loop away), so the cells sharing one event loop never reach each other's point."""

    def __init__(self, point: str | None) -> None:
        self.point = point
        self.fired = False

    @contextlib.contextmanager
    def around(self) -> Iterator[None]:
        if self.point is None or self.fired:
            yield
            return
        with crashpoints.simulate(self.point):
            try:
                yield
            finally:
                self.fired = crashpoints.was_reached()


class DyingTam:
    """The TAM's MessageHandler. At its armed crash point its "process" dies: that request is never
    answered in time, and the engine is loaded again from its folder (SQLite file) for the next one
    (the socket stays; real processes killed for real: test_recovery_processes.py). Armed to lose an
    answer, it switches the relay's way back off before that answer leaves, so exactly it is lost."""

    def __init__(self, world: Any, arming: Arming) -> None:
        self.world, self.arming = world, arming
        self.deaths = 0
        self.handled = 0  # requests answered or died on
        self.lose_answer: Callable[[], None] | None = None
        self._changed = asyncio.Condition()
        self._silent: list[asyncio.Task[None]] = []

    async def __call__(self, payload: bytes, peer: PeerInfo) -> bytes | None:
        # without group commit the engine runs to its end within this step, as Arming needs
        handler = TamHandler(self.world.tam, threads=0, group_commit=False)
        try:
            with self.arming.around():  # with threads=0 the handler never awaits: the engine runs to its end
                answer = await handler(payload, peer)
        except crashpoints.SimulatedCrash:
            self.deaths += 1
            Link(self.world).restart_tam()
            await self._count()
            silence = asyncio.ensure_future(asyncio.sleep(DEAD_SILENCE))
            self._silent.append(silence)
            await silence  # the dead process never answers; the Broker has given up meanwhile
            raise RequestRejected(Rejection.SERVER_ERROR, "a dead TAM") from None
        if self.lose_answer is not None:
            self.lose_answer()
            self.lose_answer = None
        await self._count()
        return answer

    async def _count(self) -> None:
        async with self._changed:
            self.handled += 1
            self._changed.notify_all()

    async def handled_to(self, count: int) -> None:
        async with self._changed:
            await self._changed.wait_for(lambda: self.handled >= count)

    async def settle(self) -> None:
        """Wait out the silences of dead requests (so the server closes with nothing pending); the
        server may have cancelled one already (DTLS: the Broker closed its session)."""
        await asyncio.gather(*self._silent, return_exceptions=True)


class LossyClient:
    """The Broker's real client, with one fault on one exchange: its request lost (the relay drops
    every datagram or byte of it, retransmissions included; the Broker gives up after
    EXCHANGE_TIMEOUT), its answer lost (the TAM switches the relay's way back off before answering;
    the Broker gives up once the TAM has answered), or the TAM dies on it (the Broker gives up once
    it has died)."""

    def __init__(
        self, inner: MessageClient, relay: Any, up: str, down: str, tam: DyingTam, fault: tuple[str, str]
    ) -> None:
        self.inner, self.relay, self.up, self.down, self.tam = inner, relay, up, down, tam
        kind, where = fault
        self.lose = where if kind == "drop" else None
        self.faulty_post = (
            MESSAGES.index(where) // 2
            if kind == "drop"
            else TAM_DIES_ON_POST[where.rsplit(".", 1)[1]]
            if kind == "tam"
            else None
        )
        self.index = 0
        self.lost = False

    async def post(self, payload: bytes) -> bytes | None:
        if not payload:
            self.index = 0
        number = self.index
        request = MESSAGES[2 * number]
        self.index += 1
        if number != self.faulty_post or self.lost:
            return await self.inner.post(payload)
        self.lost = True
        if self.lose == request:
            self.relay.blackhole.add(self.up)
            give_up: Awaitable[Any] = asyncio.sleep(EXCHANGE_TIMEOUT)
        else:
            if self.lose is not None:
                self.tam.lose_answer = lambda: self.relay.blackhole.add(self.down)
            give_up = self.tam.handled_to(self.tam.handled + 1)
        post = asyncio.ensure_future(self.inner.post(payload))
        waiter = asyncio.ensure_future(give_up)
        try:
            done, _ = await asyncio.wait({post, waiter}, timeout=CALM_TIMEOUT, return_when=FIRST_COMPLETED)
            if post in done:  # the fault did not happen: the checks of the cell will say so
                return post.result()
            raise TransportError("no answer (lost, or the TAM died)")
        finally:
            for task in (post, waiter):
                task.cancel()
            await asyncio.gather(post, waiter, return_exceptions=True)
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


async def binding_cell(binding: str, flow: str, fault: tuple[str, str], root: Path) -> str:
    """One session of `flow` with one fault over a real binding, then the next run; returns the
    cell's outcome."""
    profile = tuned(binding)
    world = teep_world(profile, root, 600)
    target = await prepare(flow, world)
    kind, where = fault
    tam = DyingTam(world, Arming(where if kind == "tam" else None))
    async with make_server(profile, tam, tam_dir=world.tam_dir) as server:  # noqa: SIM117
        async with relayed(profile, server.port) as (relay, uri, up, down):
            inner = make_client(profile, uri, state_dir=world.agent_dir)
            client = LossyClient(inner, relay, up, down, tam, fault)
            try:
                if kind == "agent":
                    with crashpoints.simulate(where):
                        first = await agent_run(world, client)
                        assert crashpoints.was_reached(), f"{where} never reached over {binding}"
                else:
                    first = await agent_run(world, client)
            finally:
                await client.close()
            assert kind != "drop" or client.lost, (binding, flow, fault)
            assert kind != "tam" or tam.deaths == 1, (binding, flow, fault)
            had = device(world)
            client2 = make_client(profile, uri, state_dir=world.agent_dir)
            try:
                second = await agent_run(world, client2)
            finally:
                await client2.close()
            await tam.settle()
    try:
        return converged(world, target, had, first, second, (binding, flow, *fault))
    finally:
        world.tam.store.close()


@pytest.mark.parametrize("binding", BINDINGS)
async def test_every_fault_point_converges_over_real_bindings(binding: str, tmp_path: Path) -> None:
    """Install, update and delete × every cell. An Agent death arms the process-wide crash point for
    the whole run, so those cells run one after another (they wait for nothing); the lost messages and
    TAM deaths, which wait for the fault to happen (a lost request: EXCHANGE_TIMEOUT), run side by
    side on the event loop."""
    cells = [(flow, fault) for flow in FLOWS for fault in CELLS]
    table: dict[tuple[str, tuple[str, str]], str] = {}
    for i, (flow, fault) in enumerate(cells):
        if fault[0] == "agent":
            table[flow, fault] = await binding_cell(binding, flow, fault, tmp_path / str(i))
    async with asyncio.TaskGroup() as group:
        tasks = {
            (flow, fault): group.create_task(binding_cell(binding, flow, fault, tmp_path / str(i)))
            for i, (flow, fault) in enumerate(cells)
            if fault[0] != "agent"
        }
    table.update({cell: task.result() for cell, task in tasks.items()})
    assert table == {(flow, fault): expected(fault) for flow, fault in cells}
    for flow in FLOWS:
        assert_documented({f: got for (fl, f), got in table.items() if fl == flow}, COLUMNS[binding], flow)
