"""One `bench sessions` set-up run several times in a row, and the median of each figure.

A figure such as "TAM CPU per coaps-psk session ≤ 1.5 ms" is read against one machine, whose speed
may drift from minute to minute (this project's 2-vCPU VM: ±15 %). One run says what that minute
gave; `--repeat N` runs the same set-up N times back to back (each with its own world and TAM
process, as a single run) and reports every run and the median, lowest and highest of each figure,
so a target can be read as "the median of N runs" with the spread beside it.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from teep_coap.bench.sessions import BenchResult

# (JSON key of BenchResult.to_json(), label, unit) of the figures summarised over the runs
FIGURES: tuple[tuple[str, str, str], ...] = (
    ("tam_cpu_ms_per_session", "TAM CPU per session", "ms"),
    ("tam_engine_cpu_ms_per_session", "  in engine calls", "ms"),
    ("sessions_per_second", "sessions/s", ""),
    ("p50_ms", "p50 latency", "ms"),
    ("p99_ms", "p99 latency", "ms"),
    ("client_cpu_ms_per_session", "devices' CPU per session", "ms"),
    ("tam_to_device_cpu_ratio", "TAM CPU / devices' CPU", ""),
    ("tam_requests_per_commit", "requests per engine call", ""),
)


@dataclass
class Repeated:
    """The runs of one set-up, in the order they ran."""

    runs: list[BenchResult] = field(default_factory=list)

    def summary(self) -> dict[str, dict[str, float]]:
        """Median, lowest and highest of each figure over the runs that reported it."""
        reports = [r.to_json() for r in self.runs]
        out: dict[str, dict[str, float]] = {}
        for key, _, _ in FIGURES:
            vals = [float(v) for j in reports if isinstance(v := j.get(key), int | float)]
            if vals:
                out[key] = {
                    "median": round(statistics.median(vals), 3),
                    "min": round(min(vals), 3),
                    "max": round(max(vals), 3),
                }
        return out

    def failed(self) -> int:
        return sum(r.failed for r in self.runs)

    def to_json(self) -> dict[str, Any]:
        return {
            "repeat": len(self.runs),
            "failed": self.failed(),
            "summary": self.summary(),
            "runs": [r.to_json() for r in self.runs],
        }


def run_repeated(times: int, run: Callable[[], BenchResult]) -> Repeated:
    """`run()` `times` times, one after the other."""
    if times < 1:
        raise ValueError(f"repeat at least once, not {times}")
    out = Repeated()
    for _ in range(times):
        out.runs.append(run())
    return out


def _figure(value: Any, unit: str) -> str:
    """Milliseconds to the hundredth (as `bench sessions` prints them), the rest as they are."""
    if value is None:
        return "?"
    return f"{value:.2f} {unit}" if unit == "ms" else f"{value:g}"


def format_repeated(rep: Repeated) -> str:
    """A line per run, then the median (lowest–highest) of each figure."""
    first = rep.runs[0]
    lines = [
        f"profile {first.profile}: {first.devices} devices, concurrency {first.concurrency},"
        f" {first.sessions} sessions, {len(rep.runs)} runs back to back",
    ]
    for i, r in enumerate(rep.runs, 1):
        j = r.to_json()
        lines.append(
            f"  run {i}: TAM {_figure(j['tam_cpu_ms_per_session'], 'ms')}/session"
            f" (engine {_figure(j['tam_engine_cpu_ms_per_session'], 'ms')}),"
            f" {j['sessions_per_second']} sessions/s, p99 {j['p99_ms']} ms,"
            f" devices {_figure(j['client_cpu_ms_per_session'], 'ms')}/session,"
            f" {j['failed']} failed, load average {j['load_average_at_start']} at start"
        )
    summary = rep.summary()
    lines.append(f"  over the {len(rep.runs)} runs: median (lowest–highest)")
    for key, label, unit in FIGURES:
        s = summary.get(key)
        if s is not None:
            low, high = _figure(s["min"], unit).split(" ")[0], _figure(s["max"], unit)
            lines.append(f"    {label}: {_figure(s['median'], unit)} ({low}–{high})")
    if rep.failed():
        lines.append(f"  failed sessions over all runs: {rep.failed()}")
    return "\n".join(lines)


__all__ = ["FIGURES", "Repeated", "format_repeated", "run_repeated"]
