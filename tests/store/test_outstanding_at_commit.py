"""`record_outstanding` (the engine's add_outstanding that reads nothing back) on a real SQLite file and
a real PostgreSQL, where a device's request is one statement sent with the COMMIT: the cap supersedes
the oldest, a duplicate open token still fails (now at the COMMIT, rolling the whole transaction
back) with the same StoreError, and a request another worker claims meanwhile is not superseded."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import create_engine, inspect, text

from teep_coap.store.tam_db import ANSWERED, OPEN, SUPERSEDED, StoreError, TamStore
from teep_coap.store.tam_schema import OPEN_TOKEN_INDEX, create_schema


def _device(store: TamStore, kid: bytes = b"k" * 32) -> int:
    return store.add_device(kid=kid, alg=-7, public_key=b"PEM", now=1.0).id


def _record(
    store: TamStore, sid: int, dev: int | None, token: bytes | None, *, now: float, cap: int = 3
) -> None:
    store.record_outstanding(
        session_id=sid, device_id=dev, kind="query", token=token, challenge=None, now=now, lifetime=100.0,
        cap=cap, data={"n": now},
    )  # fmt: skip


def test_the_cap_supersedes_the_oldest(store: TamStore) -> None:
    dev = _device(store)
    sid = store.start_session(1.0, device_id=dev, transport_identity=None)
    for i in range(5):
        _record(store, sid, dev, bytes([i]) * 16, now=10.0 + i)
    rows = store.outstanding(dev)
    assert [o.state for o in rows] == [SUPERSEDED, SUPERSEDED, OPEN, OPEN, OPEN]
    assert [o.token for o in rows] == [bytes([i]) * 16 for i in range(5)]
    assert [o.data for o in rows] == [{"n": 10.0 + i} for i in range(5)]
    assert {o.session_id for o in rows} == {sid}


def test_several_in_one_transaction_with_audit_rows(store: TamStore) -> None:
    """As the engine does: audit, then the request, in one transaction (over PostgreSQL the audit
    rows ride in the request's statement); a later request of the same transaction sees the earlier
    ones, so the cap holds inside it too."""
    dev = _device(store)
    sid = store.start_session(1.0, device_id=dev, transport_identity=None)
    with store.atomic():
        for i in range(4):
            store.audit(sid, 10.0 + i, "send-query-request", str(i))
            _record(store, sid, dev, bytes([i]) * 16, now=10.0 + i, cap=2)
    assert [o.state for o in store.outstanding(dev)] == [SUPERSEDED, SUPERSEDED, OPEN, OPEN]
    assert [e[3] for e in store.audit_log(sid) if e[2] == "send-query-request"] == ["0", "1", "2", "3"]


def test_a_duplicate_open_token_rolls_the_message_back(store: TamStore) -> None:
    dev = _device(store)
    sid = store.start_session(1.0, device_id=dev, transport_identity=None)
    _record(store, sid, dev, b"t" * 16, now=10.0, cap=1)
    before = store.audit_log()
    with pytest.raises(StoreError) as refused, store.atomic():
        store.start_session(11.0, device_id=dev, transport_identity="again")
        store.audit(None, 11.0, "would-be-lost")
        # cap 1 would supersede the open request; the duplicate token is refused first
        _record(store, sid, dev, b"t" * 16, now=11.0, cap=1)
    assert str(refused.value) == "token already outstanding for this device"
    assert [(o.token, o.state) for o in store.outstanding(dev)] == [(b"t" * 16, OPEN)]
    assert len(store.sessions()) == 1 and store.audit_log() == before
    # the store is usable after the failed COMMIT
    _record(store, sid, dev, b"u" * 16, now=12.0, cap=1)
    assert [(o.token, o.state) for o in store.outstanding(dev)] == [
        (b"t" * 16, SUPERSEDED),
        (b"u" * 16, OPEN),
    ]


def test_the_token_is_unique_only_among_one_devices_open_requests(store: TamStore) -> None:
    one, two = _device(store), _device(store, kid=b"j" * 32)
    sid = store.start_session(1.0, device_id=one, transport_identity=None)
    _record(store, sid, one, b"t" * 16, now=10.0)
    _record(store, sid, two, b"t" * 16, now=10.0)  # another device
    _record(store, sid, one, None, now=11.0)
    _record(store, sid, one, None, now=12.0)  # no token: nothing to clash
    _record(store, sid, None, b"t" * 16, now=10.0)  # a request of no device yet
    [first] = [o for o in store.outstanding(one) if o.token == b"t" * 16]
    assert store.claim(first.id, one)
    _record(store, sid, one, b"t" * 16, now=13.0, cap=9)  # the first one is answered: not open
    assert sorted(o.state for o in store.outstanding(one) if o.token == b"t" * 16) == [ANSWERED, OPEN]


def test_a_request_claimed_meanwhile_is_not_superseded(new_pg_database: object) -> None:
    """PostgreSQL, two workers: one claims the device's oldest open request and holds the row until it
    commits; the other's request (cap reached) waits for it at its COMMIT, then finds the row no
    longer open and leaves it answered."""
    url = new_pg_database("claimed_meanwhile")  # type: ignore[operator]
    first, second = TamStore(url), TamStore(url + "?options=-c%20lock_timeout%3D10000")
    try:
        dev = _device(first)
        sid = first.start_session(1.0, device_id=dev, transport_identity=None)
        _record(first, sid, dev, b"a" * 16, now=10.0, cap=2)
        _record(first, sid, dev, b"b" * 16, now=11.0, cap=2)
        oldest = first.outstanding(dev)[0]
        failures: list[BaseException] = []

        def record() -> None:
            try:
                _record(second, sid, dev, b"c" * 16, now=12.0, cap=2)
            except BaseException as exc:  # reported by the main thread
                failures.append(exc)

        with first.atomic():
            assert first.claim(oldest.id, dev)
            worker = threading.Thread(target=record)
            worker.start()
            time.sleep(0.5)
            assert worker.is_alive()  # waiting on the claimed row
        worker.join(timeout=20)
        assert not worker.is_alive() and failures == []
        states = {o.token: o.state for o in first.outstanding(dev)}
        assert states == {b"a" * 16: ANSWERED, b"b" * 16: OPEN, b"c" * 16: OPEN}
    finally:
        first.close()
        second.close()


def test_the_token_index_is_postgresqls_alone(tmp_path: Path) -> None:
    """SQLite keeps the store's own duplicate check (test_a_duplicate_open_token_rolls_the_message_back):
    the partial index is not made there, and opening an existing SQLite file reports nothing to add."""
    url = f"sqlite:///{tmp_path / 'tam.sqlite'}"
    TamStore(url).close()
    engine = create_engine(url)
    try:
        assert OPEN_TOKEN_INDEX not in {i["name"] for i in inspect(engine).get_indexes("outstanding")}
        assert create_schema(engine) == []
    finally:
        engine.dispose()


def test_an_older_database_gets_the_token_index_at_open(new_pg_database: Callable[[str], str]) -> None:
    url = new_pg_database("older_token_index")
    store = TamStore(url)
    dev = _device(store)
    sid = store.start_session(1.0, device_id=dev, transport_identity=None)
    _record(store, sid, dev, b"t" * 16, now=10.0)
    store.close()
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(text(f"DROP INDEX {OPEN_TOKEN_INDEX}"))
        reopened = TamStore(url)
        try:
            assert OPEN_TOKEN_INDEX in {i["name"] for i in inspect(engine).get_indexes("outstanding")}
            with pytest.raises(StoreError, match="token already outstanding for this device"):
                _record(reopened, sid, dev, b"t" * 16, now=11.0)
        finally:
            reopened.close()
    finally:
        engine.dispose()
