"""The TAM store's per-device component rows (installed / wanted / unneeded): read, replaced from a
device's report, changed by a successful Update. A part of `TamStore` (`tam_db`), kept apart for size."""

from __future__ import annotations

from collections.abc import Sequence

from teep_coap.protocol.records import ComponentId, DeviceComponent, component_from_key, component_key
from teep_coap.store.tam_sql import (
    INS_DC,
    LOCK_DEVICE,
    MARK_REMOVED,
    SEL_DEVICE_COMPONENTS,
    SEL_LATEST,
    UPD_DC,
    UPSERT_INSTALLED,
    ComponentEdit,
)
from teep_coap.store.tam_tx import TamDatabase, Tx


class DeviceComponentStore(TamDatabase):
    """The device_components table (every method one transaction, or part of the caller's `atomic()`)."""

    def device_components(self, device_id: int) -> list[DeviceComponent]:
        with self._tx() as tx:
            return [
                DeviceComponent(component_from_key(r[0]), r[1], bool(r[2]), r[3], bool(r[4]))
                for r in tx.conn.execute(SEL_DEVICE_COMPONENTS, {"dev": device_id})
            ]

    def _dc_rows(self, tx: Tx, device_id: int) -> dict[bytes, ComponentEdit]:
        """The device's component rows, its device row locked until the transaction ends. Over
        PostgreSQL the catalog's latest versions are read in the same round trip: the TAM plans
        from them right after it records a device's report (`latest_components`)."""
        self._lock_device(tx, device_id)
        return {
            r[0]: ComponentEdit(r[0], r[1], bool(r[2]), r[3], bool(r[4]))
            for r in tx.rows_reading_ahead(SEL_DEVICE_COMPONENTS, {"dev": device_id}, (SEL_LATEST, {}))
        }

    def _lock_device(self, tx: Tx, device_id: int) -> None:
        """Lock the device's row until commit (PostgreSQL), unless this transaction wrote it already
        (touch_device); SQLite's BEGIN IMMEDIATE serializes writers anyway."""
        if not self._sqlite and device_id not in tx.locked:
            tx.later(LOCK_DEVICE, {"dev": device_id})  # runs before the transaction's next statement
            tx.locked.add(device_id)

    def _write_dc(self, tx: Tx, device_id: int, now: float, rows: Sequence[ComponentEdit]) -> None:
        """Insert the new rows and update the others: at most two executemany statements."""
        new = [
            dict(r.params(device_id, now), device_id=device_id, component_key=r.key) for r in rows if r.new
        ]
        old = [dict(r.params(device_id, now), b_dev=device_id, b_key=r.key) for r in rows if not r.new]
        if new:
            tx.run_many(INS_DC, new)
        if old:
            tx.run_many(UPD_DC, old)

    def set_device_components(
        self,
        device_id: int,
        now: float,
        *,
        installed: dict[ComponentId, int | None] | None = None,
        wanted: dict[ComponentId, int | None] | None = None,
        unneeded: Sequence[ComponentId] | None = None,
    ) -> list[DeviceComponent]:
        """Replace what the device reported: `installed` (id → seq or None if unknown) replaces the whole
        installed set when given; `wanted`/`unneeded` replace those flags when given. Returns the
        device's components afterwards (ordered like `device_components`)."""
        with self._tx() as tx:
            rows = self._dc_rows(tx, device_id)

            def row_for(cid: Sequence[bytes]) -> ComponentEdit:
                key = component_key(cid)
                if key not in rows:
                    rows[key] = ComponentEdit(key, None, False, None, False, new=True)
                return rows[key]

            if installed is not None:
                previous = {k: r.installed_seq for k, r in rows.items()}
                for r in rows.values():
                    r.installed_seq = None
                for cid, seq in installed.items():
                    # tc-list carries no sequence number: keep the one we recorded, else -1 = unknown.
                    known = previous.get(component_key(cid))
                    row_for(cid).installed_seq = (
                        seq if seq is not None else (known if known is not None else -1)
                    )
            if wanted is not None:
                for r in rows.values():
                    r.wanted, r.wanted_min_seq = False, None
                for cid, min_seq in wanted.items():
                    row = row_for(cid)
                    row.wanted, row.wanted_min_seq = True, min_seq
            if unneeded is not None:
                for r in rows.values():
                    r.unneeded = False
                for cid in unneeded:
                    row_for(cid).unneeded = True
            self._write_dc(tx, device_id, now, list(rows.values()))
            return [
                DeviceComponent(
                    component_from_key(r.key), r.installed_seq, r.wanted, r.wanted_min_seq, r.unneeded
                )
                for _, r in sorted(rows.items())
            ]

    def record_changes(
        self,
        device_id: int,
        now: float,
        *,
        installed: dict[ComponentId, int],
        removed: Sequence[ComponentId],
    ) -> None:
        """Apply what a successful Update changed on the device: an installed component's row is
        inserted or updated (wanted flags cleared), a removed one's cleared if it exists. Written
        without reading the rows first (an upsert); the device row is locked as for
        set_device_components, so the two never interleave."""
        with self._tx() as tx:
            self._lock_device(tx, device_id)
            if installed:
                tx.run_many(
                    UPSERT_INSTALLED[self._engine.dialect.name],
                    [
                        {"device_id": device_id, "component_key": component_key(cid), "installed_seq": seq,
                         "updated_at": now}
                        for cid, seq in installed.items()
                    ],
                )  # fmt: skip
            if removed:
                tx.run_many(
                    MARK_REMOVED,
                    [{"b_dev": device_id, "b_key": component_key(cid), "updated_at": now} for cid in removed],
                )
