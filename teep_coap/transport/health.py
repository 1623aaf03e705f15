"""What a TAM answers on its health path, on both bindings: "this process is up and serving".

A load balancer polls it to decide where to send devices. The answer never touches the database
or the handler, so it stays cheap for anyone to ask (no authentication: a load balancer has no
device credentials) and cannot be used to load the database; it says the process serves, not that
its database is reachable (a TAM whose database is gone answers TEEP requests with 5xx / 5.00).
It is a few bytes whatever the request, so it amplifies nothing: `ok pid N` names the worker
process that answered, which tells the workers of one `tam serve --workers N` apart.
"""

from __future__ import annotations

import os

HEALTH_PATH = "/health"


def health_text() -> str:
    """The health answer's body: `ok pid N` (at most 14 bytes: Linux pids have at most 7 digits)."""
    return f"ok pid {os.getpid()}"


__all__ = ["HEALTH_PATH", "health_text"]
