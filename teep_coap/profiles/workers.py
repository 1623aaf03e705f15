"""Which TAMs may run as several worker processes (`tam serve --workers N`, `bench sessions
--tam-workers N`): TEEP over CoAP (the kernel spreads datagrams over the workers' sockets by peer
address) with a database the workers can share (PostgreSQL; SQLite has one writer)."""

from __future__ import annotations

from teep_coap.errors import TeepCoapError


class WorkersError(TeepCoapError):
    """A multi-worker TAM cannot start (wrong store or profile) or one of its workers died."""


def check_workers_allowed(profile_name: str, database: str, workers: int) -> None:
    """Refuse what N > 1 workers cannot serve correctly, saying what to do instead."""
    from teep_coap.profiles import load_profile

    if workers <= 1:
        return
    profile = load_profile(profile_name)
    if profile.protocol == "otrp" or not profile.transport.is_coap:
        raise WorkersError(
            f"--workers {workers} is implemented for TEEP CoAP profiles (coap, coaps, oscore), "
            f"not {profile.name!r}: run one worker per port behind an HTTP load balancer instead"
        )
    if database.startswith("sqlite"):
        raise WorkersError(
            f"--workers {workers} needs a database the workers can share: SQLite has one writer "
            "(use --workers 1, or --db postgresql+psycopg://USER@HOST/DB)"
        )


__all__ = ["WorkersError", "check_workers_allowed"]
