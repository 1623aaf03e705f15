"""Register many devices in one transaction: the TAM's `add_device` for a whole fleet.

`TamStore.add_device` is one transaction with a clash check per device: fine for an administrator,
about 100 registrations per second for a simulated fleet of 100,000. Here the rows go in with
`executemany`, in chunks (so the caller's iterable is never held whole in memory), inside one
transaction: all of them are registered, or (on any clash) none. The rows are the ones `add_device`
writes; the database's unique constraints on kid, PSK identity and OSCORE id do the clash check that
`add_device` does with a SELECT, and a clash is the same `DuplicateDevice`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from sqlalchemy import insert
from sqlalchemy.exc import IntegrityError

from teep_coap.protocol.records import DuplicateDevice
from teep_coap.store.tam_db import TamStore
from teep_coap.store.tam_sql import devices_t

CHUNK = 2000  # rows per executemany: large enough to amortise the call, small enough to stream


@dataclass(frozen=True, slots=True)
class NewDevice:
    """One device to register (the arguments of `TamStore.add_device` except `now`)."""

    kid: bytes
    alg: int
    public_key: bytes  # PEM
    name: str | None = None
    psk_identity: str | None = None
    oscore_id: str | None = None


def _chunks(devices: Iterable[NewDevice], size: int) -> Iterator[list[NewDevice]]:
    chunk: list[NewDevice] = []
    for d in devices:
        chunk.append(d)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def add_devices(store: TamStore, devices: Iterable[NewDevice], now: float, *, chunk: int = CHUNK) -> int:
    """Register every device of `devices` in one transaction; returns how many.

    Raises `DuplicateDevice` (and registers none) if any kid, PSK identity or OSCORE id is already
    registered or repeats within `devices`."""
    if chunk < 1:
        raise ValueError("chunk must be at least 1")
    count = 0
    with store._tx() as tx:  # the store's own transaction (same package): BEGIN IMMEDIATE on SQLite
        for rows in _chunks(devices, chunk):
            params = [
                {
                    "kid": d.kid,
                    "alg": d.alg,
                    "public_key": d.public_key,
                    "name": d.name,
                    "psk_identity": d.psk_identity,
                    "oscore_id": d.oscore_id,
                    "created_at": now,
                }
                for d in rows
            ]
            try:
                tx.conn.execute(insert(devices_t), params)
            except IntegrityError as exc:
                raise DuplicateDevice(
                    f"bulk registration: a kid, PSK identity or OSCORE id is already registered or"
                    f" repeats ({exc.orig}); no device of this batch was registered"
                ) from None
            count += len(rows)
    return count


__all__ = ["CHUNK", "NewDevice", "add_devices"]
