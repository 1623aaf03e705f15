"""The database's own plan of a store statement, for tests that a statement walks an index."""

from __future__ import annotations

from typing import Any

from sqlalchemy import event

from teep_coap.store.tam_db import TamStore


def plan_of(store: TamStore, stmt: Any, params: dict[str, Any]) -> str:
    """The plan of `stmt` with `params` bound: SQLAlchemy compiles and binds it as the store does, and
    the SQL sent is prefixed with EXPLAIN on its way to the driver, so nothing runs or is written."""
    prefix = "EXPLAIN QUERY PLAN " if store.embedded else "EXPLAIN "
    plan: list[str] = []
    with store._engine.connect() as conn:
        if not store.embedded:
            # A sequential scan only where no index can serve: test tables are too small for the
            # planner to prefer an index on its own.
            conn.exec_driver_sql("SET enable_seqscan = off")

        @event.listens_for(conn, "before_cursor_execute", retval=True)
        def explain(_c: Any, _cur: Any, sql: str, values: Any, _ctx: Any, _many: bool) -> tuple[str, Any]:
            return prefix + sql, values

        @event.listens_for(conn, "after_cursor_execute")
        def read(_c: Any, cursor: Any, *_rest: Any) -> None:
            plan.extend(str(r[-1]) for r in cursor.fetchall())

        conn.execute(stmt, params)
        conn.rollback()
    return "\n".join(plan)
