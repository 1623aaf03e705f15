"""How long the TAM keeps its history, and the pace at which it forgets it.

`sessions` and `audit` gain one and about six rows per session and nothing else trims them (the
engine's sweep only trims `outstanding` and `spent_tokens`). Pruning deletes ended sessions older
than a cutoff with their audit and request rows, in bounded batches, so that no transaction holds the
database for long: `teep-coap tam prune --older-than 30d` by hand, or `keep-history = "90d"` in
tam.toml for the engine's timer. Both take a duration as a number and a unit; a bare number is
refused, because "90" could mean seconds or days and the wrong guess deletes history.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from teep_coap.protocol.errors import ConfigError

UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 7 * 86400.0}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")
PRUNE_BATCH = 200  # sessions (with their audit and request rows) per batch of the engine's timer
PRUNE_AGAIN = 1.0  # seconds to the timer's next batch while batches come back full (a backlog)


class BadDuration(ConfigError):
    """A duration is not a positive number followed by one of the units s, m, h, d, w."""


def parse_duration(text: object, what: str) -> float:
    """Seconds of a duration such as "30d", "12h", "1.5h", "45m", "90s"; `what` names where it was
    written (an option, a tam.toml key) for the error."""
    if not isinstance(text, str):
        raise BadDuration(f'{what}: {text!r} has no unit; write a number and a unit, e.g. "90d" or "12h"')
    written = text.strip().lower()
    match = _DURATION.fullmatch(written)
    if match is None and re.fullmatch(r"\d+(?:\.\d+)?", written):
        raise BadDuration(
            f"{what}: {text!r} has no unit; write e.g. {written}d for days or {written}h for hours"
        )
    if match is None:
        raise BadDuration(
            f"{what}: {text!r} is not a duration; write a number and a unit (s, m, h, d, w), e.g. 30d or 12h"
        )
    seconds = float(match.group(1)) * UNITS[match.group(2)]
    if seconds <= 0:
        raise BadDuration(f"{what}: {text!r} is no time at all; give a duration above zero, e.g. 30d")
    return seconds


@dataclass(frozen=True, slots=True)
class PruneCounts:
    """Rows one prune deleted (or, in a dry run, would delete), per table. `more`: a batch reached
    its limit, so rows older than the cutoff may remain for the next batch."""

    sessions: int = 0
    audit: int = 0
    outstanding: int = 0
    more: bool = False

    def __add__(self, other: PruneCounts) -> PruneCounts:
        return PruneCounts(
            self.sessions + other.sessions,
            self.audit + other.audit,
            self.outstanding + other.outstanding,
            other.more,
        )

    @property
    def rows(self) -> int:
        return self.sessions + self.audit + self.outstanding

    def per_table(self) -> dict[str, int]:
        return {"sessions": self.sessions, "audit": self.audit, "outstanding": self.outstanding}


__all__ = ["PRUNE_AGAIN", "PRUNE_BATCH", "UNITS", "BadDuration", "PruneCounts", "parse_duration"]
