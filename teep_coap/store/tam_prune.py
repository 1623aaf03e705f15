"""Pruning the TAM's history: ended sessions older than a cutoff with their audit and request rows,
and audit entries of no session older than it. A part of `TamStore` (`tam_db`), kept apart for size.

Never deleted: a session that has not ended; an ended one with a request still open, or not expired
at the cutoff (its answer may still arrive, or be recognised as a repeat); the audit entries and
requests of the sessions kept; devices, their components, the catalog; spent tokens (the engine's
sweep trims those and expired requests by expiry).

A batch is one transaction: at most `limit` sessions, oldest end first, go with their audit rows and
requests (deleted first: both point to the session by foreign key), and at most `limit` audit
entries of no session. Each pick walks an index (`tam_schema`: sessions.ended_at,
outstanding.session_id, audit (session_id, at)), so a batch costs its own rows
whatever the table's size. On PostgreSQL the picked rows are locked and rows another transaction
holds are skipped (FOR UPDATE SKIP LOCKED), so workers pruning together take different batches.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import bindparam, delete, exists, func, or_, select
from sqlalchemy.engine import Connection

from teep_coap.protocol.records import OPEN, StoreError
from teep_coap.protocol.retention import PruneCounts
from teep_coap.store.tam_sql import OUT, SES, audit_t, outstanding_t, sessions_t
from teep_coap.store.tam_tx import TamDatabase

AUD = audit_t.c
MAX_BATCH = 5000  # sessions per batch at most: each id is a bound value of the batch's DELETEs

# A session the cutoff has passed: ended before it, and no request of it open or alive at it.
_STILL_NEEDED = exists().where(
    OUT.session_id == SES.id, or_(OUT.state == OPEN, OUT.expires_at > bindparam("cutoff"))
)
_PRUNABLE = (SES.ended_at < bindparam("cutoff"), ~_STILL_NEEDED)
_SESSIONLESS = (AUD.session_id.is_(None), AUD.at < bindparam("cutoff"))
_IDS: Any = bindparam("ids", expanding=True)

DEL_AUDIT_OF = delete(audit_t).where(AUD.session_id.in_(_IDS))
DEL_OUTSTANDING_OF = delete(outstanding_t).where(OUT.session_id.in_(_IDS))
DEL_SESSIONS = delete(sessions_t).where(SES.id.in_(_IDS))
DEL_AUDIT = delete(audit_t).where(AUD.id.in_(_IDS))

_prunable_ids = select(SES.id).where(*_PRUNABLE).scalar_subquery()
COUNT_SESSIONS = select(func.count()).select_from(sessions_t).where(*_PRUNABLE)
COUNT_AUDIT = select(func.count()).select_from(audit_t).where(AUD.session_id.in_(_prunable_ids))
COUNT_SESSIONLESS = select(func.count()).select_from(audit_t).where(*_SESSIONLESS)
COUNT_OUTSTANDING = select(func.count()).select_from(outstanding_t).where(OUT.session_id.in_(_prunable_ids))


def pick_sessions(limit: int) -> Any:
    """The ids of at most `limit` prunable sessions, oldest end first (binds cutoff)."""
    return (
        select(SES.id).where(*_PRUNABLE).order_by(SES.ended_at).limit(limit).with_for_update(skip_locked=True)
    )


def pick_sessionless(limit: int) -> Any:
    """The ids of at most `limit` audit entries of no session older than the cutoff. In no order:
    PostgreSQL would sort every such entry (IS NULL is not an equality to its planner) before the
    LIMIT, a cost that grows with the backlog; unordered, the index scan stops after `limit`."""
    return select(AUD.id).where(*_SESSIONLESS).limit(limit).with_for_update(skip_locked=True)


def check_limit(limit: int) -> None:
    if not 1 <= limit <= MAX_BATCH:
        raise StoreError(f"a prune batch takes 1 to {MAX_BATCH} sessions, not {limit}")


class HistoryStore(TamDatabase):
    """Deleting old history (every method one transaction, or part of the caller's `atomic()`)."""

    def prune_history(self, cutoff: float, limit: int) -> PruneCounts:
        """One batch: ended sessions older than `cutoff` (at most `limit`) with their audit rows and
        requests, and audit entries of no session older than it (at most `limit`); what it deleted.
        `more` is set when a pick was full, so another batch may find more."""
        check_limit(limit)
        params: dict[str, Any] = {"cutoff": cutoff}
        with self._tx() as tx:
            conn = tx.conn
            sessions = [int(r[0]) for r in conn.execute(pick_sessions(limit), params)]
            sessionless = [int(r[0]) for r in conn.execute(pick_sessionless(limit), params)]
            audit = outstanding = 0
            if sessions:
                audit = int(conn.execute(DEL_AUDIT_OF, {"ids": sessions}).rowcount)
                outstanding = int(conn.execute(DEL_OUTSTANDING_OF, {"ids": sessions}).rowcount)
                conn.execute(DEL_SESSIONS, {"ids": sessions})
            if sessionless:
                audit += int(conn.execute(DEL_AUDIT, {"ids": sessionless}).rowcount)
            full = len(sessions) == limit or len(sessionless) == limit
            return PruneCounts(len(sessions), audit, outstanding, more=full)

    def prune_history_all(
        self, cutoff: float, limit: int, *, pause: Callable[[float], None] = time.sleep
    ) -> tuple[PruneCounts, int]:
        """Batches of `prune_history` until one is not full; the total and the number of batches.

        After each batch it pauses as long as the batch took (at least 10 ms): a SQLite TAM waiting
        for the write lock gets it in between instead of being starved by back-to-back batches."""
        check_limit(limit)
        total, batches = PruneCounts(), 0
        while True:
            started = time.monotonic()
            done = self.prune_history(cutoff, limit)
            total, batches = total + done, batches + 1
            if not done.more:
                return total, batches
            pause(max(0.01, time.monotonic() - started))

    def prunable_history(self, cutoff: float) -> PruneCounts:
        """What `prune_history_all(cutoff, ...)` would delete now, counted without deleting (nor
        taking SQLite's write lock: the TAM serving from the same file goes on meanwhile)."""
        params = {"cutoff": cutoff}
        with self._snapshot() as conn:
            sessions = int(conn.execute(COUNT_SESSIONS, params).scalar_one())
            audit = int(conn.execute(COUNT_AUDIT, params).scalar_one())
            audit += int(conn.execute(COUNT_SESSIONLESS, params).scalar_one())
            outstanding = int(conn.execute(COUNT_OUTSTANDING, params).scalar_one())
        return PruneCounts(sessions, audit, outstanding)

    @contextmanager
    def _snapshot(self) -> Iterator[Connection]:
        """A connection of its own reading one consistent state: over SQLite a deferred transaction
        (a WAL reader, which never blocks the writer), over PostgreSQL an ordinary one."""
        try:
            with self._engine.connect() as conn:
                if self._sqlite:  # the driver runs without implicit transactions (tam_tx)
                    conn.exec_driver_sql("BEGIN")
                    try:
                        yield conn
                    finally:
                        conn.exec_driver_sql("ROLLBACK")
                else:
                    with conn.begin():
                        yield conn
        except self._failures as exc:
            raise StoreError(f"TAM database failure: {exc}") from exc


__all__ = ["MAX_BATCH", "HistoryStore"]
