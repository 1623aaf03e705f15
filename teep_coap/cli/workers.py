"""`tam serve --workers N`: N TAM processes on one address, sharing one PostgreSQL database.

Each worker binds its own socket to the address with SO_REUSEPORT. CoAP (aiocoap sets it): Linux
hashes a datagram's 4-tuple to one of the UDP sockets, so a DTLS or OSCORE peer keeps talking to the
worker that holds its session while the set of workers is stable. That avoids sharing per-peer
security state between processes (docs/scale.md says why this beats one shared socket). HTTP(S):
each worker listens on the TCP port and the kernel hands every new connection to one of them; a
connection (and the TLS session on it) stays with its worker, and the TEEP state is in the database
whichever worker a Broker's next connection reaches. The parent probes the port once without
SO_REUSEPORT, so another program already on it is still refused, then starts the workers with the
address in SHARED_PORT_ENV so they skip that probe (and, over TCP, bind with SO_REUSEPORT),
supervises them (one dies: all stop, exit status 2) and forwards SIGTERM/SIGINT/SIGHUP.

SQLite has one writer at a time and no row locks: a multi-worker TAM needs PostgreSQL.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import click

from teep_coap.profiles.workers import (
    WorkersError,
    check_workers_allowed,
    listening_protocol,
    read_serving_uri,
)
from teep_coap.store.tam_db import TamStore
from teep_coap.store.tamdir import database_url, read_config
from teep_coap.transport.shared_port import SHARED_PORT_ENV, ensure_port_free, pick_port, shared_port_value

WORKER_START_TIMEOUT = 60.0  # seconds for each worker to print its URI (a loaded machine is slow)
WORKER_STOP_TIMEOUT = 10.0  # seconds for a worker to exit after SIGTERM before it is killed


def _worker_command(args: list[str]) -> list[str]:
    return [sys.executable, "-c", "from teep_coap.cli import main; main()", "tam", "serve", *args]


def _read_banner(proc: subprocess.Popen[str], deadline: float) -> str:
    """The worker's `TAM serving URI (...)` line; WorkersError if it exits or stays silent."""
    uri = read_serving_uri(proc, deadline)
    if uri is not None:
        return uri
    status = proc.poll()
    why = f"exited with status {status}" if status is not None else "printed no URI in time"
    raise WorkersError(f"TAM worker {proc.pid} {why} (its errors are on stderr above)")


def _stop(procs: list[subprocess.Popen[str]]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + WORKER_STOP_TIMEOUT
    for proc in procs:
        try:
            proc.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def serve_workers(
    profile_name: str,
    tam_dir: str,
    db: str | None,
    policy: str | None,
    bind: tuple[str, int],
    workers: int,
    extra_args: list[str],
) -> None:
    """Start `workers` `tam serve` processes on one address and supervise them until SIGINT/SIGTERM.
    `extra_args` go to every worker as they are (verbosity, --stats-file, --certs)."""

    check_workers_allowed(profile_name, None, workers)  # the profile first: OTrP has no tam.toml
    database = db or database_url(Path(tam_dir), read_config(Path(tam_dir)))
    check_workers_allowed(profile_name, database, workers)
    TamStore(database).close()  # the schema is created once here, not raced by N workers
    protocol = listening_protocol(profile_name)
    host, port = bind
    port = port or pick_port(host, protocol)
    ensure_port_free(host, port, protocol)
    env = dict(os.environ, **{SHARED_PORT_ENV: shared_port_value(protocol, host, port)})
    args = ["--profile", profile_name, "--dir", tam_dir, "--db", database, "--bind", f"{host}:{port}"]
    args += ["--policy", policy] if policy else []
    args += extra_args
    stop_requested = False

    def request_stop(_sig: int, _frame: object) -> None:
        nonlocal stop_requested
        stop_requested = True

    def forward_hup(_sig: int, _frame: object) -> None:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGHUP)

    procs: list[subprocess.Popen[str]] = []
    old = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    old[signal.SIGHUP] = signal.signal(signal.SIGHUP, forward_hup)
    try:
        for _ in range(workers):
            # Each worker's SIGINT comes from us (a terminal's Ctrl-C reaches the whole group too).
            procs.append(subprocess.Popen(_worker_command(args), stdout=subprocess.PIPE, text=True, env=env))
        deadline = time.monotonic() + WORKER_START_TIMEOUT
        uri = ""
        for proc in procs:
            uri = _read_banner(proc, deadline)
        pids = ", ".join(str(p.pid) for p in procs)
        click.echo(f"TAM serving {uri} (profile {profile_name}, {workers} workers: pids {pids})")
        sys.stdout.flush()
        while not stop_requested:
            dead = [p for p in procs if p.poll() is not None]
            if dead:
                raise WorkersError(
                    f"TAM worker {dead[0].pid} exited with status {dead[0].returncode}; "
                    "the other workers were stopped"
                )
            time.sleep(0.2)
    finally:
        _stop(procs)
        for sig, handler in old.items():
            signal.signal(sig, handler)


__all__ = ["serve_workers"]
