"""Rate-limited, one-line log records for what junk from the network causes.

A server must say that it refused something, but an attacker decides how often: 1,000 malformed
datagrams once wrote 1.7 MB of tracebacks. `JunkLogLimit` is a logging filter that, for the records
it governs (every record of the CoAP library's and asyncio's loggers, and our records marked with
`extra=JUNK`), turns an attached traceback into one line (`ExcType: message`) and lets through at
most `burst` records per message template per `window` seconds; the next record let through says
how many were suppressed. Other records pass untouched. `install_junk_log_limit()` attaches one
shared instance to the loggers concerned (idempotent).
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable

JUNK = {"teep_junk": True}  # `log.warning(..., extra=JUNK)`: this line is caused by a peer's input
GOVERNED_LOGGERS = ("coap", "coap-server", "coap-server.oscore-site", "asyncio")
OUR_LOGGERS = ("teep_coap.transport.coap.server", "teep_coap.transport.http.server", "teep_coap.session")
MAX_TEMPLATES = 256  # distinct message templates tracked (bounded: templates come from code, not peers)


class JunkLogLimit(logging.Filter):
    """At most `burst` governed records per (logger, template) per `window` seconds, one line each."""

    def __init__(
        self, burst: int = 5, window: float = 60.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        super().__init__()
        self.burst = burst
        self.window = window
        self.clock = clock
        # (logger name, template) -> [window start, records let through, records suppressed]
        self._seen: OrderedDict[tuple[str, str], list[float]] = OrderedDict()
        self.suppressed_total = 0

    def forget(self) -> None:
        """Start every template's window afresh (a test that counts lines must not inherit another's)."""
        self._seen.clear()

    def _governed(self, record: logging.LogRecord) -> bool:
        return record.name in GOVERNED_LOGGERS or getattr(record, "teep_junk", False)

    def filter(self, record: logging.LogRecord) -> bool:
        if not self._governed(record):
            return True
        key = (record.name, str(record.msg))
        now = self.clock()
        slot = self._seen.get(key)
        if slot is None or now - slot[0] >= self.window:
            suppressed = int(slot[2]) if slot is not None else 0
            slot = [now, 0.0, 0.0]
            self._seen[key] = slot
            while len(self._seen) > MAX_TEMPLATES:
                self._seen.popitem(last=False)
        else:
            suppressed = 0
        self._seen.move_to_end(key)
        if slot[1] >= self.burst:
            slot[2] += 1
            self.suppressed_total += 1
            return False
        slot[1] += 1
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            text = f"{type(exc).__name__}: {str(exc)[:200]}"
            record.msg = f"{record.msg} ({text.replace('%', '%%') if record.args else text})"
            record.exc_info = None
            record.exc_text = None
        if record.stack_info:
            record.stack_info = None
        if suppressed:
            record.msg = f"{record.msg} [{suppressed} similar lines suppressed in {self.window:.0f} s]"
        return True


_LIMIT: JunkLogLimit | None = None


def install_junk_log_limit() -> JunkLogLimit:
    """Attach the shared `JunkLogLimit` to the CoAP library's, asyncio's and our transport loggers."""
    global _LIMIT
    if _LIMIT is None:
        _LIMIT = JunkLogLimit()
    for name in GOVERNED_LOGGERS + OUR_LOGGERS:
        logger = logging.getLogger(name)
        if _LIMIT not in logger.filters:
            logger.addFilter(_LIMIT)
    return _LIMIT
