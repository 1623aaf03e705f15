"""The SQLite fast path of the store (`Tx.rows` / `Tx.run`): the driver's connection with statements
compiled once must give what SQLAlchemy gives for the same statements, literals included."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from teep_coap.store.tam_db import TamStore
from teep_coap.store.tam_sql import (
    CLAIM,
    SEL_DEVICE_BY_KID,
    SEL_DEVICE_BY_TID,
    SEL_DEVICE_COMPONENTS,
    SEL_LATEST,
    SEL_OPEN_OF_DEVICE,
    SEL_OPEN_UNBOUND,
)
from teep_coap.store.tam_tx import _SQLITE_COMPILED

CID = (b"TEEP-Device", b"ta")


@pytest.fixture
def store(tmp_path: Path) -> Iterator[TamStore]:
    s = TamStore(f"sqlite:///{tmp_path / 'tam.sqlite'}")
    yield s
    s.close()


def _plain(rows: Any) -> list[tuple[Any, ...]]:
    return [tuple(int(v) if isinstance(v, bool) else v for v in r) for r in rows]


def test_fast_rows_equal_sqlalchemy_rows(store: TamStore) -> None:
    dev = store.add_device(kid=b"k" * 32, alg=-7, public_key=b"PEM", now=1.0, psk_identity="d1").id
    store.add_outstanding(
        session_id=store.start_session(2.0, device_id=dev, transport_identity="d1"),
        device_id=dev, kind="query", token=b"t1", challenge=None, now=2.0, lifetime=60.0, cap=4,
    )  # fmt: skip
    store.add_outstanding(
        session_id=store.start_session(3.0, device_id=None, transport_identity=None),
        device_id=None, kind="query", token=None, challenge=b"c", now=3.0, lifetime=60.0, cap=4,
    )  # fmt: skip
    store.set_device_components(dev, 4.0, installed={CID: 3}, wanted={CID: 5})
    store.add_component(component_id=CID, sequence_number=5, envelope=b"E", now=5.0)
    cases = [
        (SEL_DEVICE_BY_KID, {"kid": b"k" * 32}),
        (SEL_DEVICE_BY_TID, {"tid": "d1"}),
        (SEL_OPEN_OF_DEVICE, {"dev": dev}),  # `state = 'open'` is a literal bound by SQLAlchemy
        (SEL_OPEN_UNBOUND, None),
        (SEL_DEVICE_COMPONENTS, {"dev": dev}),  # booleans and bytes
        (SEL_LATEST, None),
    ]
    with store._tx() as tx:
        for stmt, params in cases:
            fast = tx.rows(stmt, params)
            assert fast, stmt
            assert _plain(fast) == _plain(tx.conn.execute(stmt, params or {}).all()), stmt
            assert _SQLITE_COMPILED[id(stmt)][0] is stmt  # it went the driver's way


def test_fast_run_counts_rows_and_writes_in_the_transaction(store: TamStore) -> None:
    dev = store.add_device(kid=b"k" * 32, alg=-7, public_key=b"PEM", now=1.0).id
    sid = store.start_session(2.0, device_id=dev, transport_identity=None)
    out = store.add_outstanding(
        session_id=sid, device_id=dev, kind="query", token=b"t", challenge=None, now=2.0, lifetime=60.0,
        cap=4,
    )  # fmt: skip
    assert store.claim(out.id, dev) is True
    assert store.claim(out.id, dev) is False  # no longer open: the conditional UPDATE matched nothing
    with pytest.raises(RuntimeError), store.atomic():  # rolled back with the transaction
        store.end_session(sid, 3.0, "success")
        raise RuntimeError
    assert [s[4] for s in store.sessions()] == [None]
    assert store.end_session(sid, 4.0, "success") == 2.0  # UPDATE ... RETURNING started_at
    assert store.end_session(sid, 5.0, "again") is None  # ended already: no row
    assert [s[4] for s in store.sessions()] == ["success"]
    with store._tx() as tx:
        assert tx.run(CLAIM, {"oid": out.id + 100, "dev": dev}) == 0
