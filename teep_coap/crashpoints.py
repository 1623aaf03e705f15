"""A test hook: stop the process at a named point, as `kill -9` would there.

Set `TEEP_COAP_CRASH_AT=<point>` in a TAM's or an Agent's environment and the process ends with
`os._exit(137)` (no cleanup, no flush: what SIGKILL leaves) the first time it reaches that point. The
crash-and-loss tests use it to stop a process exactly after a database commit or a store fsync, which
a signal from outside cannot hit reliably. Unset (the normal case) a point costs one comparison with
None; nothing else is read or built.

`TEEP_COAP_PAUSE_AT=<point>` (with `TEEP_COAP_PAUSE_MARKER=<file>`) instead *pauses* the process there:
it writes "<pid> <point>" to the marker file and sleeps, so a test can send a real SIGKILL at exactly
that point (a process left paused ends itself after PAUSE_LIMIT seconds, status 3, never hangs a
test). When both are set the crash point wins.

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
import functools
import os
import re
import sys
import time
from collections.abc import Iterator

ENV = "TEEP_COAP_CRASH_AT"
PAUSE_ENV = "TEEP_COAP_PAUSE_AT"
MARKER_ENV = "TEEP_COAP_PAUSE_MARKER"
EXIT_STATUS = 137  # what a shell reports for a process killed by SIGKILL (128 + 9)
PAUSE_LIMIT = 60.0  # seconds a paused process waits for its kill before it ends itself
PAUSE_EXPIRED = 3  # its exit status then (not 137: the test did not kill it)

# Read once: the point this process stops at (crash wins over pause), and whether it pauses there.
armed: str | None = os.environ.get(ENV) or os.environ.get(PAUSE_ENV) or None
_pausing = not os.environ.get(ENV) and armed is not None
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
    if _pausing:
        _pause(point)
    os._exit(EXIT_STATUS)


def _pause(point: str) -> None:
    """Tell the test where this process is, then wait for its SIGKILL (bounded)."""
    marker = os.environ.get(MARKER_ENV)
    if marker:  # written whole, then renamed: the test never reads half of it
        with open(marker + ".tmp", "w", encoding="ascii") as f:
            f.write(f"{os.getpid()} {point}\n")
        os.replace(marker + ".tmp", marker)
    deadline = time.monotonic() + PAUSE_LIMIT
    while time.monotonic() < deadline:
        time.sleep(0.05)
    sys.stderr.write(f"teep-coap: paused at {point} for {PAUSE_LIMIT:g} s and nobody killed it\n")
    os._exit(PAUSE_EXPIRED)


def message_point(prefix: str, message: object) -> str:
    """`prefix.<message type, kebab case>`: ("tam.received", QueryResponse()) →
    "tam.received.query-response"."""
    name = message if isinstance(message, str) else type(message).__name__
    return _point(prefix, name)


_CAPITAL_INSIDE = re.compile(r"(?<!^)(?=[A-Z])")


@functools.lru_cache(maxsize=256)  # a few message kinds; the TAM names a point per request, armed or not
def _point(prefix: str, name: str) -> str:
    return f"{prefix}.{_CAPITAL_INSIDE.sub('-', name).lower()}"


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
