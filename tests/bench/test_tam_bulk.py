"""Bulk registration (`store/tam_bulk.py`) writes the rows `TamStore.add_device` writes, in one
transaction: all devices or, on any clash, none."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import create_engine, delete, select

from teep_coap.bench.fleet import Fleet
from teep_coap.protocol.records import DuplicateDevice
from teep_coap.security.keys import generate_key
from teep_coap.store.tam_bulk import NewDevice, add_devices
from teep_coap.store.tam_db import TamStore
from teep_coap.store.tam_sql import devices_t

NOW = 1_700_000_000.25


def _rows(db: Path) -> list[tuple[object, ...]]:
    with sqlite3.connect(db) as conn:
        return conn.execute("SELECT * FROM devices ORDER BY id").fetchall()


def _devices(n: int) -> list[NewDevice]:
    fleet = Fleet(n, generate_key("esp256").public, b"bulk test")
    devices = [fleet.registration(i) for i in range(n)]
    # one device without PSK identity and one with an OSCORE id: the optional columns too
    devices[1] = NewDevice(devices[1].kid, devices[1].alg, devices[1].public_key, "no-psk")
    devices[2] = NewDevice(devices[2].kid, devices[2].alg, devices[2].public_key, "osc", "osc", "0a")
    return devices


def test_bulk_rows_equal_add_device_rows(tmp_path: Path) -> None:
    devices = _devices(7)
    one, bulk = tmp_path / "one.sqlite", tmp_path / "bulk.sqlite"
    store = TamStore(f"sqlite:///{one}")
    for d in devices:
        store.add_device(
            kid=d.kid, alg=d.alg, public_key=d.public_key, now=NOW, name=d.name,
            psk_identity=d.psk_identity, oscore_id=d.oscore_id,
        )  # fmt: skip
    store.close()
    store = TamStore(f"sqlite:///{bulk}")
    assert add_devices(store, iter(devices), NOW, chunk=3) == 7  # 3 chunks: 3 + 3 + 1
    # the store reads a bulk-registered device like any other
    found = store.device_by_kid(devices[4].kid)
    assert found is not None and found.name == devices[4].name and found.id == 5
    assert store.device_by_transport_identity(devices[3].name or "") is not None
    store.close()
    rows = _rows(bulk)
    assert len(rows) == 7
    assert rows == _rows(one)


def test_clash_within_the_batch_registers_none(tmp_path: Path) -> None:
    devices = _devices(5)
    devices.append(devices[0])  # the same kid twice
    store = TamStore(f"sqlite:///{tmp_path / 'tam.sqlite'}")
    with pytest.raises(DuplicateDevice, match="no device of this batch"):
        add_devices(store, devices, NOW, chunk=2)
    store.close()
    assert _rows(tmp_path / "tam.sqlite") == []  # the chunks before the clash were rolled back


def test_clash_with_a_registered_device(tmp_path: Path) -> None:
    devices = _devices(4)
    store = TamStore(f"sqlite:///{tmp_path / 'tam.sqlite'}")
    add_devices(store, devices[:2], NOW)
    # a new key whose PSK identity is taken: refused like add_device refuses it
    other = generate_key("esp256").public
    clash = NewDevice(other.kid, other.alg, other.to_pem(), "x", devices[0].psk_identity)
    with pytest.raises(DuplicateDevice):
        add_devices(store, [devices[2], clash], NOW)
    with pytest.raises(DuplicateDevice):
        store.add_device(kid=devices[1].kid, alg=devices[1].alg, public_key=devices[1].public_key, now=NOW)
    assert add_devices(store, devices[2:], NOW) == 2  # the refused batch left nothing behind
    store.close()
    assert [r[1] for r in _rows(tmp_path / "tam.sqlite")] == [d.kid for d in devices]


def test_empty_and_bad_chunk(tmp_path: Path) -> None:
    store = TamStore(f"sqlite:///{tmp_path / 'tam.sqlite'}")
    assert add_devices(store, [], NOW) == 0
    with pytest.raises(ValueError):
        add_devices(store, _devices(3), NOW, chunk=0)
    store.close()


def _pg_rows(url: str) -> list[tuple[object, ...]]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(select(devices_t).order_by(devices_t.c.id)).all()
            return [tuple(r)[1:] for r in rows]  # ids differ between the two fills (a sequence)
    finally:
        engine.dispose()


def _pg_clear(url: str) -> None:
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(delete(devices_t))
    finally:
        engine.dispose()


def test_bulk_rows_equal_add_device_rows_on_postgresql(new_pg_database: Callable[[str], str]) -> None:
    pg_url = new_pg_database("bulk")
    devices = _devices(5)
    store = TamStore(pg_url)
    try:
        for d in devices:
            store.add_device(
                kid=d.kid, alg=d.alg, public_key=d.public_key, now=NOW, name=d.name,
                psk_identity=d.psk_identity, oscore_id=d.oscore_id,
            )  # fmt: skip
        one = _pg_rows(pg_url)
        _pg_clear(pg_url)
        with pytest.raises(DuplicateDevice):  # a repeated kid: nothing registered
            add_devices(store, [*devices, devices[0]], NOW, chunk=2)
        assert _pg_rows(pg_url) == []
        assert add_devices(store, devices, NOW, chunk=2) == 5
    finally:
        store.close()
    assert len(one) == 5 and _pg_rows(pg_url) == one
