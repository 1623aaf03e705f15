"""`TamStore.start_session_for` on both databases (over PostgreSQL one statement: the device look-up
inside the session's INSERT): it must find the device exactly as `device_by_transport_identity` does,
store one session and its audit row, and store nothing when no device has the identity."""

from __future__ import annotations

from dataclasses import replace

import pytest

from teep_coap.protocol.records import Device
from teep_coap.store.tam_db import TamStore
from teep_coap.store.tam_sql import START_SESSION_FOR
from teep_coap.store.tam_tx import _PG_COMPILED


def _add(store: TamStore, kid: bytes, **kw: str | None) -> Device:
    return store.add_device(kid=kid, alg=-7, public_key=b"PEM-" + kid, now=1.0, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize("identity", ["psk-a", "osc-a"])
def test_starts_the_session_of_the_device_the_identity_names(store: TamStore, identity: str) -> None:
    _add(store, b"b" * 32, psk_identity="psk-b", oscore_id="osc-b")
    mine = _add(store, b"a" * 32, name="a", psk_identity="psk-a", oscore_id="osc-a")
    store.touch_device(mine.id, 1.5, attested_claims={"ueid": "x"}, negotiated={"suite": 1})
    started = store.start_session_for(2.0, identity)
    assert started is not None
    device, sid = started
    # The device as the look-up returns it, its negotiated parameters and last contact included; its
    # attested claims, which the engine never reads, are not.
    found = store.device_by_transport_identity(identity)
    assert found is not None and found.attested_claims == {"ueid": "x"}
    assert device == replace(found, attested_claims=None)
    assert device.kid == b"a" * 32 and device.negotiated == {"suite": 1} and device.last_contact == 1.5
    assert [s[:4] for s in store.sessions()] == [(sid, mine.id, 2.0, None)]
    assert store.audit_log(sid) == [(sid, 2.0, "session-start", identity)]
    if not store.embedded:
        assert id(START_SESSION_FOR) in _PG_COMPILED  # the one-statement path ran


def test_unknown_identity_stores_nothing(store: TamStore) -> None:
    _add(store, b"a" * 32, psk_identity="psk-a")
    assert store.start_session_for(2.0, "nobody") is None
    assert store.sessions() == []
    assert store.audit_log() == []
    # The store is still usable: the next connect of a known device starts its session.
    started = store.start_session_for(3.0, "psk-a")
    assert started is not None and [s[0] for s in store.sessions()] == [started[1]]


def test_identity_of_two_devices_starts_one_session(store: TamStore) -> None:
    """One device's PSK identity may equal another's OSCORE id (registration refuses only clashes in
    the same column): the connect still starts exactly one session, for the device registered first."""
    first = _add(store, b"a" * 32, psk_identity="same")
    _add(store, b"b" * 32, oscore_id="same")
    started = store.start_session_for(2.0, "same")
    assert started is not None
    assert started[0].id == first.id
    assert [(s[0], s[1]) for s in store.sessions()] == [(started[1], first.id)]


def test_audit_rows_waiting_in_the_transaction_are_written_with_it(store: TamStore) -> None:
    """Over PostgreSQL rows the transaction audited before ride in a WITH of the next statement, which
    here has a WITH of its own: both must be written, in one transaction."""
    _add(store, b"a" * 32, psk_identity="psk-a")
    with store.atomic():
        store.audit(None, 1.5, "before", "queued")
        started = store.start_session_for(2.0, "psk-a")
    assert started is not None
    sid = started[1]
    assert store.audit_log() == [(None, 1.5, "before", "queued"), (sid, 2.0, "session-start", "psk-a")]
