"""Two `bench sessions` set-ups run in turns, and the ratio of their TAM CPU per session.

Issue 14's targets are ratios (CoAP against HTTP, 2 PostgreSQL workers against 1 SQLite worker),
and this machine's speed drifts by about ±15 % within minutes: two figures taken minutes apart say
little. `compare` runs set-up A and B alternately in one window, in the order A B, B A, A B, … (a
drift during the window then weighs on both sides alike), and reports each side's mean, the ratio
B / A of the means and the ratio of each round.

A TAM's CPU per session also depends on the load it is offered (how many requests share a commit,
how long it sleeps between them: `bench idle-cost`), and each side's simulated devices set their own
pace. `same_load` takes that out of a ratio: one run of each side at its own pace first, then every
round at `SAME_LOAD_SHARE` of the slower side's sessions per second, which both can carry.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from teep_coap.bench.fleet import DEVICE_CLIENTS
from teep_coap.bench.sessions import BenchError, BenchResult, run_bench
from teep_coap.profiles.event_loop import EVENT_LOOPS

SPEC_KEYS = ("profile", "tam-workers", "db", "image-size", "device-client", "tam-loop")
# Below the slower side's own pace so that both sides reach the rate: a paced run loses a little to
# the pacing itself, and the pace drifts with the machine between the first runs and the rounds.
SAME_LOAD_SHARE = 0.9
# A run that started fewer sessions per second than this share of the rate was offered less load.
REACHED_SHARE = 0.95


@dataclass(frozen=True)
class Setup:
    """One side of a comparison: what `bench sessions` options differ between the sides."""

    profile: str
    tam_workers: int = 1
    db: str | None = None
    image_size: int = 1024
    device_client: str = "lean"  # fleet.DEVICE_CLIENTS
    tam_loop: str = "auto"  # profiles.event_loop.EVENT_LOOPS

    def label(self) -> str:
        parts = [self.profile]
        if self.tam_workers != 1:
            parts.append(f"{self.tam_workers} workers")
        if self.db is not None:
            parts.append(self.db.split(":", 1)[0])
        if self.image_size != 1024:
            parts.append(f"{self.image_size} B")
        if self.device_client != "lean":
            parts.append(f"{self.device_client} device client")
        if self.tam_loop != "auto":
            parts.append(f"TAM on {self.tam_loop}")
        return ", ".join(parts)


def parse_setup(text: str, *, default_profile: str = "coaps-psk") -> Setup:
    """`profile=NAME,tam-workers=N,db=URL|postgres,image-size=N,device-client=lean|broker,
    tam-loop=auto|uvloop|asyncio` (any subset, comma-separated)."""
    values: dict[str, str] = {}
    for item in (p.strip() for p in text.split(",") if p.strip()):
        key, sep, value = item.partition("=")
        if not sep or key not in SPEC_KEYS or not value:
            raise BenchError(
                f"set-up {text!r}: {item!r} is not KEY=VALUE with KEY one of {', '.join(SPEC_KEYS)}"
            )
        values[key] = value
    try:
        workers = int(values.get("tam-workers", "1"))
        image = int(values.get("image-size", "1024"))
    except ValueError:
        raise BenchError(f"set-up {text!r}: tam-workers and image-size are whole numbers") from None
    if not 1 <= workers <= 64 or not 0 <= image <= 1 << 20:
        raise BenchError(f"set-up {text!r}: tam-workers 1..64, image-size 0..1048576")
    client = values.get("device-client", "lean")
    if client not in DEVICE_CLIENTS:
        raise BenchError(f"set-up {text!r}: device-client is one of {', '.join(DEVICE_CLIENTS)}")
    loop = values.get("tam-loop", "auto")
    if loop not in EVENT_LOOPS:
        raise BenchError(f"set-up {text!r}: tam-loop is one of {', '.join(EVENT_LOOPS)}")
    return Setup(values.get("profile", default_profile), workers, values.get("db"), image, client, loop)


@dataclass
class Comparison:
    a: Setup
    b: Setup
    runs: list[tuple[str, BenchResult]] = field(default_factory=list)  # ("a" | "b", result) in run order
    # same_load: the first run of each side, at its own pace (not in the means), in run order
    own_pace: list[tuple[str, BenchResult]] = field(default_factory=list)

    def _side(self, side: str) -> list[BenchResult]:
        return [r for s, r in self.runs if s == side]

    @staticmethod
    def _ms(r: BenchResult) -> float | None:
        return r.tam_cpu_seconds / r.ok * 1000 if r.tam_cpu_seconds and r.ok else None

    def to_json(self) -> dict[str, Any]:
        def summary(side: str) -> dict[str, Any]:
            results = self._side(side)
            cpu = [m for m in (self._ms(r) for r in results) if m is not None]
            engine = [r.to_json()["tam_engine_cpu_ms_per_session"] for r in results]
            return {
                "setup": self.a.label() if side == "a" else self.b.label(),
                "tam_cpu_ms_per_session": [round(m, 2) for m in cpu],
                "mean_tam_cpu_ms_per_session": round(statistics.fmean(cpu), 3) if cpu else None,
                "mean_engine_cpu_ms_per_session": (
                    round(statistics.fmean(engine), 3) if engine and None not in engine else None
                ),
                "sessions_per_second": [round(r.rate, 1) for r in results],
                # how many requests shared a commit: a set-up offered less load batches less
                "requests_per_engine_call": [r.to_json()["tam_requests_per_commit"] for r in results],
                "failed": sum(r.failed for r in results),
            }

        a, b = summary("a"), summary("b")
        pairs = [
            (ma, mb)
            for ra, rb in zip(self._side("a"), self._side("b"), strict=False)
            if (ma := self._ms(ra)) is not None and (mb := self._ms(rb)) is not None
        ]
        ratio = (
            round(b["mean_tam_cpu_ms_per_session"] / a["mean_tam_cpu_ms_per_session"], 3)
            if a["mean_tam_cpu_ms_per_session"] and b["mean_tam_cpu_ms_per_session"]
            else None
        )
        target = self.runs[0][1].target_rate if self.runs else None
        return {
            "a": a,
            "b": b,
            "ratio_b_over_a": ratio,
            "ratio_per_round": [round(mb / ma, 3) for ma, mb in pairs],
            "load_average_at_start": [round(r.load_average, 2) for _, r in self.runs],
            "target_sessions_per_second": target,
            "same_load": (
                {
                    "own_pace_sessions_per_second": {side: round(r.rate, 1) for side, r in self.own_pace},
                    "own_pace_tam_cpu_ms_per_session": {
                        side: None if (m := self._ms(r)) is None else round(m, 2) for side, r in self.own_pace
                    },
                    "share_of_slower_pace": SAME_LOAD_SHARE,
                }
                if self.own_pace
                else None
            ),
            "runs_short_of_rate": (
                [
                    {"side": side, "sessions_per_second": round(r.rate, 1)}
                    for side, r in self.runs
                    if r.rate < REACHED_SHARE * target
                ]
                if target is not None
                else []
            ),
        }


def run_compare(
    a: Setup,
    b: Setup,
    *,
    rounds: int,
    devices: int,
    concurrency: int,
    sessions: int | None = None,
    pin: bool = False,
    on_run: Callable[[str, BenchResult], None] | None = None,
    rate: float | None = None,
    same_load: bool = False,
    device_processes: int = 1,
) -> Comparison:
    """`rounds` runs of each side, alternating A B / B A; `on_run(side, result)` after each run;
    `pin`: both sides with the TAM and the devices on CPUs apart (`bench sessions --pin`);
    `rate`: both sides offered the same load, sessions started per second (`bench sessions --rate`);
    `same_load`: that rate found by a first run of each side at its own pace (see the module);
    `device_processes`: both sides' devices simulated by that many processes."""
    if same_load and rate is not None:
        raise BenchError("give a rate or ask for the same load, not both")
    out = Comparison(a, b)

    def run(side: str, at: float | None) -> BenchResult:
        setup = a if side == "a" else b
        result = run_bench(
            setup.profile,
            devices=devices,
            concurrency=concurrency,
            sessions=sessions,
            image_size=setup.image_size,
            tam_workers=setup.tam_workers,
            db=setup.db,
            pin=pin,
            rate=at,
            device_processes=device_processes,
            device_client=setup.device_client,
            tam_loop=setup.tam_loop,
        )
        if on_run is not None:
            on_run(side, result)
        return result

    if same_load:
        out.own_pace = [(side, run(side, None)) for side in ("a", "b")]
        slower = min(r.rate for _, r in out.own_pace)
        if slower <= 0:
            raise BenchError("a side completed no session at its own pace: no load to share")
        rate = max(0.1, round(SAME_LOAD_SHARE * slower, 1))
    for i in range(rounds):
        for side in ("a", "b") if i % 2 == 0 else ("b", "a"):
            out.runs.append((side, run(side, rate)))
    return out


def format_comparison(c: Comparison) -> str:
    j = c.to_json()
    lines = []
    for key in ("a", "b"):
        s = j[key]
        lines.append(
            f"{key.upper()} ({s['setup']}): TAM CPU ms/session {s['tam_cpu_ms_per_session']}, mean"
            f" {s['mean_tam_cpu_ms_per_session']} (engine calls {s['mean_engine_cpu_ms_per_session']});"
            f" sessions/s {s['sessions_per_second']}; requests per engine call"
            f" {s['requests_per_engine_call']}; {s['failed']} failed"
        )
    rate = j["target_sessions_per_second"]
    same = j["same_load"]
    if same is not None:
        pace = same["own_pace_sessions_per_second"]
        lines.append(
            f"own pace first (not in the means): A {pace['a']}, B {pace['b']} sessions/s; the rounds"
            f" at {same['share_of_slower_pace']:.0%} of the slower"
        )
    lines.append(
        f"B / A: {j['ratio_b_over_a']} (per round {j['ratio_per_round']}); load average at each start"
        f" {j['load_average_at_start']}"
        + ("" if rate is None else f"; both sides started at most {rate:g} sessions per second")
    )
    for short in j["runs_short_of_rate"]:
        lines.append(
            f"note: a {short['side'].upper()} run started {short['sessions_per_second']} sessions/s,"
            f" under {REACHED_SHARE:.0%} of {rate:g}: it was offered less load than the other side"
        )
    return "\n".join(lines)


__all__ = [
    "REACHED_SHARE",
    "SAME_LOAD_SHARE",
    "SPEC_KEYS",
    "Comparison",
    "Setup",
    "format_comparison",
    "parse_setup",
    "run_compare",
]
