"""The TAM store's SQL: pre-built SQLAlchemy Core statements of the hot path, the row converters, and the
in-memory edit of a device's component rows."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import Integer, Table, and_, bindparam, delete, exists, func, insert, or_, select, update
from sqlalchemy import cast as sql_cast
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from teep_coap.protocol.records import ANSWERED, OPEN, SUPERSEDED, Device, Outstanding
from teep_coap.store import json_columns
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

# A device's columns, its attested claims last: a session's start reads all but those (a few KiB of
# JSON once the device has attested, which the engine writes and never reads: parsing them was about
# 1 % of a coaps-psk TAM's CPU).
SESSION_DEVICE_COLS = (
    DEV.id, DEV.kid, DEV.alg, DEV.public_key, DEV.name, DEV.psk_identity, DEV.oscore_id,
    DEV.negotiated, DEV.last_contact,
)  # fmt: skip
DEVICE_COLS = (*SESSION_DEVICE_COLS, DEV.attested_claims)
OUT_COLS = (
    OUT.id, OUT.session_id, OUT.device_id, OUT.kind, OUT.token, OUT.challenge, OUT.state,
    OUT.created_at, OUT.expires_at, OUT.data,
)  # fmt: skip
DC_COLS = (DCOMP.component_key, DCOMP.installed_seq, DCOMP.wanted, DCOMP.wanted_min_seq, DCOMP.unneeded)

SEL_DEVICE_BY_KID = select(*DEVICE_COLS).where(DEV.kid == bindparam("kid"))
SEL_DEVICE_BY_ID = select(*DEVICE_COLS).where(DEV.id == bindparam("id"))


def _by_transport_identity(*columns: Any) -> Any:
    """One device's PSK identity may be another's OSCORE id: the first registered of them, on both
    databases."""
    return (
        select(*columns)
        .where((DEV.psk_identity == bindparam("tid")) | (DEV.oscore_id == bindparam("tid")))
        .order_by(DEV.id)
        .limit(1)
    )


SEL_DEVICE_BY_TID = _by_transport_identity(*DEVICE_COLS)
SEL_SESSION_DEVICE_BY_TID = _by_transport_identity(*SESSION_DEVICE_COLS)
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
# A connect of a device known by its transport identity, in one PostgreSQL statement: the device looked
# up by SEL_SESSION_DEVICE_BY_TID (one row at most, so never two sessions), the session inserted for it, and
# the device's columns returned with the session's id. No device: nothing inserted, no row. An
# INSERT's RETURNING names the inserted row only, hence the WITH; SQLite has no INSERT in a WITH (the
# store runs SEL_SESSION_DEVICE_BY_TID and INS_SESSION there).
_tid_device = SEL_SESSION_DEVICE_BY_TID.cte("tid_device")
_tid_session = (
    insert(sessions_t)
    .from_select(
        ["device_id", "transport_identity", "started_at"],
        select(
            _tid_device.c.id,
            sql_cast(bindparam("tid"), SES.transport_identity.type),
            sql_cast(bindparam("now"), SES.started_at.type),
        ),
    )
    .returning(SES.id, SES.device_id)
    .cte("tid_session")
)
START_SESSION_FOR = select(_tid_session.c.id, *_tid_device.c).join_from(
    _tid_session, _tid_device, _tid_session.c.device_id == _tid_device.c.id
)
AUDIT_COLS = ("session_id", "at", "event", "detail")
INS_AUDIT = insert(audit_t).values(_values(audit_t, *AUDIT_COLS))
_AUDIT_ROWS: dict[int, Any] = {}


def audit_params(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The bind values of `insert_audit_rows(len(rows))`."""
    return {f"audit_{c}_{i}": row[c] for i, row in enumerate(rows) for c in AUDIT_COLS}


def insert_audit_rows(count: int) -> Any:
    """One INSERT of `count` audit rows (binds `audit_session_id_0`, `audit_at_0`, ...: names no other
    statement uses, so it can ride along with one): a message's audit rows in one round trip."""
    stmt = _AUDIT_ROWS.get(count)
    if stmt is None:
        rows = [
            {c: bindparam(f"audit_{c}_{i}", type_=audit_t.c[c].type) for c in AUDIT_COLS}
            for i in range(count)
        ]
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
# add_outstanding in one statement when the device has fewer than `cap` open requests and none with
# this token: the INSERT's SELECT yields no row otherwise (then the store supersedes and inserts).
# Its values are cast to the column types: PostgreSQL types a NULL in a SELECT list as text.
INS_OUTSTANDING_GUARDED: dict[bool, Any] = {}
DUPLICATE_TOKEN = "token already outstanding for this device"
for _bound in (True, False):
    _mine = (OUT.device_id == bindparam("device_id")) if _bound else OUT.device_id.is_(None)
    _open_mine = (
        select(func.count()).select_from(outstanding_t).where(OUT.state == OPEN, _mine).scalar_subquery()
    )
    _dup = exists().where(OUT.state == OPEN, _mine, OUT.token == bindparam("token"))
    INS_OUTSTANDING_GUARDED[_bound] = (
        insert(outstanding_t)
        .from_select(
            _OUT_INSERTED,
            select(*(sql_cast(b, b.type) for b in _values(outstanding_t, *_OUT_INSERTED).values())).where(
                _open_mine < bindparam("cap"), ~_dup
            ),
        )
        .returning(OUT.id)
    )
# add_outstanding of a device's request over PostgreSQL as one statement whose result nobody reads,
# so it can wait for the COMMIT (`Tx.later`): the new request's INSERT in a WITH, and an UPDATE
# superseding the device's oldest open requests beyond cap - 1. The UPDATE names the INSERT's
# RETURNING, so the INSERT has run (and the unique index ix_outstanding_open_token has refused a
# duplicate token) before the UPDATE may supersede the request holding that token; both see the
# snapshot from before the statement, so the new request is never superseded by its own statement.
# SQLite cannot put an INSERT in a WITH; requests of no device keep the guarded INSERT (the index
# does not cover a NULL device_id).
_old = outstanding_t.alias("old")
_old_mine = and_(_old.c.state == OPEN, _old.c.device_id == bindparam("device_id"))
_new_request = (
    insert(outstanding_t).values(_values(outstanding_t, *_OUT_INSERTED)).returning(OUT.id).cte("new_request")
)
_excess = func.greatest(
    select(func.count()).select_from(_old).where(_old_mine).scalar_subquery()
    - (bindparam("cap", type_=Integer) - 1),
    0,
)
INS_OUTSTANDING_SUPERSEDING = (
    update(outstanding_t)
    .where(
        OUT.id.in_(select(_old.c.id).where(_old_mine).order_by(_old.c.created_at, _old.c.id).limit(_excess)),
        OUT.state == OPEN,  # checked again on a row another worker claimed meanwhile: left answered
        exists(select(_new_request.c.id)),
    )
    .values(state=bindparam("superseded", SUPERSEDED))  # "state" binds the new request's
    .add_cte(_new_request)
)
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
_CLAIM_OPEN: dict[tuple[bool, int], Any] = {}


def answer_match(*, token: bool, challenge: bool, device: bool, kinds: int) -> list[Any]:
    """The WHERE clauses of the requests an answer may name: one of `kinds` (binds kind0, kind1, ...,
    each bound alone: an IN list would be re-rendered into SQL text at every execution), this token
    and / or challenge, and with `device` the device's (bind dev) or not yet bound to any."""
    clauses = [or_(*(OUT.kind == bindparam(f"kind{i}") for i in range(kinds)))]
    if token:
        clauses.append(OUT.token == bindparam("token"))
    if challenge:
        clauses.append(OUT.challenge == bindparam("challenge"))
    if device:
        clauses.append((OUT.device_id == bindparam("dev")) | OUT.device_id.is_(None))
    return clauses


def claim_open_statement(by_token: bool, kinds: int) -> Any:
    """Claim the request an answer names, in one statement: the newest request with this token (or
    challenge) among `kinds` (binds kind0, kind1, ...) that is the device's or not yet bound (the
    row `find_outstanding` lists first), provided it is open, unexpired and the device's; returns it.

    Concurrency as CLAIM: of two claims of one row the second finds it answered (PostgreSQL re-checks
    the WHERE on the row the first committed), so one wins."""
    stmt = _CLAIM_OPEN.get((by_token, kinds))
    if stmt is None:
        match = answer_match(token=by_token, challenge=not by_token, device=True, kinds=kinds)
        newest = select(OUT.id).where(*match).order_by(OUT.id.desc()).limit(1).scalar_subquery()
        stmt = _CLAIM_OPEN[(by_token, kinds)] = (
            update(outstanding_t)
            .where(
                OUT.id == newest,
                OUT.state == OPEN,
                OUT.expires_at > bindparam("now"),
                OUT.device_id == bindparam("dev"),
            )
            .values(state=ANSWERED)
            .returning(*OUT_COLS, select(SES.started_at).where(SES.id == OUT.session_id).scalar_subquery())
        )
    return stmt


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
# record_changes: an installed component's row inserted or updated in one statement (per dialect:
# ON CONFLICT is not portable Core); its `unneeded` flag is kept when the row exists.
UPSERT_INSTALLED: dict[str, Any] = {}
for _name, _dialect_insert in (("sqlite", sqlite_insert), ("postgresql", postgresql_insert)):
    _ins = _dialect_insert(dc_t).values(
        {
            **_values(dc_t, "device_id", "component_key", "installed_seq", "updated_at"),
            "wanted": False,
            "wanted_min_seq": None,
            "unneeded": False,
        }
    )
    UPSERT_INSTALLED[_name] = _ins.on_conflict_do_update(
        index_elements=[DCOMP.device_id, DCOMP.component_key],
        set_={
            "installed_seq": _ins.excluded.installed_seq,
            "wanted": False,
            "wanted_min_seq": None,
            "updated_at": _ins.excluded.updated_at,
        },
    )
MARK_REMOVED = (
    update(dc_t)
    .where(DCOMP.device_id == bindparam("b_dev"), DCOMP.component_key == bindparam("b_key"))
    .values(installed_seq=None, unneeded=False, updated_at=bindparam("updated_at"))
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
    """A row of DEVICE_COLS, or of SESSION_DEVICE_COLS (then without attested claims)."""
    return Device(
        id=row[0],
        kid=row[1],
        alg=row[2],
        public_key=row[3],
        name=row[4],
        psk_identity=row[5],
        oscore_id=row[6],
        attested_claims=json_columns.loads(row[9]) if len(row) > 9 and row[9] else None,
        negotiated=json_columns.loads(row[7]) if row[7] else {},
        last_contact=row[8],
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
        data=json_columns.loads(row[9] or "{}"),
        session_started_at=row[10] if len(row) > 10 else None,
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
