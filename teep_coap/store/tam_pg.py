"""The store's fixed statements on PostgreSQL, sent straight through libpq's pipeline mode.

psycopg's cursor costs about 50 µs of client CPU per statement on top of libpq (query conversion,
the prepare manager, its generators and waits; docs/scale.md, "PostgreSQL per session (session 9)"),
and in a transaction it sends BEGIN and COMMIT as round trips of their own. `PgWire` drives the
same libpq connection (the one under psycopg and SQLAlchemy) itself, for the statements `tam_tx.Tx`
runs on its fast path:

- each statement is converted once to `$n` parameters and prepared on the server at its first use
  on a connection (the Parse rides in the same round trip);
- parameters are dumped and results loaded by psycopg's own `Transformer`, so values convert as
  through a psycopg cursor;
- BEGIN goes with the transaction's first statement, and writes whose result the caller does not
  need (`later`) wait and go with the next statement or with COMMIT: one Sync, one round trip.
  The server still runs them one after the other in the order sent, each with its own snapshot
  (READ COMMITTED): a lock taken by one is held when the next starts, as before.

Outside a round trip the connection is back in ordinary mode with the transaction open, so
psycopg (SQLAlchemy's statements of the same transaction, its COMMIT or ROLLBACK) finds it as it
would have left it: `transaction_status` tells it whether a transaction is open."""

from __future__ import annotations

import re
import select
import time
from contextlib import suppress
from typing import Any

import psycopg
from psycopg import errors, pq
from psycopg.adapt import PyFormat, Transformer
from psycopg.pq.abc import PGresult

ROUND_TRIP_TIMEOUT = 60.0  # seconds without an answer from PostgreSQL before the connection is dropped
_BIND = re.compile(r"%\((\w+)\)s|%%")
_AUTO = PyFormat.AUTO
_IDLE = pq.TransactionStatus.IDLE
_SYNC = pq.ExecStatus.PIPELINE_SYNC
_ABORTED = pq.ExecStatus.PIPELINE_ABORTED
_ERROR = (pq.ExecStatus.FATAL_ERROR, _ABORTED)
_BINARY = pq.Format.BINARY
# psycopg SQL text (named %(x)s binds) -> (libpq SQL text with $n binds, bind names in $n order).
_CONVERTED: dict[str, tuple[bytes, tuple[str, ...]]] = {}


def dollar_sql(sql: str) -> tuple[bytes, tuple[str, ...]]:
    """`sql` with psycopg's named binds turned into libpq's `$1, $2, ...` (one per distinct name)."""
    entry = _CONVERTED.get(sql)
    if entry is None:
        names: list[str] = []

        def number(m: re.Match[str]) -> str:
            if m.group(1) is None:  # "%%": a literal percent sign
                return "%"
            if m.group(1) not in names:
                names.append(m.group(1))
            return f"${names.index(m.group(1)) + 1}"

        entry = _CONVERTED[sql] = (_BIND.sub(number, sql).encode(), tuple(names))
    return entry


class PgWire:
    """The fast-path statements of one psycopg connection (one thread's), and the writes queued
    for the next round trip."""

    __slots__ = ("_count", "_pending", "_poll", "_pq", "_prepared", "_tf", "encoding", "round_trips")

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self._pq = conn.pgconn
        self._tf = Transformer(conn)
        self.encoding = conn.info.encoding
        # (SQL, parameter types) -> name of the statement prepared on this connection's server session
        self._prepared: dict[tuple[bytes, tuple[int, ...]], bytes] = {}
        # queued: (SQL, parameter types, dumped values, their formats)
        self._pending: list[tuple[bytes, tuple[int, ...], list[Any], list[Any]]] = []
        self._poll = select.poll()
        self._poll.register(self._pq.socket, select.POLLIN)
        self.round_trips = 0
        self._count = 0  # statements prepared so far: the next one's name

    @property
    def pending(self) -> bool:
        """Writes are queued: they go with the next statement or the COMMIT."""
        return bool(self._pending)

    def discard(self) -> None:
        """Forget the queued writes (their transaction is being rolled back)."""
        self._pending.clear()

    def later(self, sql: str, params: dict[str, Any]) -> None:
        """Queue a statement whose result nobody reads; a failure surfaces at the next round trip."""
        text, names = dollar_sql(sql)
        values = [params[n] for n in names]
        tf = self._tf
        dumped = list(tf.dump_sequence(values, [_AUTO] * len(values)))
        self._pending.append((text, tuple(tf.types or ()), dumped, list(tf.formats or ())))

    def execute(self, sql: str, params: dict[str, Any]) -> PGresult:
        """Run the statement (after the queued writes, BEGIN first if no transaction is open);
        its result. The first failure of the round trip is raised as psycopg's exception."""
        self.later(sql, params)
        return self._round_trip(commit=False)[-1]

    def execute_all(self, statements: list[tuple[str, dict[str, Any]]]) -> list[PGresult]:
        """Run the statements one after the other in one round trip (after the queued writes);
        their results in order."""
        for sql, params in statements:
            self.later(sql, params)
        return self._round_trip(commit=False)[-len(statements) :]

    def flush(self) -> None:
        """Send the queued writes now (before a statement that does not go through this wire)."""
        if self._pending:
            self._round_trip(commit=False)

    def commit(self) -> None:
        """Send the queued writes and COMMIT in one round trip (nothing if no transaction is open
        and nothing is queued)."""
        if self._pending or self._pq.transaction_status != _IDLE:
            self._round_trip(commit=True)

    def rows(self, result: PGresult) -> list[Any]:
        """The rows of a result, as tuples of Python values (psycopg's loaders)."""
        tf = self._tf
        tf.set_pgresult(result)
        return list(tf.load_rows(0, result.ntuples, tuple))

    def _round_trip(self, *, commit: bool) -> list[PGresult]:
        conn = self._pq
        # Per command sent: the key of the statement it prepares, "q" for a queued statement, None
        # for BEGIN and COMMIT.
        sent: list[tuple[bytes, tuple[int, ...]] | str | None] = []
        queued, self._pending = self._pending, []
        conn.enter_pipeline_mode()
        try:
            if conn.transaction_status == _IDLE:
                conn.send_query_params(b"BEGIN", None)
                sent.append(None)
            for text, types, values, formats in queued:
                key = (text, types)
                name = self._prepared.get(key)
                if name is None:
                    self._count += 1
                    name = self._prepared[key] = b"teep_%d" % self._count
                    conn.send_prepare(name, text, param_types=types)
                    sent.append(key)
                conn.send_query_prepared(name, values, param_formats=formats, result_format=_BINARY)
                sent.append("q")
            if commit:
                conn.send_query_params(b"COMMIT", None)
                sent.append(None)
            conn.pipeline_sync()
            results = self._communicate(len(sent))
        finally:
            with suppress(psycopg.Error):  # fails only if the connection broke: it is dropped then
                conn.exit_pipeline_mode()
        self.round_trips += 1
        failure: PGresult | None = None
        for what, result in zip(sent, results, strict=True):
            if result.status in _ERROR:
                if isinstance(what, tuple):  # not prepared: prepare again, under a new name, next time
                    self._prepared.pop(what, None)
                if failure is None and result.status != _ABORTED:
                    failure = result
        if failure is not None:
            raise errors.error_from_result(failure, encoding=self.encoding)
        if any(r.status in _ERROR for r in results):
            raise psycopg.OperationalError("PostgreSQL aborted the pipeline without saying why")
        return [r for what, r in zip(sent, results, strict=True) if what == "q"]  # the queued ones'

    def _communicate(self, commands: int) -> list[PGresult]:
        """Flush, then read each command's result and the Sync's, waiting at most ROUND_TRIP_TIMEOUT."""
        conn = self._pq
        deadline = time.monotonic() + ROUND_TRIP_TIMEOUT
        while conn.flush():  # the output did not fit in the socket's buffer
            self._wait(deadline, select.POLLIN | select.POLLOUT)
            conn.consume_input()
        results: list[PGresult] = []
        current: PGresult | None = None
        while True:
            while conn.is_busy():
                self._wait(deadline, select.POLLIN)
                conn.consume_input()
            result = conn.get_result()
            if result is None:  # the end of one command's results
                if current is None:
                    raise psycopg.OperationalError("PostgreSQL sent no result for a command")
                results.append(current)
                current = None
                continue
            if result.status == _SYNC:
                break
            if current is None or current.status not in _ERROR:
                current = result
        if len(results) != commands:
            raise psycopg.OperationalError(f"expected {commands} results from PostgreSQL, got {len(results)}")
        return results

    def _wait(self, deadline: float, events: int) -> None:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise psycopg.OperationalError(f"no answer from PostgreSQL in {ROUND_TRIP_TIMEOUT:.0f} s")
        self._poll.modify(self._pq.socket, events)
        if not self._poll.poll(remaining * 1000):
            raise psycopg.OperationalError(f"no answer from PostgreSQL in {ROUND_TRIP_TIMEOUT:.0f} s")
