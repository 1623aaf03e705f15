"""Which TAMs may run as several worker processes (`tam serve --workers N`, `bench sessions
--tam-workers N`): TEEP over CoAP (the kernel spreads datagrams over the workers' sockets by peer
address) or over HTTP(S) (it spreads new TCP connections), with a database the workers can share
(PostgreSQL; SQLite has one writer). OTrP is refused: its TAM keeps its sessions in the process's memory."""

from __future__ import annotations

import selectors
import subprocess
import time
from typing import Literal

from teep_coap.errors import TeepCoapError
from teep_coap.profiles import load_profile

SERVING = "TAM serving "  # the first line `tam serve` prints; the URI is its third word


class WorkersError(TeepCoapError):
    """A multi-worker TAM cannot start (wrong store or profile) or one of its workers died."""


def check_workers_allowed(profile_name: str, database: str | None, workers: int) -> None:
    """Refuse what N > 1 workers cannot serve correctly, saying what to do instead (`database`
    None: the profile only, before the database is known)."""

    if workers <= 1:
        return
    profile = load_profile(profile_name)
    if profile.protocol == "otrp":
        raise WorkersError(
            f"--workers {workers} is implemented for TEEP profiles, not the OTrP profile {profile.name!r} "
            "(its TAM keeps sessions in memory): serve it with --workers 1"
        )
    if database is not None and database.startswith("sqlite"):
        raise WorkersError(
            f"--workers {workers} needs a database the workers can share: SQLite has one writer "
            "(use --workers 1, or --db postgresql+psycopg://USER@HOST/DB)"
        )


def listening_protocol(profile_name: str) -> Literal["udp", "tcp"]:
    """What the workers of this profile's TAM share: a UDP port (CoAP) or a TCP port (HTTP)."""
    return "udp" if load_profile(profile_name).transport.is_coap else "tcp"


__all__ = ["WorkersError", "check_workers_allowed", "listening_protocol", "read_serving_uri"]


def read_serving_uri(proc: subprocess.Popen[str], deadline: float) -> str | None:
    """The URI of a child `tam serve`'s first `TAM serving URI …` line, or None when it exits, closes
    its output or says nothing by `deadline` (time.monotonic); the caller says what that means."""
    assert proc.stdout is not None
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        while time.monotonic() < deadline:
            if not sel.select(timeout=0.2):
                if proc.poll() is not None:
                    return None
                continue
            line = proc.stdout.readline()
            if not line:
                return None
            if line.startswith(SERVING):
                return line.split()[2]
    return None
