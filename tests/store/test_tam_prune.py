"""Pruning the TAM's history (`TamStore.prune_history`, store/tam_prune.py) on a real SQLite file and a
real PostgreSQL: what goes, what stays, bounded batches, the dry run, the indexes the picks walk, and
what a database made before those indexes gets when it is opened."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from query_plans import plan_of
from sqlalchemy import create_engine, inspect, text

from teep_coap.protocol.retention import PruneCounts
from teep_coap.store import tam_prune
from teep_coap.store.tam_db import StoreError, TamStore

DAY = 86400.0
NOW = 1_800_000_000.0
CUTOFF = NOW - 30 * DAY
CID = (b"TEEP-Device", b"ta")
# Tables pruning must never touch.
KEPT_TABLES = ("devices", "device_components", "catalog", "spent_tokens")


@dataclass
class History:
    old: list[int]  # ended before the cutoff, nothing open: pruned
    kept: list[int]  # everything else
    old_audit: int  # audit rows the prune deletes (the old sessions' and the old sessionless ones)
    old_requests: int


def _session(
    store: TamStore,
    dev: int,
    start: float,
    *,
    end: float | None,
    request: str | None = "answered",
    life: float = 60,
) -> int:
    """A session with its start / end audit rows, one more audit row and (unless None) one request:
    "answered" or "open", alive for `life` seconds from the start."""
    sid = store.start_session(start, device_id=dev, transport_identity=None)
    store.audit(sid, start + 1, "send-query-request")
    if request is not None:
        store.add_outstanding(
            session_id=sid,
            device_id=dev,
            kind="query",
            token=sid.to_bytes(4, "big"),
            challenge=None,
            now=start,
            lifetime=life,
            cap=100,
            answered=request == "answered",
        )
    if end is not None:
        store.end_session(sid, end, "success")
    return sid


def _history(store: TamStore, old_sessions: int = 3) -> History:
    dev = store.add_device(kid=b"k" * 32, alg=-7, public_key=b"PEM", now=NOW - 100 * DAY).id
    store.add_component(component_id=CID, sequence_number=1, envelope=b"env", now=NOW - 100 * DAY)
    store.set_device_components(dev, NOW - 40 * DAY, installed={CID: 1})
    store.spend_token(b"s" * 32, NOW + 60)
    old = [_session(store, dev, NOW - 40 * DAY + i, end=NOW - 40 * DAY + i + 5) for i in range(old_sessions)]
    old.append(_session(store, dev, NOW - 35 * DAY, end=NOW - 35 * DAY + 5, request=None))
    kept = [
        _session(store, dev, NOW - 1 * DAY, end=NOW - 1 * DAY + 5),  # ended after the cutoff
        _session(store, dev, NOW - 40 * DAY, end=None),  # never ended (open)
        _session(store, dev, NOW - 40 * DAY, end=NOW - 40 * DAY + 5, request="open"),  # a request open
        _session(store, dev, NOW - 40 * DAY, end=NOW - 40 * DAY + 5, life=20 * DAY),  # alive at the cutoff
    ]
    store.audit(None, NOW - 31 * DAY, "refused", "old")
    store.audit(None, NOW - 2 * DAY, "refused", "recent")
    return History(old, kept, old_audit=3 * len(old) + 1, old_requests=old_sessions)


def _kept_tables(store: TamStore) -> dict[str, list[tuple[Any, ...]]]:
    snap = store.snapshot()
    return {t: snap[t] for t in KEPT_TABLES}


def test_old_ended_sessions_go_with_their_rows_and_the_rest_stays(store: TamStore) -> None:
    h = _history(store)
    before = _kept_tables(store)
    done = store.prune_history(CUTOFF, 100)
    assert done == PruneCounts(len(h.old), h.old_audit, h.old_requests, more=False)
    assert [s[0] for s in store.sessions()] == sorted(h.kept)
    audit = store.audit_log()
    assert {a[0] for a in audit} == {*h.kept, None}
    assert [a[3] for a in audit if a[0] is None] == ["recent"]
    assert {o.session_id for o in store.outstanding()} == set(h.kept)  # each kept session has one
    assert _kept_tables(store) == before  # devices, their components, the catalog, spent tokens
    assert store.prune_history(CUTOFF, 100) == PruneCounts()  # nothing left to prune


def test_batches_are_bounded_and_oldest_first(store: TamStore) -> None:
    h = _history(store, old_sessions=6)  # 7 prunable sessions
    first = store.prune_history(CUTOFF, 3)
    assert (first.sessions, first.more) == (3, True)
    assert not {*h.old[:3]} & {s[0] for s in store.sessions()}  # the three that ended first
    pauses: list[float] = []
    total, batches = store.prune_history_all(CUTOFF, 3, pause=pauses.append)
    assert (total.sessions, batches) == (4, 2)  # 3 + 1, the second batch not full
    assert len(pauses) == 1 and pauses[0] >= 0.01
    assert first.audit + total.audit == h.old_audit
    assert [s[0] for s in store.sessions()] == sorted(h.kept)


def test_a_batch_deletes_at_most_limit_sessionless_audit_rows(store: TamStore) -> None:
    for i in range(5):
        store.audit(None, NOW - 60 * DAY + i, "refused", f"old {i}")
    store.audit(None, NOW - DAY, "refused", "recent")
    assert store.prune_history(CUTOFF, 2) == PruneCounts(0, 2, 0, more=True)
    left = [a[3] for a in store.audit_log()]
    assert len(left) == 4 and "recent" in left
    assert store.prune_history(CUTOFF, 5) == PruneCounts(0, 3, 0, more=False)
    assert [a[3] for a in store.audit_log()] == ["recent"]


def test_dry_run_counts_exactly_and_deletes_nothing(store: TamStore) -> None:
    h = _history(store)
    before = store.snapshot()
    counts = store.prunable_history(CUTOFF)
    assert store.snapshot() == before
    assert counts == PruneCounts(len(h.old), h.old_audit, h.old_requests)
    total, _ = store.prune_history_all(CUTOFF, 2, pause=lambda _s: None)
    assert total.per_table() == counts.per_table()


def test_batch_size_is_checked(store: TamStore) -> None:
    for bad in (0, tam_prune.MAX_BATCH + 1):
        with pytest.raises(StoreError, match="prune batch takes 1 to"):
            store.prune_history(CUTOFF, bad)


def _plan(store: TamStore, stmt: Any) -> str:
    """The database's plan of `stmt` with a cutoff and one id bound."""
    return plan_of(store, stmt, {"cutoff": CUTOFF, "ids": [1]})


def test_every_pick_and_delete_walks_an_index(store: TamStore) -> None:
    """No statement of a batch scans sessions, audit or outstanding: its cost is its own rows."""
    _history(store)
    primary = "INTEGER PRIMARY KEY" if store.embedded else "_pkey"
    # a session's live requests by session_id, or (PostgreSQL's choice on tables this small) all live
    # requests at once by state and expiry: an index either way
    live_requests = ("ix_outstanding_session_id", "ix_outstanding_expires_at")
    expected: list[tuple[Any, list[str | tuple[str, ...]]]] = [
        (tam_prune.pick_sessions(10), ["ix_sessions_ended_at", live_requests]),
        (tam_prune.pick_sessionless(10), ["ix_audit_session_at"]),
        (tam_prune.DEL_AUDIT_OF, ["ix_audit_session_at"]),
        (tam_prune.DEL_OUTSTANDING_OF, ["ix_outstanding_session_id"]),
        (tam_prune.DEL_SESSIONS, [primary]),
        (tam_prune.DEL_AUDIT, [primary]),
    ]
    for stmt, indexes in expected:
        plan = _plan(store, stmt)
        assert ("SCAN" if store.embedded else "Seq Scan") not in plan, plan
        for index in indexes:
            assert any(name in plan for name in ((index,) if isinstance(index, str) else index)), plan


def test_an_older_database_gets_the_indexes_at_open(url: str) -> None:
    """A database made before the pruning indexes (simulated: they are dropped and the former index
    on audit.session_id made again) gets them when opened, and loses the one they replace."""
    store = TamStore(url)
    _history(store)
    before = store.snapshot()
    store.close()
    engine = create_engine(url)
    with engine.begin() as conn:
        for name in ("ix_sessions_ended_at", "ix_outstanding_session_id", "ix_audit_session_at"):
            conn.execute(text(f"DROP INDEX {name}"))
        conn.execute(text("CREATE INDEX ix_audit_session_id ON audit (session_id)"))
    reopened = TamStore(url)
    try:
        found = inspect(engine)
        assert {i["name"] for i in found.get_indexes("sessions")} >= {"ix_sessions_ended_at"}
        assert {i["name"] for i in found.get_indexes("outstanding")} >= {"ix_outstanding_session_id"}
        assert {i["name"] for i in found.get_indexes("audit")} == {"ix_audit_session_at"}
        assert reopened.snapshot() == before  # the data is untouched
        assert reopened.prune_history(CUTOFF, 100).sessions == 4
    finally:
        reopened.close()
        engine.dispose()


def test_postgresql_workers_pruning_together_take_different_batches(
    new_pg_database: Callable[[str], str],
) -> None:
    """A batch locks the rows it picked; a second TAM process pruning meanwhile skips them (FOR
    UPDATE SKIP LOCKED) and takes the next ones instead of waiting for the first to commit."""
    url = new_pg_database("prune_skip")
    first, second = TamStore(url), TamStore(url + "?options=-c%20lock_timeout%3D5000")
    try:
        h = _history(first, old_sessions=5)  # 6 prunable
        result: list[PruneCounts | Exception] = []
        with first.atomic():
            assert first.prune_history(CUTOFF, 3).sessions == 3  # not committed yet: rows locked

            def prune_meanwhile() -> None:
                try:
                    result.append(second.prune_history(CUTOFF, 3))
                except StoreError as exc:  # lock_timeout: it waited instead of skipping
                    result.append(exc)

            thread = threading.Thread(target=prune_meanwhile)
            thread.start()
            thread.join(timeout=30)
            assert not thread.is_alive()
        (got,) = result
        assert isinstance(got, PruneCounts) and got.sessions == 3, got
        assert [s[0] for s in first.sessions()] == sorted(h.kept)
    finally:
        first.close()
        second.close()
