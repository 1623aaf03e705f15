"""The TAM database schema, declared with the SQLAlchemy ORM (the store itself runs Core statements):
devices, sessions, outstanding requests, spent tokens, the Trusted Component catalog, per-device
components and the audit log."""

from __future__ import annotations

from sqlalchemy import Float, ForeignKey, Integer, LargeBinary, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from teep_coap.protocol.records import OPEN


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
