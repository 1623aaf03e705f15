"""The TAM's state in a SQL database (SQLAlchemy 2 ORM): SQLite file by default, PostgreSQL by URL.

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
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import cbor2
from sqlalchemy import (
    Float,
    ForeignKey,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    create_engine,
    delete,
    event,
    func,
    select,
    update,
)
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

from teep_coap.errors import TeepCoapError

ComponentId = tuple[bytes, ...]

OPEN = "open"
ANSWERED = "answered"
SUPERSEDED = "superseded"

AUDIENCES = ("all", "request", "delete")


class StoreError(TeepCoapError):
    """The TAM database failed or refused an operation; the message says which."""


class DuplicateDevice(StoreError):
    """A device with this kid, PSK identity or OSCORE id is already registered."""


def _sqlite_tuning(engine: Engine, *, memory: bool) -> None:
    """SQLite: WAL journal (readers do not block the writer; commits need no fsync each with
    synchronous=NORMAL) and BEGIN IMMEDIATE, so a transaction takes the write lock up front and
    waits for it (busy timeout) instead of failing when it later upgrades from read to write.
    The pysqlite recipe from the SQLAlchemy documentation ("Serializable isolation / Savepoints")."""

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # let SQLAlchemy's "begin" event emit BEGIN
        if not memory:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def component_key(component_id: Sequence[bytes]) -> bytes:
    """Stable database key of a SUIT_Component_Identifier: its CBOR encoding."""
    return bytes(cbor2.dumps([bytes(p) for p in component_id]))


def component_from_key(key: bytes) -> ComponentId:
    return tuple(bytes(p) for p in cbor2.loads(key))


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


# ---- plain values handed to the engine (no ORM objects escape a transaction) ----


@dataclass(frozen=True)
class Device:
    id: int
    kid: bytes
    alg: int
    public_key: bytes
    name: str | None
    psk_identity: str | None
    oscore_id: str | None
    attested_claims: dict[str, Any] | None
    negotiated: dict[str, Any]
    last_contact: float | None


@dataclass(frozen=True)
class Outstanding:
    id: int
    session_id: int
    device_id: int | None
    kind: str
    token: bytes | None
    challenge: bytes | None
    state: str
    created_at: float
    expires_at: float
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class CatalogEntry:
    component_id: ComponentId
    sequence_number: int
    envelope: bytes
    name: str | None
    audience: str


@dataclass(frozen=True)
class DeviceComponent:
    component_id: ComponentId
    installed_seq: int | None
    wanted: bool
    wanted_min_seq: int | None
    unneeded: bool


def _device(row: DeviceRow) -> Device:
    return Device(
        id=row.id,
        kid=row.kid,
        alg=row.alg,
        public_key=row.public_key,
        name=row.name,
        psk_identity=row.psk_identity,
        oscore_id=row.oscore_id,
        attested_claims=json.loads(row.attested_claims) if row.attested_claims else None,
        negotiated=json.loads(row.negotiated) if row.negotiated else {},
        last_contact=row.last_contact,
    )


def _outstanding(row: OutstandingRow) -> Outstanding:
    return Outstanding(
        id=row.id,
        session_id=row.session_id,
        device_id=row.device_id,
        kind=row.kind,
        token=row.token,
        challenge=row.challenge,
        state=row.state,
        created_at=row.created_at,
        expires_at=row.expires_at,
        data=json.loads(row.data or "{}"),
    )


class TamStore:
    """All TAM state; every method is one short transaction."""

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
        self._sessions = sessionmaker(self._engine, expire_on_commit=False)
        self._local = threading.local()

    def close(self) -> None:
        self._engine.dispose()

    @contextmanager
    def atomic(self) -> Iterator[None]:
        """One transaction around several calls (the engine wraps each message in one): all their
        changes commit together, or none if an exception leaves the block."""
        if getattr(self._local, "session", None) is not None:
            yield
            return
        with self._tx() as s:
            self._local.session = s
            try:
                yield
            finally:
                self._local.session = None

    @contextmanager
    def _tx(self) -> Iterator[Session]:
        current = getattr(self._local, "session", None)
        if current is not None:
            yield current
            return
        try:
            with self._sessions.begin() as s:
                yield s
        except IntegrityError as exc:
            raise StoreError(f"TAM database constraint violated: {exc.orig}") from exc
        except SQLAlchemyError as exc:
            raise StoreError(f"TAM database failure: {exc}") from exc

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
        with self._tx() as s:
            clash = s.scalars(
                select(DeviceRow).where(
                    (DeviceRow.kid == kid)
                    | ((DeviceRow.psk_identity == psk_identity) & (DeviceRow.psk_identity.is_not(None)))
                    | ((DeviceRow.oscore_id == oscore_id) & (DeviceRow.oscore_id.is_not(None)))
                )
            ).first()
            if clash is not None:
                raise DuplicateDevice(
                    f"a device with kid {kid.hex()} or its PSK identity / OSCORE id is already registered"
                )
            row = DeviceRow(
                kid=kid,
                alg=alg,
                public_key=public_key,
                name=name,
                psk_identity=psk_identity,
                oscore_id=oscore_id,
                created_at=now,
            )
            s.add(row)
            s.flush()
            return _device(row)

    def device_by_kid(self, kid: bytes) -> Device | None:
        with self._tx() as s:
            row = s.scalars(select(DeviceRow).where(DeviceRow.kid == kid)).first()
            return _device(row) if row else None

    def device_by_id(self, device_id: int) -> Device | None:
        with self._tx() as s:
            row = s.get(DeviceRow, device_id)
            return _device(row) if row else None

    def device_by_transport_identity(self, identity: str) -> Device | None:
        with self._tx() as s:
            row = s.scalars(
                select(DeviceRow).where(
                    (DeviceRow.psk_identity == identity) | (DeviceRow.oscore_id == identity)
                )
            ).first()
            return _device(row) if row else None

    def devices(self) -> list[Device]:
        with self._tx() as s:
            return [_device(r) for r in s.scalars(select(DeviceRow).order_by(DeviceRow.id))]

    def devices_with_alg(self, algs: Sequence[int]) -> list[Device]:
        with self._tx() as s:
            return [_device(r) for r in s.scalars(select(DeviceRow).where(DeviceRow.alg.in_(list(algs))))]

    def touch_device(
        self,
        device_id: int,
        now: float,
        *,
        attested_claims: dict[str, Any] | None = None,
        negotiated: dict[str, Any] | None = None,
    ) -> None:
        with self._tx() as s:
            values: dict[str, Any] = {"last_contact": now}
            if attested_claims is not None:
                values["attested_claims"] = json.dumps(attested_claims, sort_keys=True)
            if negotiated is not None:
                values["negotiated"] = json.dumps(negotiated, sort_keys=True)
            s.execute(update(DeviceRow).where(DeviceRow.id == device_id).values(**values))

    # ---- sessions and audit ----

    def start_session(self, now: float, *, device_id: int | None, transport_identity: str | None) -> int:
        with self._tx() as s:
            row = SessionRow(device_id=device_id, transport_identity=transport_identity, started_at=now)
            s.add(row)
            s.flush()
            s.add(AuditRow(session_id=row.id, at=now, event="session-start", detail=transport_identity or ""))
            return row.id

    def end_session(self, session_id: int, now: float, outcome: str) -> None:
        with self._tx() as s:
            s.execute(
                update(SessionRow)
                .where(SessionRow.id == session_id, SessionRow.ended_at.is_(None))
                .values(ended_at=now, outcome=outcome)
            )
            s.add(AuditRow(session_id=session_id, at=now, event="session-end", detail=outcome))

    def bind_session(self, session_id: int, device_id: int) -> None:
        with self._tx() as s:
            s.execute(update(SessionRow).where(SessionRow.id == session_id).values(device_id=device_id))

    def audit(self, session_id: int | None, now: float, event: str, detail: str = "") -> None:
        with self._tx() as s:
            s.add(AuditRow(session_id=session_id, at=now, event=event, detail=detail))

    def audit_log(self, session_id: int | None = None) -> list[tuple[int | None, float, str, str]]:
        with self._tx() as s:
            q = select(AuditRow).order_by(AuditRow.id)
            if session_id is not None:
                q = q.where(AuditRow.session_id == session_id)
            return [(r.session_id, r.at, r.event, r.detail) for r in s.scalars(q)]

    def sessions(self) -> list[tuple[int, int | None, float, float | None, str | None]]:
        with self._tx() as s:
            return [
                (r.id, r.device_id, r.started_at, r.ended_at, r.outcome)
                for r in s.scalars(select(SessionRow).order_by(SessionRow.id))
            ]

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
        with self._tx() as s:
            if token is not None:
                dup = s.scalars(
                    select(OutstandingRow.id).where(
                        OutstandingRow.token == token,
                        OutstandingRow.state == OPEN,
                        OutstandingRow.device_id.is_(None)
                        if device_id is None
                        else OutstandingRow.device_id == device_id,
                    )
                ).first()
                if dup is not None:
                    raise StoreError("token already outstanding for this device")
            open_q = (
                select(OutstandingRow.id)
                .where(
                    OutstandingRow.state == OPEN,
                    OutstandingRow.device_id.is_(None)
                    if device_id is None
                    else OutstandingRow.device_id == device_id,
                )
                .order_by(OutstandingRow.created_at, OutstandingRow.id)
            )
            ids = list(s.scalars(open_q))
            excess = len(ids) - (cap - 1)
            if excess > 0:
                s.execute(
                    update(OutstandingRow).where(OutstandingRow.id.in_(ids[:excess])).values(state=SUPERSEDED)
                )
            row = OutstandingRow(
                session_id=session_id,
                device_id=device_id,
                kind=kind,
                token=token,
                challenge=challenge,
                state=OPEN,
                created_at=now,
                expires_at=now + lifetime,
                data=json.dumps(data or {}, sort_keys=True),
            )
            s.add(row)
            s.flush()
            return _outstanding(row)

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
        with self._tx() as s:
            q = select(OutstandingRow).where(OutstandingRow.kind.in_(list(kinds)))
            q = q.where(OutstandingRow.token == token) if token is not None else q
            q = q.where(OutstandingRow.challenge == challenge) if challenge is not None else q
            if device_id is not None:
                q = q.where((OutstandingRow.device_id == device_id) | OutstandingRow.device_id.is_(None))
            q = q.order_by(OutstandingRow.id.desc())
            return [_outstanding(r) for r in s.scalars(q)]

    def latest_open_query(self, device_id: int, now: float) -> Outstanding | None:
        """The newest unexpired open QueryRequest that could belong to this device (token-less ones
        first): what a token-less Error answers, e.g. when the Agent could not verify the request."""
        with self._tx() as s:
            q = (
                select(OutstandingRow)
                .where(
                    OutstandingRow.state == OPEN,
                    OutstandingRow.kind == "query",
                    OutstandingRow.expires_at > now,
                    (OutstandingRow.device_id == device_id) | OutstandingRow.device_id.is_(None),
                )
                .order_by(OutstandingRow.token.is_not(None), OutstandingRow.id.desc())
            )
            row = s.scalars(q).first()
            return _outstanding(row) if row else None

    def claim(self, outstanding_id: int, device_id: int) -> bool:
        """Mark an open request answered by `device_id`; False if someone answered it first."""
        with self._tx() as s:
            result = s.execute(
                update(OutstandingRow)
                .where(OutstandingRow.id == outstanding_id, OutstandingRow.state == OPEN)
                .values(state=ANSWERED, device_id=device_id)
            )
            return bool(result.rowcount == 1)  # type: ignore[attr-defined]

    def expire_outstanding(self, now: float) -> int:
        """Drop requests past their expiry (answered or not); returns how many."""
        with self._tx() as s:
            result = s.execute(delete(OutstandingRow).where(OutstandingRow.expires_at <= now))
            return int(result.rowcount)  # type: ignore[attr-defined]

    def outstanding(self, device_id: int | None = None) -> list[Outstanding]:
        with self._tx() as s:
            q = select(OutstandingRow).order_by(OutstandingRow.id)
            if device_id is not None:
                q = q.where(OutstandingRow.device_id == device_id)
            return [_outstanding(r) for r in s.scalars(q)]

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
        with self._tx() as s:
            row = s.scalars(
                select(CatalogRow).where(
                    CatalogRow.component_key == key, CatalogRow.sequence_number == sequence_number
                )
            ).first()
            if row is None:
                row = CatalogRow(
                    component_key=key,
                    sequence_number=sequence_number,
                    envelope=envelope,
                    name=name,
                    audience=audience,
                    added_at=now,
                )
                s.add(row)
            else:
                if row.envelope != envelope:
                    raise StoreError(
                        f"catalog already has a different envelope for {name or key.hex()} "
                        f"with sequence number {sequence_number}"
                    )
                row.name = name
            # The audience is a property of the component, not of one version.
            s.execute(update(CatalogRow).where(CatalogRow.component_key == key).values(audience=audience))
            return CatalogEntry(
                tuple(bytes(p) for p in component_id), sequence_number, envelope, name, audience
            )

    def latest_components(self) -> list[CatalogEntry]:
        """The highest sequence number of every component in the catalog."""
        with self._tx() as s:
            sub = (
                select(CatalogRow.component_key, func.max(CatalogRow.sequence_number).label("seq"))
                .group_by(CatalogRow.component_key)
                .subquery()
            )
            q = (
                select(CatalogRow)
                .join(
                    sub,
                    (CatalogRow.component_key == sub.c.component_key)
                    & (CatalogRow.sequence_number == sub.c.seq),
                )
                .order_by(CatalogRow.id)
            )
            return [
                CatalogEntry(
                    component_from_key(r.component_key), r.sequence_number, r.envelope, r.name, r.audience
                )
                for r in s.scalars(q)
            ]

    def latest_component(self, component_id: Sequence[bytes]) -> CatalogEntry | None:
        key = component_key(component_id)
        for entry in self.latest_components():
            if component_key(entry.component_id) == key:
                return entry
        return None

    # ---- per-device components ----

    def device_components(self, device_id: int) -> list[DeviceComponent]:
        with self._tx() as s:
            q = select(DeviceComponentRow).where(DeviceComponentRow.device_id == device_id)
            return [
                DeviceComponent(
                    component_from_key(r.component_key),
                    r.installed_seq,
                    r.wanted,
                    r.wanted_min_seq,
                    r.unneeded,
                )
                for r in s.scalars(q.order_by(DeviceComponentRow.component_key))
            ]

    def set_device_components(
        self,
        device_id: int,
        now: float,
        *,
        installed: dict[ComponentId, int | None] | None = None,
        wanted: dict[ComponentId, int | None] | None = None,
        unneeded: Sequence[ComponentId] | None = None,
    ) -> None:
        """Replace what the device reported: `installed` (id → seq or None if unknown) replaces the whole
        installed set when given; `wanted`/`unneeded` replace those flags when given."""
        with self._tx() as s:
            rows = {
                r.component_key: r
                for r in s.scalars(
                    select(DeviceComponentRow).where(DeviceComponentRow.device_id == device_id)
                )
            }

            def row_for(cid: Sequence[bytes]) -> DeviceComponentRow:
                key = component_key(cid)
                if key not in rows:
                    rows[key] = DeviceComponentRow(
                        device_id=device_id, component_key=key, wanted=False, unneeded=False, updated_at=now
                    )
                    s.add(rows[key])
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
            for r in rows.values():
                r.updated_at = now

    def record_changes(
        self,
        device_id: int,
        now: float,
        *,
        installed: dict[ComponentId, int],
        removed: Sequence[ComponentId],
    ) -> None:
        """Apply what a successful Update changed on the device."""
        with self._tx() as s:
            for cid, seq in installed.items():
                key = component_key(cid)
                row = s.get(DeviceComponentRow, (device_id, key))
                if row is None:
                    row = DeviceComponentRow(
                        device_id=device_id, component_key=key, wanted=False, unneeded=False, updated_at=now
                    )
                    s.add(row)
                row.installed_seq, row.wanted, row.wanted_min_seq, row.updated_at = seq, False, None, now
            for cid in removed:
                row = s.get(DeviceComponentRow, (device_id, component_key(cid)))
                if row is not None:
                    row.installed_seq, row.unneeded, row.updated_at = None, False, now

    def snapshot(self) -> dict[str, list[tuple[Any, ...]]]:
        """Every table's rows as plain tuples: lets tests assert that a refused message changed nothing."""
        out: dict[str, list[tuple[Any, ...]]] = {}
        with self._tx() as s:
            for table in Base.metadata.sorted_tables:
                rows = s.execute(select(table).order_by(*table.primary_key.columns)).all()
                out[table.name] = [tuple(r) for r in rows]
        return out
