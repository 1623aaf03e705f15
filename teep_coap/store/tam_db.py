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

from collections.abc import Sequence
from typing import Any, ClassVar

from sqlalchemy import bindparam, delete, insert, select, update

from teep_coap.protocol.records import (
    ANSWERED,
    AUDIENCES,
    OPEN,
    SUPERSEDED,
    CatalogEntry,
    Device,
    DuplicateDevice,
    Outstanding,
    StoreError,
    component_from_key,
    component_key,
)
from teep_coap.store import json_columns
from teep_coap.store.tam_device_components import DeviceComponentStore
from teep_coap.store.tam_prune import HistoryStore
from teep_coap.store.tam_schema import Base
from teep_coap.store.tam_sql import (
    ABANDON_SESSIONS,
    BIND_SESSION,
    CAT,
    CLAIM,
    DEV,
    DEVICE_COLS,
    DUPLICATE_TOKEN,
    END_SESSION,
    EXPIRE,
    INS_OUTSTANDING,
    INS_OUTSTANDING_GUARDED,
    INS_OUTSTANDING_SUPERSEDING,
    INS_SESSION,
    LOCK_DEVICE,
    OUT,
    OUT_COLS,
    SEL_DEVICE_BY_ID,
    SEL_DEVICE_BY_KID,
    SEL_DEVICE_BY_TID,
    SEL_DEVICE_COMPONENTS,
    SEL_LATEST,
    SEL_OPEN_OF_DEVICE,
    SEL_OPEN_UNBOUND,
    SEL_SESSION_DEVICE_BY_TID,
    SES,
    SPEND_TOKEN,
    START_SESSION_FOR,
    SUPERSEDE,
    TOUCH,
    answer_match,
    audit_t,
    catalog_t,
    claim_open_statement,
    device_from_row,
    devices_t,
    outstanding_from_row,
    spent_t,
)
from teep_coap.store.tam_tx import Tx

# The record types and states the store's callers and tests import from here along with TamStore.
__all__ = [
    "ANSWERED",
    "OPEN",
    "SUPERSEDED",
    "Device",
    "DuplicateDevice",
    "Outstanding",
    "StoreError",
    "TamStore",
    "component_from_key",
    "component_key",
]


def _answer_params(
    token: bytes | None, challenge: bytes | None, kinds: Sequence[str], device_id: int | None
) -> dict[str, Any]:
    """The bind values of `tam_sql.answer_match` for these (None: not matched on)."""
    params: dict[str, Any] = {f"kind{i}": k for i, k in enumerate(kinds)}
    if token is not None:
        params["token"] = token
    if challenge is not None:
        params["challenge"] = challenge
    if device_id is not None:
        params["dev"] = device_id
    return params


def _outstanding_params(
    session_id: int,
    device_id: int | None,
    kind: str,
    token: bytes | None,
    challenge: bytes | None,
    state: str,
    now: float,
    lifetime: float,
    data: dict[str, Any] | None,
) -> dict[str, Any]:
    """The bind values of a new `outstanding` row (tam_sql._OUT_INSERTED)."""
    return {
        "session_id": session_id,
        "device_id": device_id,
        "kind": kind,
        "token": token,
        "challenge": challenge,
        "state": state,
        "created_at": now,
        "expires_at": now + lifetime,
        "data": json_columns.dumps(data or {}),
    }


class TamStore(DeviceComponentStore, HistoryStore):
    """All TAM state; every method is one short transaction (or part of the caller's `atomic()`)."""

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
                select(DEV.id).where(
                    (DEV.kid == kid)
                    | ((DEV.psk_identity == psk_identity) & (DEV.psk_identity.is_not(None)))
                    | ((DEV.oscore_id == oscore_id) & (DEV.oscore_id.is_not(None)))
                )
            ).first()
            if clash is not None:
                raise DuplicateDevice(
                    f"a device with kid {kid.hex()} or its PSK identity / OSCORE id is already registered"
                )
            result = tx.conn.execute(
                insert(devices_t).values(
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
            rows = tx.rows(SEL_DEVICE_BY_KID, {"kid": kid})
            return device_from_row(rows[0]) if rows else None

    def device_by_id(self, device_id: int) -> Device | None:
        with self._tx() as tx:
            rows = tx.rows(SEL_DEVICE_BY_ID, {"id": device_id})
            return device_from_row(rows[0]) if rows else None

    def device_by_transport_identity(self, identity: str) -> Device | None:
        with self._tx() as tx:
            rows = tx.rows(SEL_DEVICE_BY_TID, {"tid": identity})
            return device_from_row(rows[0]) if rows else None

    def devices(self) -> list[Device]:
        with self._tx() as tx:
            return [device_from_row(r) for r in tx.conn.execute(select(*DEVICE_COLS).order_by(DEV.id))]

    def devices_with_alg(self, algs: Sequence[int]) -> list[Device]:
        with self._tx() as tx:
            q = select(*DEVICE_COLS).where(DEV.alg.in_(list(algs)))
            return [device_from_row(r) for r in tx.conn.execute(q)]

    def touch_device(
        self,
        device_id: int,
        now: float,
        *,
        attested_claims: dict[str, Any] | None = None,
        negotiated: dict[str, Any] | None = None,
    ) -> None:
        shape = (attested_claims is not None, negotiated is not None)
        stmt = TOUCH.get(shape)
        if stmt is None:
            values: dict[str, Any] = {"last_contact": bindparam("now")}
            if attested_claims is not None:
                values["attested_claims"] = bindparam("claims")
            if negotiated is not None:
                values["negotiated"] = bindparam("negotiated")
            stmt = TOUCH[shape] = update(devices_t).where(DEV.id == bindparam("dev")).values(**values)
        params: dict[str, Any] = {"dev": device_id, "now": now}
        if attested_claims is not None:
            params["claims"] = json_columns.dumps(attested_claims)
        if negotiated is not None:
            params["negotiated"] = json_columns.dumps(negotiated)
        with self._tx() as tx:
            # Its result is not needed: over PostgreSQL it goes with the next statement, which the
            # server runs after it, with the device row locked (if the device exists) until commit.
            tx.later(stmt, params)
            tx.locked.add(device_id)

    # ---- sessions and audit ----

    def start_session(self, now: float, *, device_id: int | None, transport_identity: str | None) -> int:
        with self._tx() as tx:
            sid = tx.insert_id(
                INS_SESSION,
                {"device_id": device_id, "transport_identity": transport_identity, "started_at": now},
            )
            tx.audit.append(
                {"session_id": sid, "at": now, "event": "session-start", "detail": transport_identity or ""}
            )
            return sid

    def start_session_for(self, now: float, transport_identity: str) -> tuple[Device, int] | None:
        """Start a session of the device `transport_identity` names (as `device_by_transport_identity`
        finds it); the device without its attested claims and the session's id, or None (nothing
        inserted) when no device has it. Over PostgreSQL one statement (START_SESSION_FOR) instead of
        a look-up and an INSERT."""
        if self._sqlite:  # no INSERT in a WITH: the look-up, then the INSERT, in one transaction
            with self.atomic():
                with self._tx() as tx:
                    rows = tx.rows(SEL_SESSION_DEVICE_BY_TID, {"tid": transport_identity})
                if not rows:
                    return None
                device = device_from_row(rows[0])
                sid = self.start_session(now, device_id=device.id, transport_identity=transport_identity)
                return device, sid
        with self._tx() as tx:
            rows = tx.rows(START_SESSION_FOR, {"tid": transport_identity, "now": now})
            if not rows:
                return None
            sid, device = int(rows[0][0]), device_from_row(rows[0][1:])
            tx.audit.append(
                {"session_id": sid, "at": now, "event": "session-start", "detail": transport_identity}
            )
            return device, sid

    def end_session(self, session_id: int, now: float, outcome: str) -> float | None:
        with self._tx() as tx:
            tx.audit.append({"session_id": session_id, "at": now, "event": "session-end", "detail": outcome})
            rows = tx.rows(END_SESSION, {"sid": session_id, "ended_at": now, "outcome": outcome})
            return float(rows[0][0]) if rows else None

    def finish_session(self, session_id: int, now: float, outcome: str) -> None:
        with self._tx() as tx:
            tx.audit.append({"session_id": session_id, "at": now, "event": "session-end", "detail": outcome})
            tx.later(END_SESSION, {"sid": session_id, "ended_at": now, "outcome": outcome})

    def bind_session(self, session_id: int, device_id: int) -> None:
        with self._tx() as tx:
            tx.later(BIND_SESSION, {"sid": session_id, "dev": device_id})

    def audit(self, session_id: int | None, now: float, event: str, detail: str = "") -> None:
        """Append to the audit log; the row is written with the transaction's other audit rows."""
        with self._tx() as tx:
            tx.audit.append({"session_id": session_id, "at": now, "event": event, "detail": detail})

    def audit_log(self, session_id: int | None = None) -> list[tuple[int | None, float, str, str]]:
        a = audit_t.c
        with self._tx() as tx:
            tx.flush_audit()
            q = select(a.session_id, a.at, a.event, a.detail).order_by(a.id)
            if session_id is not None:
                q = q.where(a.session_id == session_id)
            return [(r[0], r[1], r[2], r[3]) for r in tx.conn.execute(q)]

    def sessions(self) -> list[tuple[int, int | None, float, float | None, str | None]]:
        with self._tx() as tx:
            q = select(SES.id, SES.device_id, SES.started_at, SES.ended_at, SES.outcome).order_by(SES.id)
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
        answered: bool = False,
    ) -> Outstanding:
        """Record a request awaiting its answer; beyond `cap` open requests per device (or for unknown
        devices) the oldest are superseded. A token must be unique among a device's open requests.
        `answered`: the request is recorded as answered already (a stateless request adopted on its
        answer, whose spent token makes it unique): no cap, no token check."""
        state = ANSWERED if answered else OPEN
        params = _outstanding_params(
            session_id, device_id, kind, token, challenge, state, now, lifetime, data
        )
        oid = self._insert_outstanding(params, cap, answered=answered)
        return Outstanding(
            oid, session_id, device_id, kind, token, challenge, state, now, now + lifetime,
            json_columns.loads(params["data"]),
        )  # fmt: skip

    def _insert_outstanding(self, params: dict[str, Any], cap: int, *, answered: bool) -> int:
        """The INSERT of `add_outstanding`: the new row's id."""
        with self._tx() as tx:
            if answered:
                return tx.insert_id(INS_OUTSTANDING, params)
            # Usually one statement: the INSERT itself checks the cap and the token.
            found = tx.rows(INS_OUTSTANDING_GUARDED[params["device_id"] is not None], {**params, "cap": cap})
            return int(found[0][0]) if found else self._add_outstanding_capped(tx, params, cap)

    def record_outstanding(
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
    ) -> None:
        """`add_outstanding` of an open request, reading nothing back: over PostgreSQL a device's
        request is one statement sent with the COMMIT (INS_OUTSTANDING_SUPERSEDING), and a duplicate
        token fails the whole transaction there with the same StoreError."""
        params = _outstanding_params(session_id, device_id, kind, token, challenge, OPEN, now, lifetime, data)
        if device_id is None or not self._psycopg:  # no fast path to defer it on (tam_tx.Tx.later)
            self._insert_outstanding(params, cap, answered=False)  # no Outstanding built to be dropped
            return
        with self._tx() as tx:
            tx.later(INS_OUTSTANDING_SUPERSEDING, {**params, "cap": cap})

    def _add_outstanding_capped(self, tx: Tx, params: dict[str, Any], cap: int) -> int:
        """add_outstanding when the device has `cap` open requests already (or one with the token)."""
        device_id, token = params["device_id"], params["token"]
        # One query gives both the duplicate-token check and the open requests to cap.
        if device_id is None:
            open_rows = tx.rows(SEL_OPEN_UNBOUND)
        else:
            open_rows = tx.rows(SEL_OPEN_OF_DEVICE, {"dev": device_id})
        if token is not None and any(r[1] == token for r in open_rows):
            raise StoreError(DUPLICATE_TOKEN)
        excess = len(open_rows) - (cap - 1)
        if excess > 0:
            tx.conn.execute(SUPERSEDE, {"ids": [r[0] for r in open_rows[:excess]]})
        return tx.insert_id(INS_OUTSTANDING, params)

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
        shape = (token is not None, challenge is not None, device_id is not None, len(kinds))
        q = self._find_queries.get(shape)
        if q is None:  # one pre-built statement per shape
            match = answer_match(token=shape[0], challenge=shape[1], device=shape[2], kinds=shape[3])
            q = self._find_queries[shape] = select(*OUT_COLS).where(*match).order_by(OUT.id.desc())
        params = _answer_params(token, challenge, kinds, device_id)
        with self._tx() as tx:
            return [outstanding_from_row(r) for r in tx.rows(q, params)]

    _find_queries: ClassVar[dict[tuple[bool, bool, bool, int], Any]] = {}  # shared: statements only, no state

    def latest_open_query(self, device_id: int, now: float) -> Outstanding | None:
        """The newest unexpired open QueryRequest that could belong to this device (token-less ones
        first): what a token-less Error answers, e.g. when the Agent could not verify the request."""
        with self._tx() as tx:
            q = (
                select(*OUT_COLS)
                .where(
                    OUT.state == OPEN,
                    OUT.kind == "query",
                    OUT.expires_at > now,
                    (OUT.device_id == device_id) | OUT.device_id.is_(None),
                )
                .order_by(OUT.token.is_not(None), OUT.id.desc())
            )
            row = tx.conn.execute(q).first()
            return outstanding_from_row(row) if row else None

    def latest_open_update(self, device_id: int, now: float) -> Outstanding | None:
        """The newest unexpired open Update sent to this device: what a token-less Error answers when
        the Agent could not even decode the Update (e.g. over its size limit), so no token came back."""
        with self._tx() as tx:
            q = (
                select(*OUT_COLS)
                .where(
                    OUT.state == OPEN, OUT.kind == "update", OUT.expires_at > now, OUT.device_id == device_id
                )
                .order_by(OUT.id.desc())
            )
            row = tx.conn.execute(q).first()
            return outstanding_from_row(row) if row else None

    def claim_open(
        self,
        *,
        token: bytes | None = None,
        challenge: bytes | None = None,
        kinds: Sequence[str] = ("query", "update"),
        device_id: int,
        now: float,
        then_components: bool = False,
    ) -> Outstanding | None:
        """Claim in one statement the request `find_outstanding` would list first, if it is open,
        unexpired at `now` and bound to `device_id`; returns it (answered). None otherwise: the
        caller asks `find_outstanding` why. `then_components`: the caller will record the device's
        report next; over PostgreSQL the device's row is locked and its component rows and the
        catalog read in the claim's round trip (what `set_device_components` would read after it)."""
        if (token is None) == (challenge is None):
            raise StoreError("claim_open needs a token or a challenge")
        if not kinds:
            return None
        params = {**_answer_params(token, challenge, kinds, device_id), "now": now}
        claim = claim_open_statement(token is not None, len(kinds))
        with self._tx() as tx:
            if then_components and not self._sqlite and device_id not in tx.locked:
                device = {"dev": device_id}
                rows = tx.rows_reading_ahead(
                    claim, params, (LOCK_DEVICE, device), (SEL_DEVICE_COMPONENTS, device), (SEL_LATEST, {})
                )
                tx.locked.add(device_id)  # claimed first, then locked: the order of every message
            else:
                rows = tx.rows(claim, params)
            return outstanding_from_row(rows[0]) if rows else None

    def claim(self, outstanding_id: int, device_id: int) -> bool:
        """Mark an open request answered by `device_id`; False if someone answered it first."""
        with self._tx() as tx:
            return tx.run(CLAIM, {"oid": outstanding_id, "dev": device_id}) == 1

    def abandon_sessions(self, cutoff: float, now: float) -> list[tuple[int, float]]:
        """End as "abandoned" the open sessions whose requests all expired before `cutoff`."""
        with self._tx() as tx:
            ended = sorted(
                (int(r[0]), float(r[1]))
                for r in tx.conn.execute(ABANDON_SESSIONS, {"cutoff": cutoff, "ended_at": now})
            )
            tx.audit.extend(
                {"session_id": sid, "at": now, "event": "session-end", "detail": "abandoned"}
                for sid, _ in ended
            )
            return ended

    def expire_outstanding(self, now: float) -> int:
        """Drop requests past their expiry (answered or not); returns how many."""
        with self._tx() as tx:
            return int(tx.conn.execute(EXPIRE, {"now": now}).rowcount)

    def outstanding(self, device_id: int | None = None) -> list[Outstanding]:
        with self._tx() as tx:
            q = select(*OUT_COLS).order_by(OUT.id)
            if device_id is not None:
                q = q.where(OUT.device_id == device_id)
            return [outstanding_from_row(r) for r in tx.conn.execute(q)]

    # ---- spent self-authenticating tokens ----

    def spend_token(self, key: bytes, expires_at: float) -> bool:
        """Record a token's single use; False if it was spent before (by this or another process).

        INSERT ... ON CONFLICT DO NOTHING RETURNING (SQLite and PostgreSQL): a returned row says this
        call won, and a conflict does not abort the caller's transaction as a failed plain INSERT would
        on PostgreSQL. Not the row count: SQLAlchemy reports -1 for an INSERT over psycopg 3."""
        stmt = SPEND_TOKEN[self._engine.dialect.name]
        with self._tx() as tx:
            return bool(tx.rows(stmt, {"key": key, "expires_at": expires_at}))

    def forget_spent_tokens(self, now: float) -> int:
        """Drop spent tokens past their expiry (they are refused as expired anyway); returns how many."""
        with self._tx() as tx:
            return int(tx.conn.execute(delete(spent_t).where(spent_t.c.expires_at <= now)).rowcount)

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
                select(CAT.id, CAT.envelope).where(
                    CAT.component_key == key, CAT.sequence_number == sequence_number
                )
            ).first()
            if row is None:
                tx.conn.execute(
                    insert(catalog_t).values(
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
                tx.conn.execute(update(catalog_t).where(CAT.id == row[0]).values(name=name))
            # The audience is a property of the component, not of one version.
            tx.conn.execute(update(catalog_t).where(CAT.component_key == key).values(audience=audience))
            return CatalogEntry(
                tuple(bytes(p) for p in component_id), sequence_number, envelope, name, audience
            )

    def latest_components(self) -> list[CatalogEntry]:
        """The highest sequence number of every component in the catalog."""
        with self._tx() as tx:
            return [
                CatalogEntry(component_from_key(r[0]), r[1], r[2], r[3], r[4]) for r in tx.rows(SEL_LATEST)
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
        query = select(CAT.sequence_number, CAT.envelope, CAT.name, CAT.audience).where(
            CAT.component_key == key
        )
        if sequence_numbers is not None:
            query = query.where(CAT.sequence_number.in_(list(sequence_numbers)))
        with self._tx() as tx:
            rows = tx.conn.execute(query.order_by(CAT.sequence_number))
            cid = tuple(bytes(p) for p in component_id)
            return [CatalogEntry(cid, int(r[0]), bytes(r[1]), r[2], str(r[3])) for r in rows]

    def snapshot(self) -> dict[str, list[tuple[Any, ...]]]:
        """Every table's rows as plain tuples: lets tests assert that a refused message changed nothing."""
        out: dict[str, list[tuple[Any, ...]]] = {}
        with self._tx() as tx:
            tx.flush_audit()
            for table in Base.metadata.sorted_tables:
                rows = tx.conn.execute(select(table).order_by(*table.primary_key.columns)).all()
                out[table.name] = [tuple(r) for r in rows]
        return out
