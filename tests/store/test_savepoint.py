"""`TamStore.savepoint()` on a real SQLite file and a real PostgreSQL: inside one transaction, a part
that raises is undone alone (its rows, its audit rows, the device locks it noted) and the rest of the
transaction commits; parts that do not raise commit with it. The engine's group commit runs each
message of a batch in one."""

from __future__ import annotations

import pytest

from teep_coap.store.tam_db import OPEN, StoreError, TamStore


class Refused(Exception):
    """What a refused message raises inside its part."""


def _device(store: TamStore, kid: bytes) -> int:
    return store.add_device(kid=kid, alg=-7, public_key=b"PEM", now=1.0).id


def _request(store: TamStore, sid: int, dev: int, token: bytes, now: float) -> None:
    store.record_outstanding(
        session_id=sid, device_id=dev, kind="query", token=token, challenge=None, now=now, lifetime=100.0,
        cap=3, data={"n": now},
    )  # fmt: skip


def test_a_part_that_raises_is_undone_alone(store: TamStore) -> None:
    first, second, third = (_device(store, bytes([i]) * 32) for i in range(3))
    with store.atomic():
        with store.savepoint():
            a = store.start_session(10.0, device_id=first, transport_identity="a")
            store.audit(a, 10.0, "kept", "a")
            _request(store, a, first, b"a" * 16, 10.0)
        with pytest.raises(Refused), store.savepoint():
            b = store.start_session(11.0, device_id=second, transport_identity="b")
            store.audit(b, 11.0, "undone", "b")
            _request(store, b, second, b"b" * 16, 11.0)
            raise Refused
        store.audit(None, 11.5, "refused", "written after the undo, in the same transaction")
        with store.savepoint():
            c = store.start_session(12.0, device_id=third, transport_identity="c")
            _request(store, c, third, b"c" * 16, 12.0)
    assert [s[2] for s in store.sessions()] == [10.0, 12.0]  # started_at
    assert [(o.token, o.state) for o in store.outstanding(first)] == [(b"a" * 16, OPEN)]
    assert store.outstanding(second) == []
    assert [(o.token, o.state) for o in store.outstanding(third)] == [(b"c" * 16, OPEN)]
    events = [e[2] for e in store.audit_log()]
    assert "kept" in events and "refused" in events and "undone" not in events


def test_a_store_failure_in_a_part_fails_the_whole_transaction(store: TamStore) -> None:
    dev = _device(store, b"d" * 32)
    sid = store.start_session(1.0, device_id=dev, transport_identity=None)
    _request(store, sid, dev, b"t" * 16, 1.0)
    with pytest.raises(StoreError), store.atomic():
        with store.savepoint():
            store.start_session(2.0, device_id=dev, transport_identity="lost with the transaction")
        with store.savepoint():
            _request(store, sid, dev, b"t" * 16, 2.0)  # the same open token: refused by the database
    assert [s[2] for s in store.sessions()] == [1.0]  # started_at
    # the store is usable afterwards
    with store.atomic(), store.savepoint():
        store.start_session(3.0, device_id=dev, transport_identity="after")
    assert [s[2] for s in store.sessions()] == [1.0, 3.0]


def test_a_savepoint_needs_a_transaction(store: TamStore) -> None:
    with pytest.raises(RuntimeError, match="inside atomic"), store.savepoint():
        pass
