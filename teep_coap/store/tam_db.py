"""The TAM's state in a SQL database (SQLAlchemy 2 Core, schema declared with the ORM): SQLite file by
default, PostgreSQL by URL.

Tables: devices, outstanding requests (tokens / challenges with expiry), the Trusted Component catalog,
per-device components (installed / wanted / unneeded), sessions and an audit log. Everything the TAM
engine needs between two messages lives here (not in process memory), so several TAM processes can
share one database and a TAM restart between two messages loses nothing.

Only portable SQL is used (no SQLite-only statements). Concurrency: an outstanding request is claimed
with a conditional UPDATE (`... WHERE state = 'open'`) whose row count says who won, which is atomic
on SQLite and PostgreSQL alike.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Any, ClassVar, cast

from sqlalchemy import (
    Float,
    ForeignKey,
    Integer,
    LargeBinary,
    String,
    Table,
    Text,
    UniqueConstraint,
    bindparam,
    create_engine,
    delete,
    event,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from teep_coap.protocol.records import (
    ANSWERED,
    AUDIENCES,
    OPEN,
    SUPERSEDED,
    CatalogEntry,
    ComponentId,
    Device,
    DeviceComponent,
    DuplicateDevice,
    Outstanding,
    StoreError,
    component_from_key,
    component_key,
)


def _sqlite_tuning(engine: Engine, *, memory: bool) -> None:
    """SQLite: WAL journal (readers do not block the writer) with synchronous=NORMAL, and no implicit
    transactions of the driver (TamStore._tx emits BEGIN IMMEDIATE itself, so a transaction takes
    the write lock up front and waits for it (busy timeout) instead of failing when it later
    upgrades from read to write: the pysqlite recipe of the SQLAlchemy documentation, "Serializable
    isolation / Savepoints", done without an engine event because any engine-level event makes
    SQLAlchemy dispatch its execution events around every statement).

    WAL + synchronous=NORMAL: a commit appends to the WAL without fsync; the WAL is synced at
    checkpoints. A committed transaction survives a crash of the TAM process (the data is in the
    OS); after a power loss or kernel crash the last transactions before it may be lost (never
    corrupted: the database rolls back to a consistent earlier state). For a TAM that means a
    device may have to repeat its last session."""

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # no implicit BEGIN: TamStore._tx emits BEGIN IMMEDIATE
        if not memory:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()


class Base(DeclarativeBase):
    pass


class DeviceRow(Base):
    __tablename__ = "devices"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    kid: Mapped[bytes] = mapped_column(LargeBinary(64), unique=True)
    alg: Mapped[int] = mapped_column(Integer)
    public_key: Mapped[bytes] = mapped_column(LargeBinary)  # PEM
    name: Mapped[str | None] = mapped_column(String(200), nullable=True)
    psk_identity: Mapped[str | None] = mapped_column(String(200), unique=True, nullable=True)
    oscore_id: Mapped[str | None] = mapped_column(String(200), unique=True, nullable=True)
    attested_claims: Mapped[str | None] = mapped_column(Text, nullable=True)  # JSON
    negotiated: Mapped[str | None] = mapped_column(Text, nullable=True)  # JSON: versions, suites, ...
    created_at: Mapped[float] = mapped_column(Float)
    last_contact: Mapped[float | None] = mapped_column(Float, nullable=True)


class SessionRow(Base):
    __tablename__ = "sessions"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    device_id: Mapped[int | None] = mapped_column(ForeignKey("devices.id"), nullable=True)
    transport_identity: Mapped[str | None] = mapped_column(String(200), nullable=True)
    started_at: Mapped[float] = mapped_column(Float)
    ended_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    outcome: Mapped[str | None] = mapped_column(String(200), nullable=True)


class OutstandingRow(Base):
    __tablename__ = "outstanding"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    session_id: Mapped[int] = mapped_column(ForeignKey("sessions.id"))
    device_id: Mapped[int | None] = mapped_column(ForeignKey("devices.id"), nullable=True, index=True)
    kind: Mapped[str] = mapped_column(String(20))  # "query" | "update"
    token: Mapped[bytes | None] = mapped_column(LargeBinary(64), nullable=True, index=True)
    challenge: Mapped[bytes | None] = mapped_column(LargeBinary(512), nullable=True, index=True)
    state: Mapped[str] = mapped_column(String(20), default=OPEN)
    created_at: Mapped[float] = mapped_column(Float)
    expires_at: Mapped[float] = mapped_column(Float)
    data: Mapped[str] = mapped_column(Text, default="{}")  # JSON: request parameters / planned changes


class SpentTokenRow(Base):
    """Self-authenticating QueryRequest tokens (protocol.stateless) already accepted: the primary key
    makes "no token accepted twice" hold across TAM processes sharing the database."""

    __tablename__ = "spent_tokens"
    key: Mapped[bytes] = mapped_column(LargeBinary(32), primary_key=True)  # SHA-256 of the token
    expires_at: Mapped[float] = mapped_column(Float)


class CatalogRow(Base):
    __tablename__ = "catalog"
    __table_args__ = (UniqueConstraint("component_key", "sequence_number"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    component_key: Mapped[bytes] = mapped_column(LargeBinary, index=True)
    sequence_number: Mapped[int] = mapped_column(Integer)
    envelope: Mapped[bytes] = mapped_column(LargeBinary)
    name: Mapped[str | None] = mapped_column(String(200), nullable=True)
    audience: Mapped[str] = mapped_column(String(20), default="request")
    added_at: Mapped[float] = mapped_column(Float)


class DeviceComponentRow(Base):
    __tablename__ = "device_components"
    device_id: Mapped[int] = mapped_column(ForeignKey("devices.id"), primary_key=True)
    component_key: Mapped[bytes] = mapped_column(LargeBinary(1024), primary_key=True)
    installed_seq: Mapped[int | None] = mapped_column(Integer, nullable=True)
    wanted: Mapped[bool] = mapped_column(default=False)
    wanted_min_seq: Mapped[int | None] = mapped_column(Integer, nullable=True)
    unneeded: Mapped[bool] = mapped_column(default=False)
    updated_at: Mapped[float] = mapped_column(Float)


class AuditRow(Base):
    __tablename__ = "audit"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    session_id: Mapped[int | None] = mapped_column(ForeignKey("sessions.id"), nullable=True, index=True)
    at: Mapped[float] = mapped_column(Float)
    event: Mapped[str] = mapped_column(String(100))
    detail: Mapped[str] = mapped_column(Text, default="")


# ---- SQLAlchemy Core statements of the hot path, built once ----
#
# The ORM (unit of work, identity map, one flush per add) cost ~6 ms of CPU per TEEP session; the same
# work as pre-built Core statements with bound parameters costs a fraction: SQLAlchemy compiles each
# statement once (compiled cache) and a call only binds values and runs it.

_devices_t = cast(Table, DeviceRow.__table__)
_sessions_t = cast(Table, SessionRow.__table__)
_outstanding_t = cast(Table, OutstandingRow.__table__)
_catalog_t = cast(Table, CatalogRow.__table__)
_dc_t = cast(Table, DeviceComponentRow.__table__)
_audit_t = cast(Table, AuditRow.__table__)
_spent_t = cast(Table, SpentTokenRow.__table__)
_D, _S, _O, _C, _DC = _devices_t.c, _sessions_t.c, _outstanding_t.c, _catalog_t.c, _dc_t.c

_DEVICE_COLS = (
    _D.id, _D.kid, _D.alg, _D.public_key, _D.name, _D.psk_identity, _D.oscore_id,
    _D.attested_claims, _D.negotiated, _D.last_contact,
)  # fmt: skip
_OUT_COLS = (
    _O.id, _O.session_id, _O.device_id, _O.kind, _O.token, _O.challenge, _O.state,
    _O.created_at, _O.expires_at, _O.data,
)  # fmt: skip
_DC_COLS = (_DC.component_key, _DC.installed_seq, _DC.wanted, _DC.wanted_min_seq, _DC.unneeded)

_SEL_DEVICE_BY_KID = select(*_DEVICE_COLS).where(_D.kid == bindparam("kid"))
_SEL_DEVICE_BY_ID = select(*_DEVICE_COLS).where(_D.id == bindparam("id"))
_SEL_DEVICE_BY_TID = select(*_DEVICE_COLS).where(
    (_D.psk_identity == bindparam("tid")) | (_D.oscore_id == bindparam("tid"))
)
_TOUCH: dict[tuple[bool, bool], Any] = {}  # touch_device's statements by which columns it sets
_INS_SESSION = insert(_sessions_t)
_INS_AUDIT = insert(_audit_t)
_END_SESSION = (
    update(_sessions_t)
    .where(_S.id == bindparam("sid"), _S.ended_at.is_(None))
    .values(ended_at=bindparam("ended_at"), outcome=bindparam("outcome"))
)
_BIND_SESSION = update(_sessions_t).where(_S.id == bindparam("sid")).values(device_id=bindparam("dev"))
_SEL_OPEN_OF_DEVICE = (
    select(_O.id, _O.token)
    .where(_O.state == OPEN, _O.device_id == bindparam("dev"))
    .order_by(_O.created_at, _O.id)
)
_SEL_OPEN_UNBOUND = (
    select(_O.id, _O.token).where(_O.state == OPEN, _O.device_id.is_(None)).order_by(_O.created_at, _O.id)
)
_SUPERSEDE = (
    update(_outstanding_t).where(_O.id.in_(bindparam("ids", expanding=True))).values(state=SUPERSEDED)
)
_INS_OUTSTANDING = insert(_outstanding_t)
_CLAIM = (
    update(_outstanding_t)
    .where(_O.id == bindparam("oid"), _O.state == OPEN)
    .values(state=ANSWERED, device_id=bindparam("dev"))
)
_EXPIRE = delete(_outstanding_t).where(_O.expires_at <= bindparam("now"))
_SEL_DEVICE_COMPONENTS = (
    select(*_DC_COLS).where(_DC.device_id == bindparam("dev")).order_by(_DC.component_key)
)
# Row lock on the device (PostgreSQL; SQLite renders no FOR UPDATE and BEGIN IMMEDIATE already
# serializes writers): two TAM workers serving the same device read-modify-write its component rows
# one after the other, never both inserting the same row or losing the other's update.
_LOCK_DEVICE = select(_D.id).where(_D.id == bindparam("dev")).with_for_update()
_INS_DC = insert(_dc_t)
_UPD_DC = (
    update(_dc_t)
    .where(_DC.device_id == bindparam("b_dev"), _DC.component_key == bindparam("b_key"))
    .values(
        installed_seq=bindparam("installed_seq"),
        wanted=bindparam("wanted"),
        wanted_min_seq=bindparam("wanted_min_seq"),
        unneeded=bindparam("unneeded"),
        updated_at=bindparam("updated_at"),
    )
)
_LATEST_SUB = (
    select(_C.component_key, func.max(_C.sequence_number).label("seq")).group_by(_C.component_key).subquery()
)
_SEL_LATEST = (
    select(_C.component_key, _C.sequence_number, _C.envelope, _C.name, _C.audience)
    .join(
        _LATEST_SUB,
        (_C.component_key == _LATEST_SUB.c.component_key) & (_C.sequence_number == _LATEST_SUB.c.seq),
    )
    .order_by(_C.id)
)


def _device(row: Any) -> Device:
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


def _outstanding(row: Any) -> Outstanding:
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
class _Dc:
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


class _Tx:
    """The connection of one transaction, and the audit rows it will write just before commit."""

    __slots__ = ("audit", "conn")

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.audit: list[dict[str, Any]] = []

    def flush_audit(self) -> None:
        if self.audit:
            self.conn.execute(_INS_AUDIT, self.audit)  # one executemany for the whole message
            self.audit = []


class TamStore:
    """All TAM state; every method is one short transaction (or part of the caller's `atomic()`)."""

    def __init__(self, url: str = "sqlite:///tam.sqlite", *, echo: bool = False) -> None:
        self.url = url
        connect_args: dict[str, Any] = {}
        is_sqlite = url.startswith("sqlite")
        if is_sqlite:
            # Several processes may share one SQLite file: wait for the write lock instead of failing.
            connect_args["timeout"] = 30
        try:
            self._engine = create_engine(url, echo=echo, connect_args=connect_args)
            if is_sqlite:
                _sqlite_tuning(self._engine, memory=url in ("sqlite://", "sqlite:///:memory:"))
            Base.metadata.create_all(self._engine)
        except (SQLAlchemyError, ImportError) as exc:
            raise StoreError(f"cannot open TAM database {url!r}: {exc}") from exc
        self._sqlite = is_sqlite
        self._local = threading.local()
        self._conns: list[Connection] = []  # one per thread that used the store, closed by close()
        self._conns_lock = threading.Lock()

    def close(self) -> None:
        with self._conns_lock:
            conns, self._conns = self._conns, []
        for conn in conns:
            with suppress(SQLAlchemyError):  # closing a broken connection must not stop the others
                conn.close()
        self._local = threading.local()
        self._engine.dispose()

    def _connection(self) -> Connection:
        """This thread's connection, kept open between transactions: a pool check-out and check-in
        (with its reset) per message cost more than the message's SQL statements."""
        conn: Connection | None = getattr(self._local, "conn", None)
        if conn is None or conn.closed:
            conn = self._engine.connect()
            self._local.conn = conn
            with self._conns_lock:
                self._conns.append(conn)
        return conn

    @contextmanager
    def atomic(self) -> Iterator[None]:
        """One transaction around several calls (the engine wraps each message in one): all their
        changes commit together, or none if an exception leaves the block."""
        if getattr(self._local, "tx", None) is not None:
            yield
            return
        with self._tx() as tx:
            self._local.tx = tx
            try:
                yield
            finally:
                self._local.tx = None

    @contextmanager
    def _tx(self) -> Iterator[_Tx]:
        current: _Tx | None = getattr(self._local, "tx", None)
        if current is not None:
            yield current
            return
        try:
            conn = self._connection()
            with conn.begin():
                if self._sqlite:  # the driver runs in autocommit mode: open the transaction here
                    conn.connection.dbapi_connection.execute("BEGIN IMMEDIATE")  # type: ignore[union-attr]
                tx = _Tx(conn)
                yield tx
                tx.flush_audit()
        except IntegrityError as exc:
            raise StoreError(f"TAM database constraint violated: {exc.orig}") from exc
        except (SQLAlchemyError, sqlite3.Error) as exc:  # sqlite3: BEGIN IMMEDIATE goes to the driver
            self._forget_connection()  # e.g. a lost PostgreSQL connection: the next message gets a new one
            raise StoreError(f"TAM database failure: {exc}") from exc

    def _forget_connection(self) -> None:
        conn: Connection | None = getattr(self._local, "conn", None)
        self._local.conn = None
        if conn is not None:
            with self._conns_lock:
                if conn in self._conns:
                    self._conns.remove(conn)
            with suppress(SQLAlchemyError, sqlite3.Error):
                conn.close()

    # ---- devices ----

    def add_device(
        self,
        *,
        kid: bytes,
        alg: int,
        public_key: bytes,
        now: float,
        name: str | None = None,
        psk_identity: str | None = None,
        oscore_id: str | None = None,
    ) -> Device:
        """Register a device by its TEEP signing key (explicit registration by an administrator)."""
        with self._tx() as tx:
            clash = tx.conn.execute(
                select(_D.id).where(
                    (_D.kid == kid)
                    | ((_D.psk_identity == psk_identity) & (_D.psk_identity.is_not(None)))
                    | ((_D.oscore_id == oscore_id) & (_D.oscore_id.is_not(None)))
                )
            ).first()
            if clash is not None:
                raise DuplicateDevice(
                    f"a device with kid {kid.hex()} or its PSK identity / OSCORE id is already registered"
                )
            result = tx.conn.execute(
                insert(_devices_t).values(
                    kid=kid,
                    alg=alg,
                    public_key=public_key,
                    name=name,
                    psk_identity=psk_identity,
                    oscore_id=oscore_id,
                    created_at=now,
                )
            )
            return Device(
                int(result.inserted_primary_key[0]),  # type: ignore[index]
                kid, alg, public_key, name, psk_identity, oscore_id, None, {}, None,
            )  # fmt: skip

    def device_by_kid(self, kid: bytes) -> Device | None:
        with self._tx() as tx:
            row = tx.conn.execute(_SEL_DEVICE_BY_KID, {"kid": kid}).first()
            return _device(row) if row else None

    def device_by_id(self, device_id: int) -> Device | None:
        with self._tx() as tx:
            row = tx.conn.execute(_SEL_DEVICE_BY_ID, {"id": device_id}).first()
            return _device(row) if row else None

    def device_by_transport_identity(self, identity: str) -> Device | None:
        with self._tx() as tx:
            row = tx.conn.execute(_SEL_DEVICE_BY_TID, {"tid": identity}).first()
            return _device(row) if row else None

    def devices(self) -> list[Device]:
        with self._tx() as tx:
            return [_device(r) for r in tx.conn.execute(select(*_DEVICE_COLS).order_by(_D.id))]

    def devices_with_alg(self, algs: Sequence[int]) -> list[Device]:
        with self._tx() as tx:
            q = select(*_DEVICE_COLS).where(_D.alg.in_(list(algs)))
            return [_device(r) for r in tx.conn.execute(q)]

    def touch_device(
        self,
        device_id: int,
        now: float,
        *,
        attested_claims: dict[str, Any] | None = None,
        negotiated: dict[str, Any] | None = None,
    ) -> None:
        shape = (attested_claims is not None, negotiated is not None)
        stmt = _TOUCH.get(shape)
        if stmt is None:
            values: dict[str, Any] = {"last_contact": bindparam("now")}
            if attested_claims is not None:
                values["attested_claims"] = bindparam("claims")
            if negotiated is not None:
                values["negotiated"] = bindparam("negotiated")
            stmt = _TOUCH[shape] = update(_devices_t).where(_D.id == bindparam("dev")).values(**values)
        params: dict[str, Any] = {"dev": device_id, "now": now}
        if attested_claims is not None:
            params["claims"] = json.dumps(attested_claims, sort_keys=True)
        if negotiated is not None:
            params["negotiated"] = json.dumps(negotiated, sort_keys=True)
        with self._tx() as tx:
            tx.conn.execute(stmt, params)

    # ---- sessions and audit ----

    def start_session(self, now: float, *, device_id: int | None, transport_identity: str | None) -> int:
        with self._tx() as tx:
            result = tx.conn.execute(
                _INS_SESSION,
                {"device_id": device_id, "transport_identity": transport_identity, "started_at": now},
            )
            sid = int(result.inserted_primary_key[0])  # type: ignore[index]
            tx.audit.append(
                {"session_id": sid, "at": now, "event": "session-start", "detail": transport_identity or ""}
            )
            return sid

    def end_session(self, session_id: int, now: float, outcome: str) -> None:
        with self._tx() as tx:
            tx.conn.execute(_END_SESSION, {"sid": session_id, "ended_at": now, "outcome": outcome})
            tx.audit.append({"session_id": session_id, "at": now, "event": "session-end", "detail": outcome})

    def bind_session(self, session_id: int, device_id: int) -> None:
        with self._tx() as tx:
            tx.conn.execute(_BIND_SESSION, {"sid": session_id, "dev": device_id})

    def audit(self, session_id: int | None, now: float, event: str, detail: str = "") -> None:
        """Append to the audit log; the row is written with the transaction's other audit rows."""
        with self._tx() as tx:
            tx.audit.append({"session_id": session_id, "at": now, "event": event, "detail": detail})

    def audit_log(self, session_id: int | None = None) -> list[tuple[int | None, float, str, str]]:
        a = _audit_t.c
        with self._tx() as tx:
            tx.flush_audit()
            q = select(a.session_id, a.at, a.event, a.detail).order_by(a.id)
            if session_id is not None:
                q = q.where(a.session_id == session_id)
            return [(r[0], r[1], r[2], r[3]) for r in tx.conn.execute(q)]

    def sessions(self) -> list[tuple[int, int | None, float, float | None, str | None]]:
        with self._tx() as tx:
            q = select(_S.id, _S.device_id, _S.started_at, _S.ended_at, _S.outcome).order_by(_S.id)
            return [(r[0], r[1], r[2], r[3], r[4]) for r in tx.conn.execute(q)]

    # ---- outstanding requests ----

    def add_outstanding(
        self,
        *,
        session_id: int,
        device_id: int | None,
        kind: str,
        token: bytes | None,
        challenge: bytes | None,
        now: float,
        lifetime: float,
        cap: int,
        data: dict[str, Any] | None = None,
    ) -> Outstanding:
        """Record a request awaiting its answer; beyond `cap` open requests per device (or for unknown
        devices) the oldest are superseded. A token must be unique among a device's open requests."""
        with self._tx() as tx:
            # One query gives both the duplicate-token check and the open requests to cap.
            if device_id is None:
                open_rows = tx.conn.execute(_SEL_OPEN_UNBOUND).all()
            else:
                open_rows = tx.conn.execute(_SEL_OPEN_OF_DEVICE, {"dev": device_id}).all()
            if token is not None and any(r[1] == token for r in open_rows):
                raise StoreError("token already outstanding for this device")
            excess = len(open_rows) - (cap - 1)
            if excess > 0:
                tx.conn.execute(_SUPERSEDE, {"ids": [r[0] for r in open_rows[:excess]]})
            data_json = json.dumps(data or {}, sort_keys=True)
            result = tx.conn.execute(
                _INS_OUTSTANDING,
                {
                    "session_id": session_id,
                    "device_id": device_id,
                    "kind": kind,
                    "token": token,
                    "challenge": challenge,
                    "state": OPEN,
                    "created_at": now,
                    "expires_at": now + lifetime,
                    "data": data_json,
                },
            )
            return Outstanding(
                int(result.inserted_primary_key[0]),  # type: ignore[index]
                session_id, device_id, kind, token, challenge, OPEN, now, now + lifetime,
                json.loads(data_json),
            )  # fmt: skip

    def find_outstanding(
        self,
        *,
        token: bytes | None = None,
        challenge: bytes | None = None,
        kinds: Sequence[str] = ("query", "update"),
        device_id: int | None = None,
    ) -> list[Outstanding]:
        """Requests (any state) with this token or challenge, newest first; restricted to requests of
        `device_id` or not yet bound to a device."""
        if token is None and challenge is None:
            raise StoreError("find_outstanding needs a token or a challenge")
        if not kinds:
            return []
        # One pre-built statement per shape; the kinds are bound one by one (an IN list would be an
        # "expanding" parameter, which SQLAlchemy re-renders into SQL text at every execution).
        shape = (token is not None, challenge is not None, device_id is not None, len(kinds))
        q = self._find_queries.get(shape)
        if q is None:
            q = select(*_OUT_COLS).where(or_(*(_O.kind == bindparam(f"kind{i}") for i in range(len(kinds)))))
            q = q.where(_O.token == bindparam("token")) if token is not None else q
            q = q.where(_O.challenge == bindparam("challenge")) if challenge is not None else q
            if device_id is not None:
                q = q.where((_O.device_id == bindparam("dev")) | _O.device_id.is_(None))
            q = self._find_queries[shape] = q.order_by(_O.id.desc())
        params: dict[str, Any] = {f"kind{i}": k for i, k in enumerate(kinds)}
        if token is not None:
            params["token"] = token
        if challenge is not None:
            params["challenge"] = challenge
        if device_id is not None:
            params["dev"] = device_id
        with self._tx() as tx:
            return [_outstanding(r) for r in tx.conn.execute(q, params)]

    _find_queries: ClassVar[dict[tuple[bool, bool, bool, int], Any]] = {}  # shared: statements only, no state

    def latest_open_query(self, device_id: int, now: float) -> Outstanding | None:
        """The newest unexpired open QueryRequest that could belong to this device (token-less ones
        first): what a token-less Error answers, e.g. when the Agent could not verify the request."""
        with self._tx() as tx:
            q = (
                select(*_OUT_COLS)
                .where(
                    _O.state == OPEN,
                    _O.kind == "query",
                    _O.expires_at > now,
                    (_O.device_id == device_id) | _O.device_id.is_(None),
                )
                .order_by(_O.token.is_not(None), _O.id.desc())
            )
            row = tx.conn.execute(q).first()
            return _outstanding(row) if row else None

    def latest_open_update(self, device_id: int, now: float) -> Outstanding | None:
        """The newest unexpired open Update sent to this device: what a token-less Error answers when
        the Agent could not even decode the Update (e.g. over its size limit), so no token came back."""
        with self._tx() as tx:
            q = (
                select(*_OUT_COLS)
                .where(_O.state == OPEN, _O.kind == "update", _O.expires_at > now, _O.device_id == device_id)
                .order_by(_O.id.desc())
            )
            row = tx.conn.execute(q).first()
            return _outstanding(row) if row else None

    def claim(self, outstanding_id: int, device_id: int) -> bool:
        """Mark an open request answered by `device_id`; False if someone answered it first."""
        with self._tx() as tx:
            result = tx.conn.execute(_CLAIM, {"oid": outstanding_id, "dev": device_id})
            return bool(result.rowcount == 1)

    def expire_outstanding(self, now: float) -> int:
        """Drop requests past their expiry (answered or not); returns how many."""
        with self._tx() as tx:
            return int(tx.conn.execute(_EXPIRE, {"now": now}).rowcount)

    def outstanding(self, device_id: int | None = None) -> list[Outstanding]:
        with self._tx() as tx:
            q = select(*_OUT_COLS).order_by(_O.id)
            if device_id is not None:
                q = q.where(_O.device_id == device_id)
            return [_outstanding(r) for r in tx.conn.execute(q)]

    # ---- spent self-authenticating tokens ----

    def spend_token(self, key: bytes, expires_at: float) -> bool:
        """Record a token's single use; False if it was spent before (by this or another process).

        INSERT ... ON CONFLICT DO NOTHING RETURNING (SQLite and PostgreSQL): a returned row says this
        call won, and a conflict does not abort the caller's transaction as a failed plain INSERT would
        on PostgreSQL. Not the row count: SQLAlchemy reports -1 for an INSERT over psycopg 3."""
        dialect_insert = postgresql_insert if self._engine.dialect.name == "postgresql" else sqlite_insert
        stmt = dialect_insert(_spent_t).values(key=key, expires_at=expires_at).on_conflict_do_nothing()
        with self._tx() as tx:
            return tx.conn.execute(stmt.returning(_spent_t.c.key)).first() is not None

    def forget_spent_tokens(self, now: float) -> int:
        """Drop spent tokens past their expiry (they are refused as expired anyway); returns how many."""
        with self._tx() as tx:
            return int(tx.conn.execute(delete(_spent_t).where(_spent_t.c.expires_at <= now)).rowcount)

    # ---- catalog ----

    def add_component(
        self,
        *,
        component_id: Sequence[bytes],
        sequence_number: int,
        envelope: bytes,
        now: float,
        name: str | None = None,
        audience: str = "request",
    ) -> CatalogEntry:
        if audience not in AUDIENCES:
            raise StoreError(f"audience must be one of {AUDIENCES}, not {audience!r}")
        key = component_key(component_id)
        with self._tx() as tx:
            row = tx.conn.execute(
                select(_C.id, _C.envelope).where(
                    _C.component_key == key, _C.sequence_number == sequence_number
                )
            ).first()
            if row is None:
                tx.conn.execute(
                    insert(_catalog_t).values(
                        component_key=key,
                        sequence_number=sequence_number,
                        envelope=envelope,
                        name=name,
                        audience=audience,
                        added_at=now,
                    )
                )
            else:
                if row[1] != envelope:
                    raise StoreError(
                        f"catalog already has a different envelope for {name or key.hex()} "
                        f"with sequence number {sequence_number}"
                    )
                tx.conn.execute(update(_catalog_t).where(_C.id == row[0]).values(name=name))
            # The audience is a property of the component, not of one version.
            tx.conn.execute(update(_catalog_t).where(_C.component_key == key).values(audience=audience))
            return CatalogEntry(
                tuple(bytes(p) for p in component_id), sequence_number, envelope, name, audience
            )

    def latest_components(self) -> list[CatalogEntry]:
        """The highest sequence number of every component in the catalog."""
        with self._tx() as tx:
            return [
                CatalogEntry(component_from_key(r[0]), r[1], r[2], r[3], r[4])
                for r in tx.conn.execute(_SEL_LATEST)
            ]

    def latest_component(self, component_id: Sequence[bytes]) -> CatalogEntry | None:
        key = component_key(component_id)
        for entry in self.latest_components():
            if component_key(entry.component_id) == key:
                return entry
        return None

    def component_versions(
        self, component_id: Sequence[bytes], sequence_numbers: Sequence[int] | None = None
    ) -> list[CatalogEntry]:
        """The catalog versions of one component (only `sequence_numbers` when given), lowest sequence
        number first: the TAM matches an attested manifest digest against them when a device's report
        disagrees with its record."""
        key = component_key(component_id)
        query = select(_C.sequence_number, _C.envelope, _C.name, _C.audience).where(_C.component_key == key)
        if sequence_numbers is not None:
            query = query.where(_C.sequence_number.in_(list(sequence_numbers)))
        with self._tx() as tx:
            rows = tx.conn.execute(query.order_by(_C.sequence_number))
            cid = tuple(bytes(p) for p in component_id)
            return [CatalogEntry(cid, int(r[0]), bytes(r[1]), r[2], str(r[3])) for r in rows]

    # ---- per-device components ----

    def device_components(self, device_id: int) -> list[DeviceComponent]:
        with self._tx() as tx:
            return [
                DeviceComponent(component_from_key(r[0]), r[1], bool(r[2]), r[3], bool(r[4]))
                for r in tx.conn.execute(_SEL_DEVICE_COMPONENTS, {"dev": device_id})
            ]

    def _dc_rows(self, tx: _Tx, device_id: int) -> dict[bytes, _Dc]:
        """The device's component rows, its device row locked until the transaction ends."""
        if not self._sqlite:
            tx.conn.execute(_LOCK_DEVICE, {"dev": device_id})
        return {
            r[0]: _Dc(r[0], r[1], bool(r[2]), r[3], bool(r[4]))
            for r in tx.conn.execute(_SEL_DEVICE_COMPONENTS, {"dev": device_id})
        }

    def _write_dc(self, tx: _Tx, device_id: int, now: float, rows: Sequence[_Dc]) -> None:
        """Insert the new rows and update the others: at most two executemany statements."""
        new = [
            dict(r.params(device_id, now), device_id=device_id, component_key=r.key) for r in rows if r.new
        ]
        old = [dict(r.params(device_id, now), b_dev=device_id, b_key=r.key) for r in rows if not r.new]
        if new:
            tx.conn.execute(_INS_DC, new)
        if old:
            tx.conn.execute(_UPD_DC, old)

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

            def row_for(cid: Sequence[bytes]) -> _Dc:
                key = component_key(cid)
                if key not in rows:
                    rows[key] = _Dc(key, None, False, None, False, new=True)
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
        """Apply what a successful Update changed on the device."""
        with self._tx() as tx:
            rows = self._dc_rows(tx, device_id)
            touched: dict[bytes, _Dc] = {}
            for cid, seq in installed.items():
                key = component_key(cid)
                row = rows.get(key) or _Dc(key, None, False, None, False, new=True)
                row.installed_seq, row.wanted, row.wanted_min_seq = seq, False, None
                rows[key] = touched[key] = row
            for cid in removed:
                key = component_key(cid)
                if key in rows:
                    row = rows[key]
                    row.installed_seq, row.unneeded = None, False
                    touched[key] = row
            self._write_dc(tx, device_id, now, list(touched.values()))

    def snapshot(self) -> dict[str, list[tuple[Any, ...]]]:
        """Every table's rows as plain tuples: lets tests assert that a refused message changed nothing."""
        out: dict[str, list[tuple[Any, ...]]] = {}
        with self._tx() as tx:
            tx.flush_audit()
            for table in Base.metadata.sorted_tables:
                rows = tx.conn.execute(select(table).order_by(*table.primary_key.columns)).all()
                out[table.name] = [tuple(r) for r in rows]
        return out
