"""The TAM store's SQL: pre-built SQLAlchemy Core statements of the hot path, the row converters, and the
in-memory edit of a device's component rows."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import Table, bindparam, delete, exists, func, insert, select, update
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from teep_coap.protocol.records import ANSWERED, OPEN, SUPERSEDED, Device, Outstanding
from teep_coap.store.tam_schema import (
    AuditRow,
    CatalogRow,
    DeviceComponentRow,
    DeviceRow,
    OutstandingRow,
    SessionRow,
    SpentTokenRow,
)

devices_t = cast(Table, DeviceRow.__table__)
sessions_t = cast(Table, SessionRow.__table__)
outstanding_t = cast(Table, OutstandingRow.__table__)
catalog_t = cast(Table, CatalogRow.__table__)
dc_t = cast(Table, DeviceComponentRow.__table__)
audit_t = cast(Table, AuditRow.__table__)
spent_t = cast(Table, SpentTokenRow.__table__)
DEV, SES, OUT, CAT, DCOMP = devices_t.c, sessions_t.c, outstanding_t.c, catalog_t.c, dc_t.c

DEVICE_COLS = (
    DEV.id, DEV.kid, DEV.alg, DEV.public_key, DEV.name, DEV.psk_identity, DEV.oscore_id,
    DEV.attested_claims, DEV.negotiated, DEV.last_contact,
)  # fmt: skip
OUT_COLS = (
    OUT.id, OUT.session_id, OUT.device_id, OUT.kind, OUT.token, OUT.challenge, OUT.state,
    OUT.created_at, OUT.expires_at, OUT.data,
)  # fmt: skip
DC_COLS = (DCOMP.component_key, DCOMP.installed_seq, DCOMP.wanted, DCOMP.wanted_min_seq, DCOMP.unneeded)

SEL_DEVICE_BY_KID = select(*DEVICE_COLS).where(DEV.kid == bindparam("kid"))
SEL_DEVICE_BY_ID = select(*DEVICE_COLS).where(DEV.id == bindparam("id"))
SEL_DEVICE_BY_TID = select(*DEVICE_COLS).where(
    (DEV.psk_identity == bindparam("tid")) | (DEV.oscore_id == bindparam("tid"))
)
TOUCH: dict[tuple[bool, bool], Any] = {}  # touch_device's statements by which columns it sets


def _values(table: Table, *names: str) -> dict[str, Any]:
    return {n: bindparam(n, type_=table.c[n].type) for n in names}


# Inserts with every column bound by name, so one compiled text serves every execution (the fast
# paths of Tx run them on the driver's connection); the new row's id comes back by RETURNING.
INS_SESSION = (
    insert(sessions_t)
    .values(_values(sessions_t, "device_id", "transport_identity", "started_at"))
    .returning(SES.id)
)
AUDIT_COLS = ("session_id", "at", "event", "detail")
INS_AUDIT = insert(audit_t).values(_values(audit_t, *AUDIT_COLS))
_AUDIT_ROWS: dict[int, Any] = {}


def insert_audit_rows(count: int) -> Any:
    """One INSERT of `count` audit rows (binds `session_id_0`, `at_0`, ...): a message's audit rows
    in one round trip over a networked database."""
    stmt = _AUDIT_ROWS.get(count)
    if stmt is None:
        rows = [{c: bindparam(f"{c}_{i}", type_=audit_t.c[c].type) for c in AUDIT_COLS} for i in range(count)]
        stmt = _AUDIT_ROWS[count] = insert(audit_t).values(rows)
    return stmt


END_SESSION = (
    update(sessions_t)
    .where(SES.id == bindparam("sid"), SES.ended_at.is_(None))
    .values(ended_at=bindparam("ended_at"), outcome=bindparam("outcome"))
    .returning(SES.started_at)
)
# Sessions whose every outstanding request expired before `cutoff` and that never ended: the device
# went silent. Candidates come from the outstanding table (live requests only, so it stays small),
# not from a scan of every session ever held.
ABANDON_SESSIONS = (
    update(sessions_t)
    .where(
        SES.ended_at.is_(None),
        SES.id.in_(select(OUT.session_id).where(OUT.expires_at <= bindparam("cutoff"))),
        ~exists().where(OUT.session_id == SES.id, OUT.expires_at > bindparam("cutoff")),
    )
    .values(ended_at=bindparam("ended_at"), outcome="abandoned")
    .returning(SES.id, SES.started_at)
)
BIND_SESSION = update(sessions_t).where(SES.id == bindparam("sid")).values(device_id=bindparam("dev"))
SEL_OPEN_OF_DEVICE = (
    select(OUT.id, OUT.token)
    .where(OUT.state == OPEN, OUT.device_id == bindparam("dev"))
    .order_by(OUT.created_at, OUT.id)
)
SEL_OPEN_UNBOUND = (
    select(OUT.id, OUT.token)
    .where(OUT.state == OPEN, OUT.device_id.is_(None))
    .order_by(OUT.created_at, OUT.id)
)
SUPERSEDE = update(outstanding_t).where(OUT.id.in_(bindparam("ids", expanding=True))).values(state=SUPERSEDED)
_OUT_INSERTED = (
    "session_id",
    "device_id",
    "kind",
    "token",
    "challenge",
    "state",
    "created_at",
    "expires_at",
    "data",
)
INS_OUTSTANDING = insert(outstanding_t).values(_values(outstanding_t, *_OUT_INSERTED)).returning(OUT.id)
CLAIM = (
    update(outstanding_t)
    .where(OUT.id == bindparam("oid"), OUT.state == OPEN)
    .values(state=ANSWERED, device_id=bindparam("dev"))
)
# A spent stateless token: INSERT ... ON CONFLICT DO NOTHING RETURNING, per dialect (the clause is
# not portable Core); a returned row says this call won.
SPEND_TOKEN = {
    name: dialect_insert(spent_t)
    .values(
        key=bindparam("key", type_=spent_t.c.key.type),
        expires_at=bindparam("expires_at", type_=spent_t.c.expires_at.type),
    )
    .on_conflict_do_nothing()
    .returning(spent_t.c.key)
    for name, dialect_insert in (("sqlite", sqlite_insert), ("postgresql", postgresql_insert))
}
EXPIRE = delete(outstanding_t).where(OUT.expires_at <= bindparam("now"))
SEL_DEVICE_COMPONENTS = (
    select(*DC_COLS).where(DCOMP.device_id == bindparam("dev")).order_by(DCOMP.component_key)
)
# Row lock on the device (PostgreSQL; SQLite renders no FOR UPDATE and BEGIN IMMEDIATE already
# serializes writers): two TAM workers serving the same device read-modify-write its component rows
# one after the other, never both inserting the same row or losing the other's update.
LOCK_DEVICE = select(DEV.id).where(DEV.id == bindparam("dev")).with_for_update()
INS_DC = insert(dc_t).values(
    _values(
        dc_t,
        "device_id",
        "component_key",
        "installed_seq",
        "wanted",
        "wanted_min_seq",
        "unneeded",
        "updated_at",
    )
)
UPD_DC = (
    update(dc_t)
    .where(DCOMP.device_id == bindparam("b_dev"), DCOMP.component_key == bindparam("b_key"))
    .values(
        installed_seq=bindparam("installed_seq"),
        wanted=bindparam("wanted"),
        wanted_min_seq=bindparam("wanted_min_seq"),
        unneeded=bindparam("unneeded"),
        updated_at=bindparam("updated_at"),
    )
)
LATEST_SUB = (
    select(CAT.component_key, func.max(CAT.sequence_number).label("seq"))
    .group_by(CAT.component_key)
    .subquery()
)
SEL_LATEST = (
    select(CAT.component_key, CAT.sequence_number, CAT.envelope, CAT.name, CAT.audience)
    .join(
        LATEST_SUB,
        (CAT.component_key == LATEST_SUB.c.component_key) & (CAT.sequence_number == LATEST_SUB.c.seq),
    )
    .order_by(CAT.id)
)


def device_from_row(row: Any) -> Device:
    return Device(
        id=row[0],
        kid=row[1],
        alg=row[2],
        public_key=row[3],
        name=row[4],
        psk_identity=row[5],
        oscore_id=row[6],
        attested_claims=json.loads(row[7]) if row[7] else None,
        negotiated=json.loads(row[8]) if row[8] else {},
        last_contact=row[9],
    )


def outstanding_from_row(row: Any) -> Outstanding:
    return Outstanding(
        id=row[0],
        session_id=row[1],
        device_id=row[2],
        kind=row[3],
        token=row[4],
        challenge=row[5],
        state=row[6],
        created_at=row[7],
        expires_at=row[8],
        data=json.loads(row[9] or "{}"),
    )


@dataclass
class ComponentEdit:
    """A device_components row being edited in memory (set_device_components / record_changes)."""

    key: bytes
    installed_seq: int | None
    wanted: bool
    wanted_min_seq: int | None
    unneeded: bool
    new: bool = False

    def params(self, device_id: int, now: float) -> dict[str, Any]:
        return {
            "installed_seq": self.installed_seq,
            "wanted": self.wanted,
            "wanted_min_seq": self.wanted_min_seq,
            "unneeded": self.unneeded,
            "updated_at": now,
        }
