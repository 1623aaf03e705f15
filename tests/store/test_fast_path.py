"""The store's fast paths (`Tx.rows` / `run` / `insert_id` / `run_many`) on both databases: straight on
the driver's connection (sqlite3, or psycopg 3 under PostgreSQL) they must give what SQLAlchemy gives
for the same statements, write inside the transaction, and turn the driver's own errors into
StoreError like SQLAlchemy's."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from teep_coap.store.tam_db import StoreError, TamStore, component_key
from teep_coap.store.tam_sql import (
    BIND_SESSION,
    CLAIM,
    INS_AUDIT,
    INS_DC,
    INS_SESSION,
    LOCK_DEVICE,
    SEL_DEVICE_BY_ID,
    SEL_DEVICE_BY_KID,
    SEL_DEVICE_BY_TID,
    SEL_DEVICE_COMPONENTS,
    SEL_LATEST,
    SEL_OPEN_OF_DEVICE,
    SEL_OPEN_UNBOUND,
    insert_audit_rows,
)
from teep_coap.store.tam_tx import _PG_COMPILED, _SQLITE_COMPILED, AUDIT_ROWS_AT_ONCE

CID = (b"TEEP-Device", b"ta")


def _plain(rows: Any) -> list[tuple[Any, ...]]:
    """Rows as tuples with booleans as 0/1 (SQLite's driver gives integers, psycopg booleans)."""
    return [tuple(int(v) if isinstance(v, bool) else v for v in r) for r in rows]


def _went_fast(store: TamStore, stmt: Any) -> bool:
    cache: dict[int, Any] = _SQLITE_COMPILED if store.embedded else _PG_COMPILED
    return id(stmt) in cache and cache[id(stmt)][0] is stmt


def test_fast_rows_equal_sqlalchemy_rows(store: TamStore) -> None:
    dev = store.add_device(kid=b"k" * 32, alg=-7, public_key=b"PEM", now=1.0, psk_identity="d1").id
    sid = store.start_session(2.0, device_id=dev, transport_identity="d1")
    store.add_outstanding(
        session_id=sid,
        device_id=dev,
        kind="query",
        token=b"t1",
        challenge=None,
        now=2.0,
        lifetime=60.0,
        cap=4,
    )
    store.add_outstanding(
        session_id=store.start_session(3.0, device_id=None, transport_identity=None),
        device_id=None, kind="query", token=None, challenge=b"c", now=3.0, lifetime=60.0, cap=4,
    )  # fmt: skip
    store.set_device_components(dev, 4.0, installed={CID: 3}, wanted={CID: 5})
    store.add_component(component_id=CID, sequence_number=5, envelope=b"E", now=5.0)
    cases: list[tuple[Any, dict[str, Any] | None]] = [
        (SEL_DEVICE_BY_KID, {"kid": b"k" * 32}),
        (SEL_DEVICE_BY_ID, {"id": dev}),
        (SEL_DEVICE_BY_TID, {"tid": "d1"}),
        (SEL_OPEN_OF_DEVICE, {"dev": dev}),  # `state = 'open'` is a literal bound by SQLAlchemy
        (SEL_OPEN_UNBOUND, None),
        (SEL_DEVICE_COMPONENTS, {"dev": dev}),  # booleans and bytes
        (SEL_LATEST, None),
        (LOCK_DEVICE, {"dev": dev}),  # FOR UPDATE on PostgreSQL, a plain SELECT on SQLite
    ]
    with store._tx() as tx:
        for stmt, params in cases:
            fast = tx.rows(stmt, params)
            assert fast, stmt
            assert _plain(fast) == _plain(tx.conn.execute(stmt, params or {}).all()), stmt
            assert _went_fast(store, stmt), stmt
        by_kid = tx.rows(SEL_DEVICE_BY_KID, {"kid": b"k" * 32})[0]
        assert isinstance(by_kid[1], bytes) and isinstance(by_kid[3], bytes)  # bytea comes back as bytes
        assert tx.rows(SEL_DEVICE_BY_KID, {"kid": b"nobody"}) == []


def test_fast_writes_count_rows_return_ids_and_roll_back(store: TamStore) -> None:
    dev = store.add_device(kid=b"k" * 32, alg=-7, public_key=b"PEM", now=1.0).id
    first = store.start_session(2.0, device_id=dev, transport_identity="x")
    second = store.start_session(2.5, device_id=None, transport_identity=None)
    assert second > first
    assert [s[:3] for s in store.sessions()] == [(first, dev, 2.0), (second, None, 2.5)]
    out = store.add_outstanding(
        session_id=first, device_id=dev, kind="query", token=b"t", challenge=None, now=2.0, lifetime=60.0,
        cap=4, data={"a": 1},
    )  # fmt: skip
    assert store.outstanding() == [out]  # the id RETURNING gave is the row's
    assert store.claim(out.id, dev) is True
    assert store.claim(out.id, dev) is False  # no longer open: the conditional UPDATE matched nothing
    with pytest.raises(RuntimeError), store.atomic():  # rolled back with the transaction
        store.end_session(first, 3.0, "success")
        store.start_session(3.0, device_id=dev, transport_identity="gone")
        raise RuntimeError
    assert [s[4] for s in store.sessions()] == [None, None]
    assert store.end_session(first, 4.0, "success") == 2.0  # UPDATE ... RETURNING started_at
    assert store.end_session(first, 5.0, "again") is None  # ended already: no row
    assert [s[4] for s in store.sessions()] == ["success", None]
    with store._tx() as tx:
        assert tx.run(CLAIM, {"oid": out.id + 100, "dev": dev}) == 0
        assert (
            tx.insert_id(INS_SESSION, {"device_id": None, "transport_identity": "y", "started_at": 6.0})
            > second
        )
        assert _went_fast(store, CLAIM) and (store.embedded or _went_fast(store, INS_SESSION))


@pytest.mark.parametrize("count", [1, 3, 20])
def test_run_many_writes_every_row_in_order(store: TamStore, count: int) -> None:
    """run_many (queued for the commit over PostgreSQL): every row written, in order, and rolled
    back with the transaction."""
    rows = [{"session_id": None, "at": float(i), "event": f"e{i}", "detail": "d"} for i in range(count)]
    with pytest.raises(RuntimeError), store.atomic(), store._tx() as tx:
        tx.run_many(INS_AUDIT, rows)
        raise RuntimeError
    assert store.audit_log() == []
    with store._tx() as tx:
        tx.run_many(INS_AUDIT, rows)
    assert store.audit_log() == [(None, float(i), f"e{i}", "d") for i in range(count)]
    store.audit(None, 99.0, "via-flush", "x")  # the store's own path: flush_audit at commit
    assert store.audit_log()[-1] == (None, 99.0, "via-flush", "x")


def test_driver_errors_become_store_errors(store: TamStore) -> None:
    """A constraint violated by a fast-path statement (the driver's own exception, not SQLAlchemy's)
    is a StoreError, nothing of the transaction stays, and the store goes on working."""
    dev = store.add_device(kid=b"k" * 32, alg=-7, public_key=b"PEM", now=1.0).id
    row = {
        "device_id": dev, "component_key": b"key", "installed_seq": 1, "wanted": False,
        "wanted_min_seq": None, "unneeded": False, "updated_at": 1.0,
    }  # fmt: skip
    with pytest.raises(StoreError, match="constraint violated"), store._tx() as tx:
        tx.run_many(INS_AUDIT, [{"session_id": None, "at": 1.0, "event": "lost", "detail": ""}])
        tx.run_many(INS_DC, [row, row])  # the same primary key twice
    assert store.audit_log() == [] and store.device_components(dev) == []
    store.set_device_components(dev, 2.0, installed={CID: 4})
    assert [c.installed_seq for c in store.device_components(dev)] == [4]


def test_lost_postgresql_connection_is_replaced(
    pg_server: str, new_pg_database: Callable[[str], str]
) -> None:
    """The server ends the store's connection: the next call fails with StoreError (from psycopg, on
    the fast path), the one after runs on a new connection."""
    import psycopg

    url = new_pg_database("fp_lost_connection")
    store = TamStore(url)
    try:
        dev = store.add_device(kid=b"k" * 32, alg=-7, public_key=b"PEM", now=1.0).id
        with store._tx() as tx:
            pid = int(tx.conn.exec_driver_sql("SELECT pg_backend_pid()").scalar_one())
        plain = pg_server.replace("postgresql+psycopg://", "postgresql://")
        with psycopg.connect(plain, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        with pytest.raises(StoreError, match="failure"):
            store.device_by_id(dev)
        device = store.device_by_id(dev)
        assert device is not None and device.kid == b"k" * 32
    finally:
        store.close()


@pytest.mark.parametrize("count", [1, 2, AUDIT_ROWS_AT_ONCE + 1])
def test_audit_rows_of_a_message_written_at_commit_in_order(store: TamStore, count: int) -> None:
    """A message's audit rows go in one multi-row INSERT over PostgreSQL (up to AUDIT_ROWS_AT_ONCE,
    else executemany): all of them, in order, only if the transaction commits."""
    sid = store.start_session(1.0, device_id=None, transport_identity="a")
    with pytest.raises(RuntimeError), store.atomic():
        for i in range(count):
            store.audit(sid, float(i), f"e{i}", "lost")
        raise RuntimeError
    with store.atomic():
        for i in range(count):
            store.audit(sid, 2.0 + i, f"e{i}", f"d{i}" * i)
    expected = [(sid, 1.0, "session-start", "a")] + [
        (sid, 2.0 + i, f"e{i}", f"d{i}" * i) for i in range(count)
    ]
    assert store.audit_log(sid) == expected
    if not store.embedded and count <= AUDIT_ROWS_AT_ONCE:
        assert _went_fast(store, insert_audit_rows(count))


def test_later_writes_run_before_the_next_statement_and_fail_there(store: TamStore) -> None:
    """`Tx.later` (over PostgreSQL: queued, sent with the next statement): the next statement sees the
    write; a queued write that fails raises StoreError at the next round trip (or the commit) and
    the whole transaction is rolled back; the store goes on working."""
    dev = store.add_device(kid=b"k" * 32, alg=-7, public_key=b"PEM", now=1.0).id
    sid = store.start_session(2.0, device_id=None, transport_identity="a")
    with store.atomic(), store._tx() as tx:
        tx.later(BIND_SESSION, {"sid": sid, "dev": dev})
        seen = tx.rows(SEL_DEVICE_BY_ID, {"id": dev})  # one round trip carries both, in order
        assert seen and seen[0][0] == dev
        assert [s[1] for s in store.sessions()] == [dev]  # SQLAlchemy's statement runs after it
    row = {
        "device_id": dev, "component_key": component_key(CID), "installed_seq": 1, "wanted": False,
        "wanted_min_seq": None, "unneeded": False, "updated_at": 1.0,
    }  # fmt: skip
    with pytest.raises(StoreError, match="constraint violated"), store._tx() as tx:
        tx.later(BIND_SESSION, {"sid": sid, "dev": None})
        tx.later(INS_DC, row)
        tx.later(INS_DC, row)  # the same primary key twice: fails at commit
    assert [s[1] for s in store.sessions()] == [dev]  # the first write was rolled back with it
    with pytest.raises(StoreError, match="constraint violated"), store._tx() as tx:
        tx.later(INS_DC, row)
        tx.later(INS_DC, row)
        tx.rows(SEL_DEVICE_BY_ID, {"id": dev})  # fails here, at the next statement
        raise AssertionError("not reached")
    assert store.device_components(dev) == []
    with store._tx() as tx:
        tx.later(INS_DC, row)
    assert [c.installed_seq for c in store.device_components(dev)] == [1]


def test_read_ahead_gives_the_same_rows_without_a_round_trip(store: TamStore) -> None:
    """`Tx.rows_reading_ahead`: the statement's rows, and the transaction's next `rows` of the
    statement read ahead gets what a plain read gives, from the same round trip over PostgreSQL; a
    statement through SQLAlchemy (which may write the catalog) drops what was read ahead."""
    dev = store.add_device(kid=b"k" * 32, alg=-7, public_key=b"PEM", now=1.0).id
    store.set_device_components(dev, 2.0, installed={CID: 3})
    store.add_component(component_id=CID, sequence_number=5, envelope=b"E", now=5.0)
    with store.atomic(), store._tx() as tx:
        plain_dc, plain_latest = tx.rows(SEL_DEVICE_COMPONENTS, {"dev": dev}), tx.rows(SEL_LATEST)
        wire = tx._wire
        before = wire.round_trips if wire is not None else 0
        assert tx.rows_reading_ahead(SEL_DEVICE_COMPONENTS, {"dev": dev}, (SEL_LATEST, {})) == plain_dc
        assert tx.rows(SEL_LATEST) == plain_latest
        if wire is not None:
            assert wire.round_trips == before + 1
        # statements with values too: read ahead for these values, read again for others
        other = store.add_device(kid=b"o" * 32, alg=-7, public_key=b"PEM", now=1.0).id
        before = wire.round_trips if wire is not None else 0
        tx.rows_reading_ahead(SEL_LATEST, {}, (SEL_DEVICE_COMPONENTS, {"dev": dev}))
        assert tx.rows(SEL_DEVICE_COMPONENTS, {"dev": other}) == []
        assert tx.rows(SEL_DEVICE_COMPONENTS, {"dev": dev}) == plain_dc
        if wire is not None:
            assert wire.round_trips == before + 2  # the read ahead, and the read for `other`
        tx.rows_reading_ahead(SEL_DEVICE_COMPONENTS, {"dev": dev}, (SEL_LATEST, {}))
        store.add_component(component_id=CID, sequence_number=6, envelope=b"F", now=6.0)
        assert [r[1] for r in tx.rows(SEL_LATEST)] == [6]  # read again, not the rows read ahead


def test_a_part_of_a_batch_run_at_once_does_not_use_an_earlier_part_s_read_ahead(store: TamStore) -> None:
    """`TamStore.part()` (a batch's request without a savepoint): rows the previous request read
    ahead and did not use are dropped, since it may have written them since."""
    dev = store.add_device(kid=b"k" * 32, alg=-7, public_key=b"PEM", now=1.0).id
    row = {
        "device_id": dev, "component_key": component_key(CID), "installed_seq": 4, "wanted": False,
        "wanted_min_seq": None, "unneeded": False, "updated_at": 3.0,
    }  # fmt: skip
    with store.atomic(), store._tx() as tx:
        with store.part():
            tx.rows_reading_ahead(SEL_LATEST, {}, (SEL_DEVICE_COMPONENTS, {"dev": dev}))  # none yet; not used
            tx.later(INS_DC, row)
        with store.part():
            assert [r[1] for r in tx.rows(SEL_DEVICE_COMPONENTS, {"dev": dev})] == [4]
    with pytest.raises(RuntimeError, match="inside atomic"):
        store.part()


def test_sqlite_store_needs_no_psycopg(tmp_path: Path) -> None:
    """PostgreSQL's fast path (store/tam_pg.py) imports psycopg, an optional extra: without it the
    store still opens and serves a SQLite database."""
    code = (
        "import sys; sys.modules['psycopg'] = None\n"
        "from teep_coap.store.tam_db import TamStore\n"
        f"s = TamStore('sqlite:///{tmp_path / 'tam.sqlite'}')\n"
        "d = s.add_device(kid=b'k' * 32, alg=-7, public_key=b'P', now=1.0)\n"
        "assert s.device_by_kid(b'k' * 32) == d\n"
        "print('ok')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"
