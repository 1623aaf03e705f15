"""The TAM database connection: the engine (SQLite tuned, or PostgreSQL), one connection per thread kept
open between messages, and the transaction every store method runs in."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext, suppress
from typing import TYPE_CHECKING, Any

from sqlalchemy import create_engine, event
from sqlalchemy.engine import URL, Connection, Engine
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from teep_coap.protocol.records import StoreError
from teep_coap.store.tam_schema import OPEN_TOKEN_INDEX, create_schema
from teep_coap.store.tam_sql import DUPLICATE_TOKEN, INS_AUDIT, audit_params, insert_audit_rows

if TYPE_CHECKING:
    from teep_coap.store.tam_pg import PgWire


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


# SQLite: statement object -> (statement, SQL text, bind names in order, default bind values).
_SQLITE_COMPILED: dict[int, tuple[Any, str, tuple[str, ...], dict[str, Any]]] = {}
LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})
AUDIT_ROWS_AT_ONCE = 16  # over psycopg, a message's audit rows up to this many go in one INSERT
# PostgreSQL (psycopg 3): statement object -> (statement, SQL text with %(name)s binds, default values).
_PG_COMPILED: dict[int, tuple[Any, str, dict[str, Any]]] = {}
# PostgreSQL: (SQL text, audit row count) -> that statement with the audit rows' INSERT in its WITH.
_PG_WITH_AUDIT: dict[tuple[str, int], str] = {}


def _sqlite_compiled(stmt: Any, dialect: Any) -> tuple[str, tuple[str, ...], dict[str, Any]]:
    """`stmt` compiled once for SQLite (qmark parameters); the statement is kept so its id stays its."""
    entry = _SQLITE_COMPILED.get(id(stmt))
    if entry is None or entry[0] is not stmt:
        compiled = stmt.compile(dialect=dialect)
        names = tuple(compiled.positiontup or ())
        entry = _SQLITE_COMPILED[id(stmt)] = (stmt, compiled.string, names, dict(compiled.params))
    return entry[1], entry[2], entry[3]


def _pg_compiled(stmt: Any, dialect: Any) -> tuple[str, dict[str, Any]]:
    """`stmt` compiled once for psycopg 3 (named %(name)s parameters with the dialect's casts)."""
    entry = _PG_COMPILED.get(id(stmt))
    if entry is None or entry[0] is not stmt:
        compiled = stmt.compile(dialect=dialect)
        entry = _PG_COMPILED[id(stmt)] = (stmt, compiled.string, dict(compiled.params))
    return entry[1], entry[2]


def _values_key(params: dict[str, Any] | None) -> tuple[Any, ...]:
    """A statement's values as a key of the rows read ahead (they are integers, bytes and strings)."""
    return tuple(sorted(params.items())) if params else ()


def same_host_url(url: URL) -> bool:
    """SQLite, or a server reached over a Unix-domain socket or the loopback interface: tens of µs
    a statement, not a network's round trip."""
    if url.get_backend_name() == "sqlite":
        return True
    host = url.host or str(url.query.get("host") or "")
    return not host or host.startswith("/") or host in LOOPBACK_HOSTS


class Tx:
    """The connection of one transaction, and the audit rows it will write just before commit.

    `rows`, `run`, `insert_id`, `later` and `run_many` execute the store's fixed statements straight
    on the driver's connection with the statement compiled once: over SQLite (sqlite3, qmark
    parameters) and over PostgreSQL (libpq through `tam_pg.PgWire`: prepared on the server at first
    use, BEGIN with the first statement, writes nobody reads the result of sent with the next
    statement or the COMMIT). SQLAlchemy's per-execution work, about 25 µs per statement over SQLite
    and more over psycopg, was a third of the store's CPU per TEEP session. Only for statements whose
    values need no type conversion beyond what the driver does (integers, floats, text, bytes;
    booleans come back as 0/1 over SQLite) and no expanding lists.

    Over SQLite the transaction begins (BEGIN IMMEDIATE: the write lock) at its first statement, so
    a message that needs no state (a stateless connect) takes no lock and commits nothing, as
    over PostgreSQL. `locked` holds the devices whose row this transaction has written (so locked,
    on PostgreSQL) already."""

    __slots__ = ("_ahead", "_begun", "_conn", "_parts", "_raw", "_wire", "audit", "locked")

    def __init__(
        self, conn: Connection, raw: sqlite3.Connection | None = None, *, wire: PgWire | None = None
    ) -> None:
        self._conn = conn
        self.audit: list[dict[str, Any]] = []
        self.locked: set[int] = set()
        self._raw = raw
        self._begun = raw is None  # SQLite: BEGIN IMMEDIATE before the first statement
        self._wire = wire  # PostgreSQL over psycopg 3: the libpq fast path, or None
        # (id(statement), its values) -> (statement, rows read ahead)
        self._ahead: dict[tuple[int, tuple[Any, ...]], tuple[Any, list[Any]]] = {}
        self._parts = 0  # savepoints opened (their names)

    @property
    def conn(self) -> Connection:
        """SQLAlchemy's connection, for the statements without a fast path (same transaction; the
        writes queued on the fast path are sent first, so they run before)."""
        if not self._begun:
            self._begin()
        if self._wire is not None:
            self._wire.flush()
        self._ahead.clear()  # it may write what was read ahead (the catalog: add_component)
        return self._conn

    @property
    def begun(self) -> bool:
        """False while no statement ran: there is nothing to commit."""
        return self._begun

    def _begin(self) -> None:
        assert self._raw is not None
        self._raw.execute("BEGIN IMMEDIATE")
        self._begun = True

    def _pg_sql(self, stmt: Any, given: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        """The statement's SQL and values; the audit rows waiting to be written ride along (below)."""
        sql, defaults = _pg_compiled(stmt, self._conn.dialect)
        params = {**defaults, **given}
        if self.audit and len(self.audit) <= AUDIT_ROWS_AT_ONCE:
            rows, self.audit = self.audit, []
            sql = self._with_audit(sql, len(rows))
            params.update(audit_params(rows))
        return sql, params

    def _pg_run(self, stmt: Any, given: dict[str, Any]) -> Any:
        assert self._wire is not None
        return self._wire.execute(*self._pg_sql(stmt, given))

    def _with_audit(self, sql: str, count: int) -> str:
        """`sql` with the INSERT of `count` audit rows as a data-modifying WITH clause (PostgreSQL runs
        it with the statement, whatever the statement is, in one round trip). A message's audit rows
        are thus written by its next statement instead of a statement of their own at commit; the
        engine audits before its last write of a message for that reason."""
        text = _PG_WITH_AUDIT.get((sql, count))
        if text is None:
            audit_sql, _ = _pg_compiled(insert_audit_rows(count), self._conn.dialect)
            # a statement with a WITH of its own gets the audit rows as its first WITH query
            rest = f", {sql[5:]}" if sql.startswith("WITH ") else f" {sql}"
            text = _PG_WITH_AUDIT[(sql, count)] = f"WITH audit_rows AS ({audit_sql}){rest}"
        return text

    def _sqlite_cursor(self, stmt: Any, given: dict[str, Any]) -> sqlite3.Cursor:
        sql, names, defaults = _sqlite_compiled(stmt, self._conn.dialect)
        if not self._begun:
            self._begin()
        assert self._raw is not None
        return self._raw.execute(sql, [given.get(n, defaults[n]) for n in names])

    def rows(self, stmt: Any, params: dict[str, Any] | None = None) -> list[Any]:
        """All result rows of a SELECT or an ... RETURNING statement (tuples; index them)."""
        if self._ahead:
            ahead = self._ahead.pop((id(stmt), _values_key(params)), None)
            if ahead is not None and ahead[0] is stmt:
                return ahead[1]
        if self._raw is not None:
            return self._sqlite_cursor(stmt, params or {}).fetchall()
        if self._wire is not None:
            return self._wire.rows(self._pg_run(stmt, params or {}))
        return list(self._conn.execute(stmt, params or {}).all())

    def rows_reading_ahead(
        self, stmt: Any, params: dict[str, Any], *ahead: tuple[Any, dict[str, Any]]
    ) -> list[Any]:
        """`rows(stmt, params)`; over PostgreSQL the statements `ahead` (statement, values) go in the
        same round trip, run right after it in order, and the transaction's next `rows()` of each
        with the same values gets its rows (for reads the caller will need next and that nothing
        the transaction writes before changes). Rows read ahead already are used as `rows` would."""
        if self._wire is None or (self._ahead and (id(stmt), _values_key(params)) in self._ahead):
            return self.rows(stmt, params)
        results = self._wire.execute_all([self._pg_sql(s, p) for s, p in ((stmt, params), *ahead)])
        for (later_stmt, values), result in zip(ahead, results[1:], strict=True):
            self._ahead[(id(later_stmt), _values_key(values))] = (later_stmt, self._wire.rows(result))
        return self._wire.rows(results[0])

    def run(self, stmt: Any, params: dict[str, Any]) -> int:
        """Execute an UPDATE or DELETE; its row count."""
        if self._raw is not None:
            return int(self._sqlite_cursor(stmt, params).rowcount)
        if self._wire is not None:
            return int(self._pg_run(stmt, params).command_tuples or 0)
        return int(self._conn.execute(stmt, params).rowcount)

    def later(self, stmt: Any, params: dict[str, Any]) -> None:
        """Execute a write whose result the caller does not need. Over PostgreSQL it is sent with the
        transaction's next statement or its COMMIT (the server runs it before them; a failure is
        raised there); elsewhere at once."""
        if self._wire is not None:
            self._wire.later(*self._pg_sql(stmt, params))
        elif self._raw is not None:
            self._sqlite_cursor(stmt, params)
        else:
            self._conn.execute(stmt, params)

    def insert_id(self, stmt: Any, params: dict[str, Any]) -> int:
        """Execute an INSERT ... RETURNING id (every column bound by name); the new row's id."""
        if self._raw is not None:
            return int(self._sqlite_cursor(stmt, params).fetchone()[0])
        if self._wire is not None:
            return int(self._wire.rows(self._pg_run(stmt, params))[0][0])
        return int(self._conn.execute(stmt, params).scalar_one())

    def run_many(self, stmt: Any, params: list[dict[str, Any]]) -> None:
        """Execute an INSERT or UPDATE once per parameter set. Over PostgreSQL they are queued like
        `later` (sent with the next statement or the COMMIT)."""
        if self._raw is not None:
            sql, names, defaults = _sqlite_compiled(stmt, self._conn.dialect)
            if not self._begun:
                self._begin()
            self._raw.executemany(sql, [[p.get(n, defaults[n]) for n in names] for p in params])
            return
        if self._wire is not None:
            for p in params:
                self.later(stmt, p)
            return
        self._conn.execute(stmt, params)

    def flush_audit(self) -> None:
        """Write the transaction's audit rows not written yet: one executemany over SQLite; over
        PostgreSQL one multi-row INSERT for up to AUDIT_ROWS_AT_ONCE rows, queued for the COMMIT
        (or the next statement)."""
        if not self.audit:
            return
        rows, self.audit = self.audit, []
        if self._wire is not None and len(rows) <= AUDIT_ROWS_AT_ONCE:
            self.later(insert_audit_rows(len(rows)), audit_params(rows))
            return
        self.run_many(INS_AUDIT, rows)

    def savepoint(self) -> tuple[str, frozenset[int]]:
        """Open a part of the transaction that `rollback_to` can undo alone (SAVEPOINT); returns what
        `release` and `rollback_to` need. The audit rows of earlier parts are written first, so
        undoing this part never undoes them. Over PostgreSQL it is sent with the next statement."""
        self.flush_audit()
        self._ahead.clear()  # what an earlier part read ahead is not this part's to use
        self._parts += 1
        name = f"part_{self._parts}"
        self._plain(f"SAVEPOINT {name}")
        return name, frozenset(self.locked)

    def next_part(self) -> None:
        """A part of the transaction without a savepoint begins: what an earlier part read ahead is
        not this part's to use (it may have written since)."""
        self._ahead.clear()

    def release(self, part: tuple[str, frozenset[int]]) -> None:
        """Keep the part (its audit rows written, RELEASE)."""
        self.flush_audit()
        self._ahead.clear()
        self._plain(f"RELEASE SAVEPOINT {part[0]}")

    def rollback_to(self, part: tuple[str, frozenset[int]]) -> None:
        """Undo the part: its writes (ROLLBACK TO), its audit rows not written yet, the device locks
        it took (PostgreSQL releases them with it) and what was read ahead."""
        name, locked = part
        self.audit.clear()
        self.locked = set(locked)
        self._ahead.clear()
        self._plain(f"ROLLBACK TO SAVEPOINT {name}")
        self._plain(f"RELEASE SAVEPOINT {name}")

    def _plain(self, sql: str) -> None:
        """A statement without values: SQLite at once (after BEGIN IMMEDIATE), PostgreSQL queued."""
        if self._raw is not None:
            if not self._begun:
                self._begin()
            self._raw.execute(sql)
        elif self._wire is not None:
            self._wire.later(sql, {})
        else:
            self._conn.exec_driver_sql(sql)

    def commit(self) -> None:
        """PostgreSQL: the queued writes and COMMIT in one round trip (SQLAlchemy's commit after it
        finds no transaction open and sends nothing). Elsewhere SQLAlchemy commits."""
        if self._wire is not None:
            self._wire.commit()

    def close(self) -> None:
        if self._wire is not None:
            self._wire.discard()


class TamDatabase:
    """The engine, per-thread connections and transactions under `TamStore` (which adds the TAM's state)."""

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
            create_schema(self._engine)
        except (SQLAlchemyError, ImportError) as exc:
            raise StoreError(f"cannot open TAM database {url!r}: {exc}") from exc
        self._sqlite = is_sqlite
        # psycopg 3 under SQLAlchemy: Tx runs the fixed statements on its connection (fast path).
        self._psycopg = self._engine.dialect.driver == "psycopg"
        dbapi = getattr(self._engine.dialect, "loaded_dbapi", None)
        # The driver's own exceptions: the fast paths run statements outside SQLAlchemy.
        self._failures: tuple[type[BaseException], ...] = (
            SQLAlchemyError,
            *((sqlite3.Error,) if is_sqlite else ((dbapi.Error,) if dbapi is not None else ())),
        )
        self._driver_integrity: tuple[type[BaseException], ...] = (
            (sqlite3.IntegrityError,) if is_sqlite else ((dbapi.IntegrityError,) if dbapi is not None else ())
        )
        self._local = threading.local()
        self._conns: list[Connection] = []  # one per thread that used the store, closed by close()
        self._conns_lock = threading.Lock()

    @property
    def embedded(self) -> bool:
        return self._sqlite

    @property
    def same_host(self) -> bool:
        """The database answers within a local round trip (`same_host_url`)."""
        return same_host_url(self._engine.url)

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

    def _wire(self, pg: Any) -> PgWire:
        """This thread's PgWire, on its current psycopg connection (a new one after a reconnect)."""
        wire: tuple[Any, PgWire] | None = getattr(self._local, "wire", None)
        if wire is None or wire[0] is not pg:
            # here, not at module level: psycopg and libpq cost every SQLite TAM 9 MiB of RSS and 80 ms
            # of start-up CPU (2026-12-06 00:30 UTC); only the psycopg dialect, loaded, gets here
            from teep_coap.store.tam_pg import PgWire

            wire = self._local.wire = (pg, PgWire(pg))
        return wire[1]

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
    def savepoint(self) -> Iterator[None]:
        """Inside `atomic()`: a part of the transaction that an exception leaving the block undoes
        alone (SAVEPOINT, ROLLBACK TO), the transaction going on. The TAM engine puts each message of
        a group commit in one, so a refused message takes no other message's writes with it."""
        tx: Tx | None = getattr(self._local, "tx", None)
        if tx is None:
            raise RuntimeError("TamStore.savepoint() is only for use inside atomic()")
        part = tx.savepoint()
        try:
            yield
        except BaseException:
            tx.rollback_to(part)
            raise
        tx.release(part)

    def part(self) -> AbstractContextManager[None]:
        """Inside `atomic()`: the next part of a batch run without savepoints (TamRepository.part)."""
        tx: Tx | None = getattr(self._local, "tx", None)
        if tx is None:
            raise RuntimeError("TamStore.part() is only for use inside atomic()")
        tx.next_part()
        return nullcontext()  # not a generator: one per request of every batch

    def _tx(self) -> AbstractContextManager[Tx]:
        """The transaction of this thread's `atomic()`, else a new one around the block."""
        current: Tx | None = getattr(self._local, "tx", None)
        if current is not None:
            # not a generator: the engine's store calls run inside atomic(), ~20 per session, and a
            # @contextmanager costs about 2 µs each time
            return nullcontext(current)
        return self._new_tx()

    @contextmanager
    def _new_tx(self) -> Iterator[Tx]:
        try:
            conn = self._connection()
            with conn.begin():
                raw: Any = None
                wire: PgWire | None = None
                if self._sqlite:  # the driver runs in autocommit mode: Tx opens the transaction
                    raw = conn.connection.dbapi_connection
                elif self._psycopg:  # PgWire opens the transaction with the first statement
                    wire = self._wire(conn.connection.dbapi_connection)
                tx = Tx(conn, raw, wire=wire)
                try:
                    yield tx
                    tx.flush_audit()
                    tx.commit()
                finally:
                    tx.close()
        except IntegrityError as exc:
            raise StoreError(f"TAM database constraint violated: {exc.orig}") from exc
        except self._driver_integrity as exc:  # from a fast-path statement, outside SQLAlchemy
            if getattr(getattr(exc, "diag", None), "constraint_name", None) == OPEN_TOKEN_INDEX:
                # a queued add_outstanding (INS_OUTSTANDING_SUPERSEDING) refused at the COMMIT
                raise StoreError(DUPLICATE_TOKEN) from exc
            raise StoreError(f"TAM database constraint violated: {exc}") from exc
        except self._failures as exc:  # the fast paths raise the driver's errors
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
