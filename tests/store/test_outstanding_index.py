"""The indexes the hot path and the minute's sweep walk, on a real SQLite file and a real PostgreSQL:
a device's open requests are found by (device_id, state), so a new request's checks do not read the
device's answered ones; the sweep finds expired requests, silent sessions and spent tokens by
their expiry, not by reading the whole table; a database made before these indexes gets them at its
first open and loses the one they replace."""

from __future__ import annotations

from query_plans import plan_of
from sqlalchemy import create_engine, delete, inspect, text

from teep_coap.store import tam_sql
from teep_coap.store.tam_db import TamStore
from teep_coap.store.tam_schema import DEVICE_STATE_INDEX, SpentTokenRow

EXPIRY_INDEXES = ("ix_outstanding_expires_at", "ix_spent_tokens_expires_at")

NOW = 1_800_000_000.0


def _device_with_history(store: TamStore, answered: int) -> int:
    """A device with `answered` answered requests (one session each) and one open request."""
    dev = store.add_device(kid=b"k" * 32, alg=-7, public_key=b"pem", name="dev-a", now=NOW).id
    for i in range(answered + 1):
        sid = store.start_session(NOW + i, device_id=dev, transport_identity=None)
        store.add_outstanding(
            session_id=sid, device_id=dev, kind="query", token=i.to_bytes(4, "big"), challenge=None,
            now=NOW + i, lifetime=600, cap=4, answered=i < answered,
        )  # fmt: skip
    return dev


def test_a_new_request_checks_the_open_ones_by_index(store: TamStore) -> None:
    dev = _device_with_history(store, 40)
    params = {
        "session_id": 1, "device_id": dev, "kind": "update", "token": b"new!", "challenge": None,
        "state": "open", "created_at": NOW, "expires_at": NOW + 60, "data": "{}", "cap": 4,
    }  # fmt: skip
    plan = plan_of(store, tam_sql.INS_OUTSTANDING_GUARDED[True], params)
    assert DEVICE_STATE_INDEX in plan, plan  # the count of open requests and the duplicate check
    if store.embedded:
        assert "SCAN outstanding" not in plan, plan
    plan = plan_of(store, tam_sql.SEL_OPEN_OF_DEVICE, {"dev": dev})
    assert DEVICE_STATE_INDEX in plan, plan
    # and the answers are those of the open request alone
    assert [r.token for r in store.outstanding(dev) if r.state == "open"] == [(40).to_bytes(4, "big")]


def test_the_sweep_finds_what_expired_by_index(store: TamStore) -> None:
    _device_with_history(store, 40)
    full_scans = ("SCAN outstanding", "SCAN spent_tokens") if store.embedded else ("Seq Scan",)
    for stmt, values, index in [
        (tam_sql.EXPIRE, {"now": NOW}, "ix_outstanding_expires_at"),
        # PostgreSQL may start from the open sessions instead (ix_sessions_ended_at): no scan either
        (tam_sql.ABANDON_SESSIONS, {"cutoff": NOW, "ended_at": NOW}, None),
        (
            delete(SpentTokenRow.__table__).where(SpentTokenRow.expires_at <= NOW),
            {},
            "ix_spent_tokens_expires_at",
        ),
    ]:
        plan = plan_of(store, stmt, values)
        assert not any(scan in plan for scan in full_scans), plan
        assert index is None or index in plan, plan


def test_an_older_database_gets_the_index_at_open(url: str) -> None:
    store = TamStore(url)
    dev = _device_with_history(store, 3)
    store.close()
    engine = create_engine(url)
    with engine.begin() as conn:
        for name in (DEVICE_STATE_INDEX, *EXPIRY_INDEXES):
            conn.execute(text(f"DROP INDEX {name}"))
        conn.execute(text("CREATE INDEX ix_outstanding_device_id ON outstanding (device_id)"))
    reopened = TamStore(url)
    try:
        found = inspect(engine)
        names = {i["name"] for t in ("outstanding", "spent_tokens") for i in found.get_indexes(t)}
        assert {DEVICE_STATE_INDEX, *EXPIRY_INDEXES} <= names and "ix_outstanding_device_id" not in names
        assert [r.token for r in reopened.outstanding(dev) if r.state == "open"] == [(3).to_bytes(4, "big")]
    finally:
        reopened.close()
        engine.dispose()
