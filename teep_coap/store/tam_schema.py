"""The TAM database schema, declared with the SQLAlchemy ORM (the store itself runs Core statements):
devices, sessions, outstanding requests, spent tokens, the Trusted Component catalog, per-device
components and the audit log."""

from __future__ import annotations

import logging

from sqlalchemy import (
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    inspect,
    text,
)
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from teep_coap.protocol.records import OPEN

log = logging.getLogger("teep_coap.store.tam_schema")


OPEN_TOKEN_INDEX = "ix_outstanding_open_token"
DEVICE_STATE_INDEX = "ix_outstanding_device_state"


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
    # indexed for pruning (store/tam_prune.py): the oldest ended sessions without a scan
    ended_at: Mapped[float | None] = mapped_column(Float, nullable=True, index=True)
    outcome: Mapped[str | None] = mapped_column(String(200), nullable=True)


class OutstandingRow(Base):
    __tablename__ = "outstanding"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    # indexed for pruning: a session's requests are found (and, on PostgreSQL, the foreign key is
    # checked when a session row goes) without a scan of the table
    session_id: Mapped[int] = mapped_column(ForeignKey("sessions.id"), index=True)
    device_id: Mapped[int | None] = mapped_column(ForeignKey("devices.id"), nullable=True)
    kind: Mapped[str] = mapped_column(String(20))  # "query" | "update"
    token: Mapped[bytes | None] = mapped_column(LargeBinary(64), nullable=True, index=True)
    challenge: Mapped[bytes | None] = mapped_column(LargeBinary(512), nullable=True, index=True)
    state: Mapped[str] = mapped_column(String(20), default=OPEN)
    created_at: Mapped[float] = mapped_column(Float)
    # indexed for the minute's sweep (`handle_timer`: abandoned sessions, expired requests): the
    # table holds token lifetime + keep_expired (30 h) of requests, 100 million rows at 500 sessions/s,
    # and without it each sweep read them all (126 ms per million rows, 2026-12-06; 2.9 ms with it)
    expires_at: Mapped[float] = mapped_column(Float, index=True)
    data: Mapped[str] = mapped_column(Text, default="{}")  # JSON: request parameters / planned changes
    # A token is unique among a device's open requests. The store checks it before it inserts, except
    # over PostgreSQL, where the INSERT waits for the COMMIT and this index refuses the duplicate
    # (tam_sql.INS_OUTSTANDING_SUPERSEDING). A NULL device_id or token is not covered. PostgreSQL
    # only: SQLite keeps the store's check, and the same partial index there cost a SQLite TAM about
    # 0.15 ms per coaps-psk session (four alternated runs each, 2026-12-06).
    #
    # (device_id, state): every new request counts and checks the device's open ones (state = open,
    # device_id = ?), and answered rows stay until pruned. Over device_id alone that count read each
    # of the device's rows: a device 600 sessions old made every INSERT cost 0.4 ms instead of 24 µs
    # (2026-12-06). It replaces the index on device_id alone of databases made before it.
    __table_args__ = (
        Index(DEVICE_STATE_INDEX, "device_id", "state"),
        Index(
            OPEN_TOKEN_INDEX,
            "device_id",
            "token",
            unique=True,
            postgresql_where=text(f"state = '{OPEN}' AND token IS NOT NULL"),
        ).ddl_if(dialect="postgresql"),
    )


class SpentTokenRow(Base):
    """Self-authenticating QueryRequest tokens (protocol.stateless) already accepted: the primary key
    makes "no token accepted twice" hold across TAM processes sharing the database."""

    __tablename__ = "spent_tokens"
    key: Mapped[bytes] = mapped_column(LargeBinary(32), primary_key=True)  # SHA-256 of the token
    expires_at: Mapped[float] = mapped_column(Float, index=True)  # the sweep's, as outstanding's


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
    # (session_id, at): a session's entries (session_id = ?) and, for pruning, the entries of no
    # session older than a cutoff (session_id IS NULL AND at < ?) without a scan. It replaces the
    # index on session_id alone of databases made before it (`create_schema`).
    __table_args__ = (Index("ix_audit_session_at", "session_id", "at"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    session_id: Mapped[int | None] = mapped_column(ForeignKey("sessions.id"), nullable=True)
    at: Mapped[float] = mapped_column(Float)
    event: Mapped[str] = mapped_column(String(100))
    detail: Mapped[str] = mapped_column(Text, default="")


# Indexes of older schemas that a declared index covers: dropped once their replacement exists.
REPLACED_INDEXES = {
    "ix_audit_session_id": ("audit", "ix_audit_session_at"),
    "ix_outstanding_device_id": ("outstanding", DEVICE_STATE_INDEX),
}


def _made_on(index: Index, dialect: str) -> bool:
    """False for an index declared for other databases only (`ddl_if(dialect=...)`)."""
    only = index._ddl_if.dialect if index._ddl_if is not None else None
    if only is None:
        return True
    return dialect == only if isinstance(only, str) else dialect in only


def create_schema(engine: Engine) -> list[str]:
    """Create the missing tables, and bring the indexes of tables that exist up to date; returns
    what it changed on existing tables ("created ix_...", "dropped ix_...").

    `create_all` makes a table with its indexes but never adds an index to a table made by an older
    version, so a database from before an index was declared gets it here, on the first open by a
    version that declares it, and loses the index it replaces (`REPLACED_INDEXES`). On a large table
    that CREATE INDEX takes a while and holds writes back; docs/scale.md says how to make the
    indexes beforehand on a PostgreSQL in service."""
    existing = set(inspect(engine).get_table_names())
    Base.metadata.create_all(engine)
    changed: list[str] = []
    older = [t for t in Base.metadata.sorted_tables if t.name in existing]
    if not older:
        return changed
    have = inspect(engine).get_multi_indexes(filter_names=[t.name for t in older])
    names = {table: {ix["name"] for ix in found} for (_schema, table), found in have.items()}
    with engine.begin() as conn:
        for table in older:
            for index in sorted(table.indexes, key=lambda ix: str(ix.name)):
                if index.name not in names.get(table.name, set()) and _made_on(index, engine.dialect.name):
                    log.info("creating index %s on the existing table %s", index.name, table.name)
                    index.create(conn, checkfirst=True)
                    changed.append(f"created {index.name}")
        for old, (table_name, replacement) in REPLACED_INDEXES.items():
            if table_name in existing and old in names.get(table_name, set()):
                log.info("dropping index %s of %s: %s replaces it", old, table_name, replacement)
                conn.execute(text(f"DROP INDEX IF EXISTS {old}"))  # a name of ours, not input
                changed.append(f"dropped {old}")
    return changed


# ---- SQLAlchemy Core statements of the hot path, built once ----
#
# The ORM (unit of work, identity map, one flush per add) cost ~6 ms of CPU per TEEP session; the same
# work as pre-built Core statements with bound parameters costs a fraction: SQLAlchemy compiles each
# statement once (compiled cache) and a call only binds values and runs it.
