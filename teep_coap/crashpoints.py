"""A test hook: stop the process at a named point, as `kill -9` would there.

Set `TEEP_COAP_CRASH_AT=<point>` in a TAM's or an Agent's environment and the process ends with
`os._exit(137)` (no cleanup, no flush: what SIGKILL leaves) the first time it reaches that point. The
crash-and-loss tests use it to stop a process exactly after a database commit or a store fsync, which
a signal from outside cannot hit reliably. Unset (the normal case) a point costs one comparison with
None; nothing else is read or built.

In-process tests use `simulate(point)`: reaching the point raises `SimulatedCrash` (a BaseException,
so no `except Exception` on the way swallows it); what was committed stays, what was not is rolled back
or never written, as after a real crash.

Points (see docs/engines.md, "Recovery after loss and crashes"):

    tam.received.<message>   the TAM got a message and has not processed it   (connect,
    tam.committed.<message>  the TAM committed its answer, not yet sent it     query-response,
                                                                               success, error)
    agent.received.<message> the Agent got a message and has not processed it (query-request, update)
    agent.answered.<message> the Agent processed it, its answer is not sent   (query-response,
                                                                               success, error)
    agent.received.final     the TAM's last (empty) answer arrived at the Broker
    store.<step>             inside a component-store commit (blobs-written, index-written,
                             index-replaced, garbage-collected)
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator

ENV = "TEEP_COAP_CRASH_AT"
EXIT_STATUS = 137  # what a shell reports for a process killed by SIGKILL (128 + 9)

armed: str | None = os.environ.get(ENV) or None  # read once: the point this process stops at
_simulated = False


class SimulatedCrash(BaseException):
    """Raised at the armed point inside `simulate()`: the in-process stand-in for a killed process."""


def reached(point: str) -> None:
    """Stop here if `point` is the armed one (callers building a name test `armed` first)."""
    global armed
    if armed is None or point != armed:
        return
    if _simulated:
        armed = None  # one crash per arming, like a process that is gone
        raise SimulatedCrash(point)
    os._exit(EXIT_STATUS)


def message_point(prefix: str, message: object) -> str:
    """`prefix.<message type, kebab case>`: ("tam.received", QueryResponse()) →
    "tam.received.query-response"."""
    name = message if isinstance(message, str) else type(message).__name__
    return f"{prefix}.{re.sub(r'(?<!^)(?=[A-Z])', '-', name).lower()}"


@contextlib.contextmanager
def simulate(point: str) -> Iterator[None]:
    """Within the block, reaching `point` raises SimulatedCrash once (tests only)."""
    global armed, _simulated
    saved = armed, _simulated
    armed, _simulated = point, True
    try:
        yield
    finally:
        armed, _simulated = saved


def was_reached() -> bool:
    """Inside `simulate()`: True once the armed point raised (its arming is then spent)."""
    return _simulated and armed is None
