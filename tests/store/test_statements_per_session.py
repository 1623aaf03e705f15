"""How many SQL statements (SQLite) and round trips (PostgreSQL) one TEEP install session costs the
TAM, message by message: a guard against the store's per-message work creeping back up.

Counted on a real session (TAM engine and Agent engine in memory, real signatures) against a real
SQLite file (the driver's trace callback sees every statement, BEGIN and COMMIT included) and a
real PostgreSQL server (libpq's protocol trace: each Sync of an extended-protocol statement and
each simple Query is one round trip). docs/scale.md, "TAM store per session (session 8)" and
"PostgreSQL per session (session 9)", have the counts before and after."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

import pytest

from teep_coap.protocol.agent import AgentEngine
from teep_coap.protocol.broker import run_in_memory
from teep_coap.protocol.events import SessionEnded, reply_of
from teep_coap.protocol.tam import TamConfig, TamEngine
from teep_coap.security.keys import generate_key
from teep_coap.security.suit import build_envelope
from teep_coap.store.agentdir import init_agent_state
from teep_coap.store.tam_db import TamStore

CID = (b"TEEP-Device", b"SecureFS", b"\x01" * 16, b"ta")
T0 = 1_800_000_000.0
SECRET = b"s" * 32

# Per message (connect, QueryResponse, Success). SQLite: statements the driver ran, each audit row
# of a message's executemany counted once. PostgreSQL: round trips, BEGIN and COMMIT included.
# Session 11: the engine keeps the devices it read by kid (a psk connect reads its device), so a
# QueryResponse and a Success after it look nothing up (-1 each; a stateless QueryResponse still
# does, its connect read no device).
EXPECTED = {
    ("sqlite", "psk"): [7, 9, 8],  # session 10: [7, 10, 9]; main before session 8: [8, 12, 11]
    ("sqlite", "stateless"): [0, 14, 8],  # session 10: [0, 14, 9]; before: [2, 18, 11]
    # session 10: add_outstanding went with the COMMIT (-1 on a connect and on a QueryResponse)
    # and the psk connect's device look-up went into its session INSERT (-1 more on a connect)
    # session 11 too: a QueryResponse's claim carries the device lock and the reads its report needs
    ("postgresql", "psk"): [2, 2, 2],  # session 10: [2, 4, 3]; before: [3, 4, 3]; session 9: [4, 5, 3]
    ("postgresql", "stateless"): [
        0,
        6,
        2,
    ],  # session 10: [0, 6, 3]; session 9: [0, 7, 3]; before 9: [0, 10, 7]; before 8: [0, 16, 11]
}


class Counter:
    """Counts what the store's connection of this thread sends, between `start` and `take`."""

    def __init__(self, store: TamStore, trace_file: Path) -> None:
        self.store = store
        self.raw = cast(Any, store._connection().connection.dbapi_connection)
        self.seen: list[str] = []
        self.trace_file = trace_file
        if store.embedded:
            self.raw.set_trace_callback(self.seen.append)
        else:
            self.handle = trace_file.open("w")
            self.raw.pgconn.trace(self.handle.fileno())
            self.raw.pgconn.set_trace_flags(0)
        self.mark = 0

    def _all(self) -> list[str]:
        if self.store.embedded:
            return self.seen
        self.handle.flush()
        lines = self.trace_file.read_text().splitlines()
        # Client-to-server messages that end a round trip: Sync (extended protocol) or Query.
        return [ln for ln in lines if "\tF\t" in ln and ln.split("\t")[3].split(" ")[0] in ("Sync", "Query")]

    def take(self) -> int:
        every = self._all()
        n, self.mark = len(every) - self.mark, len(every)
        return n

    def close(self) -> None:
        if self.store.embedded:
            self.raw.set_trace_callback(None)
        else:
            self.raw.pgconn.untrace()
            self.handle.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[[], TamStore]]:
    made: list[TamStore] = []

    def make() -> TamStore:
        if request.param == "sqlite":
            store = TamStore(f"sqlite:///{tmp_path / f'tam{len(made)}.sqlite'}")
        else:
            store = TamStore(request.getfixturevalue("new_pg_database")("statements"))
        made.append(store)
        return store

    yield make
    for store in made:
        store.close()


@pytest.mark.parametrize("connect", ["psk", "stateless"])
def test_statements_per_message_of_an_install_session(
    make_store: Callable[[], TamStore], connect: str, tmp_path: Path
) -> None:
    stateless = connect == "stateless"
    identity = None if stateless else "dev1"
    t = [T0]
    rng = random.Random(3).randbytes
    tam_key, agent_key = generate_key("esp256"), generate_key("esp256")
    state = init_agent_state(
        tmp_path / "agent", tam_key.public, "esp256", attestation="background-check",
        tam_uri="coap://tam/tam", tc_signer_keys=[tam_key.public], key=agent_key,
    )  # fmt: skip
    agent = AgentEngine(state, clock=lambda: t[0], rng=rng)
    store = make_store()
    device = store.add_device(
        kid=agent_key.kid, alg=agent_key.alg, public_key=agent_key.public.to_pem(), now=T0,
        psk_identity=identity,
    )  # fmt: skip
    envelope = build_envelope(
        b"x" * 1024, key=tam_key, component_id=CID, sequence_number=1,
        vendor_id=state.config.vendor_id, class_id=state.config.class_id,
    )  # fmt: skip
    store.add_component(component_id=CID, sequence_number=1, envelope=envelope, now=T0, audience="all")
    config = TamConfig(
        keys=(tam_key,), attestation="background-check", stateless_secret=SECRET if stateless else None
    )
    tam = TamEngine(config, store, clock=lambda: t[0], rng=rng)
    # Connects of other devices first, so the statements are prepared on the server before the
    # session counted (store/tam_pg.py sends a statement's Parse in the round trip of its first use).
    for i in range(7):
        other = generate_key("esp256")
        store.add_device(
            kid=other.kid, alg=other.alg, public_key=other.public.to_pem(), now=T0,
            psk_identity=None if stateless else f"warm{i}",
        )  # fmt: skip
        tam.connect(None if stateless else f"warm{i}")
    counter = Counter(store, tmp_path / "pg.trace")
    counter.take()
    counts: list[int] = []

    ended: list[SessionEnded] = []

    def post(payload: bytes) -> bytes | None:
        if not payload:
            answer = tam.connect(identity)
        else:
            events = tam.handle_message(payload, t[0], identity)
            ended.extend(e for e in events if isinstance(e, SessionEnded))
            answer = reply_of(events)
        counts.append(counter.take())
        return answer

    try:
        run_in_memory(agent, "coap://tam/tam", post)
    finally:
        counter.close()
    # The session did what it should: installed, ended as a success, audited.
    assert [c.installed_seq for c in store.device_components(device.id)] == [1]
    assert store.sessions()[-1][4] == "success"
    # The Success ended it without reading it back: its start came with the claim.
    assert [(e.session_id, e.outcome, e.started_at) for e in ended] == [
        (store.sessions()[-1][0], "success", T0)
    ]
    events = [e[2] for e in store.audit_log(store.sessions()[-1][0])]
    assert events[0] == "session-start" and events[-1] == "session-end"
    assert "send-update" in events and "recv-success" in events
    dialect = "sqlite" if store.embedded else "postgresql"
    assert counts == EXPECTED[(dialect, connect)]
