"""What idling costs on this machine: the CPU time of one fixed unit of TAM-like work, run back to back
and after idle gaps.

A TAM's CPU per session rises as its load falls (docs/scale.md). Part of that is the code: fewer
requests share each commit. Part is the machine: a request that arrives after the process slept runs
on a CPU whose caches and branch predictors other work has cooled, and on a virtual machine a vCPU
that halted may resume on another host core. That part is not in any code path, so it is measured
apart from them: the same unit (a P-256 COSE_Sign1 verify and sign, CBOR and JSON round trips of a
TEEP-sized message, about what a TAM spends per request), timed with the thread's CPU clock, once
right after the previous unit and once after sleeping a gap. Gaps take turns within each round, and
the order reverses every other round, so that a machine whose speed drifts gives all of them the
same drift.
"""

from __future__ import annotations

import json
import math
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import cbor2

from teep_coap.bench.crypto import default_payload
from teep_coap.errors import TeepCoapError
from teep_coap.security import cose
from teep_coap.security.keys import generate_key
from teep_coap.security.truststore import TrustStore

DEFAULT_GAPS_MS = (0.0, 0.5, 2.0, 7.0)
MAX_GAP_MS = 100.0
UNITS_AT_ONCE = 10  # units of one gap in a row before the next gap takes its turn


class IdleCostError(TeepCoapError):
    """Gaps, units or rounds outside what `measure_idle_cost` can measure."""


@dataclass(frozen=True)
class IdleCost:
    """CPU µs per unit of work for each gap (ms of sleep before each unit), one mean per round."""

    gaps_ms: tuple[float, ...]
    units: int  # per gap and round
    rounds: int
    cpu_us: tuple[tuple[float, ...], ...]  # cpu_us[g][r]: gap g, round r

    def mean_us(self, g: int) -> float:
        return statistics.fmean(self.cpu_us[g])

    def ratio(self, g: int) -> float:
        """Gap g's CPU per unit over the smallest gap's (the first given)."""
        return self.mean_us(g) / self.mean_us(0)

    def to_json(self) -> dict[str, Any]:
        return {
            "units_per_gap_and_round": self.units,
            "rounds": self.rounds,
            "gaps": [
                {
                    "gap_ms": gap,
                    "cpu_us_per_unit": round(self.mean_us(g), 1),
                    "cpu_us_per_unit_by_round": [round(x, 1) for x in self.cpu_us[g]],
                    "ratio_to_first_gap": round(self.ratio(g), 3),
                }
                for g, gap in enumerate(self.gaps_ms)
            ],
        }


def parse_gaps(text: str) -> tuple[float, ...]:
    """`0,0.5,2,7` -> (0.0, 0.5, 2.0, 7.0); IdleCostError naming the bad item."""
    gaps = []
    for item in text.split(","):
        try:
            gaps.append(float(item))
        except ValueError:
            raise IdleCostError(f"gap {item.strip()!r} is not a number of milliseconds") from None
    return check_gaps(gaps)


def check_gaps(gaps: Sequence[float]) -> tuple[float, ...]:
    if not gaps:
        raise IdleCostError("give at least one gap")
    for gap in gaps:
        if not (math.isfinite(gap) and 0 <= gap <= MAX_GAP_MS):
            raise IdleCostError(f"gap {gap} ms: give milliseconds from 0 to {MAX_GAP_MS:g}")
    return tuple(float(g) for g in gaps)


def tam_like_unit() -> Callable[[], None]:
    """One unit of work, about what a TAM spends on one request besides the database and the network."""
    key = generate_key("esp256")
    trust = TrustStore([key.public])
    payload = default_payload()
    message = cose.sign1(payload, key)
    claims = {"nonce": payload.hex(), "ueid": key.kid.hex(), "measurements": [key.kid.hex()] * 4}

    def unit() -> None:
        cose.verify(message, trust)
        cose.sign1(payload, key)
        for _ in range(4):
            cbor2.loads(cbor2.dumps(cbor2.loads(payload)))
            json.loads(json.dumps(claims))

    return unit


def measure_idle_cost(
    gaps_ms: Sequence[float] = DEFAULT_GAPS_MS,
    *,
    units: int = 300,
    rounds: int = 3,
    unit: Callable[[], None] | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> IdleCost:
    """`units` timed units per gap and round; the first gap is the reference of `IdleCost.ratio`."""
    gaps = check_gaps(gaps_ms)
    if units < 1 or rounds < 1:
        raise IdleCostError(f"units ({units}) and rounds ({rounds}) must be at least 1")
    work = unit if unit is not None else tam_like_unit()
    for _ in range(UNITS_AT_ONCE):
        work()  # warm: first calls fill caches (keys, encoders) that every later unit finds
    spent = [[0.0] * rounds for _ in gaps]
    for r in range(rounds):
        order = list(range(len(gaps))) if r % 2 == 0 else list(reversed(range(len(gaps))))
        done = 0
        while done < units:
            step = min(UNITS_AT_ONCE, units - done)
            for g in order:
                pause = gaps[g] / 1000
                for _ in range(step):
                    if pause > 0:
                        sleep(pause)
                    start = time.thread_time()
                    work()
                    spent[g][r] += time.thread_time() - start
            done += step
    cpu_us = tuple(tuple(total / units * 1e6 for total in per_round) for per_round in spent)
    return IdleCost(gaps, units, rounds, cpu_us)


def format_idle_cost(result: IdleCost) -> str:
    lines = [
        f"CPU time of one unit of TAM-like work (P-256 verify + sign, CBOR and JSON round trips), "
        f"{result.units} units per gap, {result.rounds} rounds:",
        f"  {'gap before each unit':>22}  {'CPU per unit':>12}  {'vs first gap':>12}",
    ]
    for g, gap in enumerate(result.gaps_ms):
        lines.append(f"  {gap:>19g} ms  {result.mean_us(g):>9.1f} µs  {result.ratio(g):>11.3f}×")
    lines.append("  (a ratio above 1 is what idling costs here: the same work on a CPU that slept before it)")
    return "\n".join(lines)


__all__ = [
    "DEFAULT_GAPS_MS", "MAX_GAP_MS", "IdleCost", "IdleCostError", "check_gaps", "format_idle_cost",
    "measure_idle_cost", "parse_gaps", "tam_like_unit",
]  # fmt: skip
