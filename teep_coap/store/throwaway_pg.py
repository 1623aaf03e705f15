"""A throwaway PostgreSQL server for tests and `bench sessions --db postgres`.

initdb + pg_ctl in a temporary folder, listening on a free loopback TCP port only, trust
authentication for one user, stopped and deleted on exit. PostgreSQL refuses to run as root, so
as root the server runs as `nobody` (the folder is handed to it). Nothing here is for production.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from teep_coap.store.tam_db import StoreError

START_TIMEOUT = 60  # seconds for initdb, and again for pg_ctl start (a loaded machine is slow)
USER = "teep"


class PostgresUnavailable(StoreError):
    """The PostgreSQL server binaries (initdb, pg_ctl) are not installed."""


def postgres_binaries() -> tuple[str, str] | None:
    """(initdb, pg_ctl) paths, from PATH or Debian's versioned folders; None if absent."""
    found = [shutil.which("initdb"), shutil.which("pg_ctl")]
    if all(found):
        return found[0], found[1]  # type: ignore[return-value]
    lib = Path("/usr/lib/postgresql")
    for version in sorted(lib.iterdir(), reverse=True) if lib.is_dir() else []:
        initdb, pg_ctl = version / "bin" / "initdb", version / "bin" / "pg_ctl"
        if initdb.exists() and pg_ctl.exists():
            return str(initdb), str(pg_ctl)
    return None


def _free_tcp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _as_nobody() -> tuple[Callable[[], None] | None, int | None, int | None]:
    """A preexec function dropping root to `nobody` (and its uid/gid), or no-op when not root."""
    if os.geteuid() != 0:
        return None, None, None

    entry = pwd.getpwnam("nobody")

    def drop() -> None:
        os.setgid(entry.pw_gid)
        os.setuid(entry.pw_uid)

    return drop, entry.pw_uid, entry.pw_gid


def _run(cmd: list[str], preexec: Callable[[], None] | None, what: str) -> None:
    try:
        done = subprocess.run(
            cmd, preexec_fn=preexec, capture_output=True, text=True, timeout=START_TIMEOUT, check=False
        )
    except subprocess.TimeoutExpired:
        raise StoreError(f"throwaway PostgreSQL: {what} took over {START_TIMEOUT} s") from None
    if done.returncode != 0:
        raise StoreError(
            f"throwaway PostgreSQL: {what} failed: {(done.stderr or done.stdout).strip()[-400:]}"
        )


@dataclass(frozen=True)
class ThrowawayPostgres:
    """A running throwaway server: its SQLAlchemy URL and data folder."""

    url: str
    data_dir: Path

    def server_pid(self) -> int | None:
        """The PID of the server's main process (postmaster.pid's first line): `bench sessions`
        counts the CPU of its process tree as the database's. None if it cannot be read."""
        try:
            return int((self.data_dir / "postmaster.pid").read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return None


@contextmanager
def throwaway_postgres(
    *, durable: bool = True, max_connections: int = 200, unix_socket: bool = False
) -> Iterator[str]:
    """Yield the SQLAlchemy URL of a fresh PostgreSQL server; stop it and delete its files on exit.
    (`throwaway_postgres_server` yields the server itself.)"""
    with throwaway_postgres_server(
        durable=durable, max_connections=max_connections, unix_socket=unix_socket
    ) as server:
        yield server.url


@contextmanager
def throwaway_postgres_server(
    *, durable: bool = True, max_connections: int = 200, unix_socket: bool = False
) -> Iterator[ThrowawayPostgres]:
    """Start a fresh PostgreSQL server; stop it and delete its files on exit.

    `durable=False` turns fsync off (tests: faster, and a crash loses nothing that matters).
    `unix_socket=True`: the URL names the server's Unix-domain socket instead of its loopback TCP
    port, as a TAM on the database's own host would connect; each round trip then costs the client
    about a third less CPU (kernel TCP work; docs/scale.md, "TAM store per session (session 8)")."""
    binaries = postgres_binaries()
    if binaries is None:
        raise PostgresUnavailable(
            "PostgreSQL server binaries (initdb, pg_ctl) not found: apt-get install postgresql"
        )
    initdb, pg_ctl = binaries
    preexec, uid, gid = _as_nobody()
    base = Path(tempfile.mkdtemp(prefix="teep-pg-"))
    data = base / "data"
    if uid is not None and gid is not None:
        os.chown(base, uid, gid)
    port = _free_tcp_port()
    options = f"-c listen_addresses=127.0.0.1 -p {port} -k {base} -c max_connections={max_connections}"
    if not durable:
        options += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
    started = False
    try:
        _run(
            [initdb, "-D", str(data), "-U", USER, "--auth=trust", "-E", "UTF8", "--no-sync"],
            preexec,
            "initdb",
        )
        _run(
            [
                pg_ctl,
                "-D",
                str(data),
                "-l",
                str(base / "server.log"),
                "-o",
                options,
                "-w",
                "-t",
                str(START_TIMEOUT),
                "start",
            ],
            preexec,
            "pg_ctl start",
        )
        started = True
        if unix_socket:
            url = f"postgresql+psycopg://{USER}@/postgres?host={base}&port={port}"
        else:
            url = f"postgresql+psycopg://{USER}@127.0.0.1:{port}/postgres"
        yield ThrowawayPostgres(url, data)
    finally:
        if started:
            subprocess.run(
                [pg_ctl, "-D", str(data), "-m", "immediate", "-w", "-t", "30", "stop"],
                preexec_fn=preexec,
                capture_output=True,
                timeout=60,
                check=False,
            )
        shutil.rmtree(base, ignore_errors=True)


__all__ = [
    "PostgresUnavailable",
    "ThrowawayPostgres",
    "postgres_binaries",
    "throwaway_postgres",
    "throwaway_postgres_server",
]
