"""Whole coaps-psk TEEP sessions against `tam serve` and against the libcoap probe (serve.py), in turns.

    .venv/bin/python scripts/libcoap_probe/compare.py [--sessions N] [--rounds R] [--devices D]

One TAM folder with D devices and a 1 KiB Trusted Component (as `bench sessions` makes it); the
bench's lean DTLS devices, concurrency 32, run a warm-up of 50 sessions and then N sessions against
each server in turn (`tam serve` first in odd rounds, the probe first in even ones); each server's
CPU per session comes from /proc. Prints every run and each round's ratio probe / tam serve: what
the TAM's CPU per session would be with libcoap's C stack in front of the same engine
(docs/scale.md, session 18). Needs libcoap3 (installed with libcoap3-bin by scripts/setup.sh full).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from teep_coap.bench.fleet import DriveResult, FleetWorld, drive_fleet, make_fleet_world
from teep_coap.bench.sessions import read_serving_uri, stop_child, tam_process, tree_cpu_seconds

PROFILE = "coaps-psk"
CONCURRENCY = 32
WARM_UP = 50
SERVE = Path(__file__).with_name("serve.py")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _measure(world: FleetWorld, uri: str, pid: int, sessions: int) -> tuple[DriveResult, float]:
    async def run() -> tuple[DriveResult, float]:
        await asyncio.wait_for(drive_fleet(PROFILE, uri, world, WARM_UP, CONCURRENCY), 120)
        before = tree_cpu_seconds(pid)
        result = await asyncio.wait_for(
            drive_fleet(PROFILE, uri, world, sessions, CONCURRENCY), 60 + sessions
        )
        after = tree_cpu_seconds(pid)
        if before is None or after is None:
            raise SystemExit(f"compare: the server (pid {pid}) ended during the run")
        if after <= before:
            raise SystemExit("compare: the server used less CPU than /proc shows: give more --sessions")
        return result, after - before

    return asyncio.run(run())


def _tam_serve(world: FleetWorld, sessions: int, devices: int) -> tuple[DriveResult, float]:
    with tam_process(PROFILE, world.tam_dir, devices=devices) as (uri, pid):
        return _measure(world, uri, pid, sessions)


def _probe(world: FleetWorld, sessions: int, stats: Path) -> tuple[DriveResult, float]:
    proc = subprocess.Popen(
        [sys.executable, str(SERVE), str(world.tam_dir), str(_free_port()), str(stats)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        uri = read_serving_uri(proc, time.monotonic() + 60)
        if uri is None:
            said = proc.stderr.read() if proc.stderr and proc.poll() is not None else ""
            raise SystemExit(
                f"compare: the libcoap probe did not start: {said.strip()[-500:] or 'no output'}"
            )
        return _measure(world, uri, proc.pid, sessions)
    finally:
        stop_child(proc)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--devices", type=int, default=1000)
    args = parser.parse_args()
    if args.sessions < 1 or args.rounds < 1 or args.devices < 1:
        parser.error("--sessions, --rounds and --devices must be at least 1")
    print(
        f"libcoap probe / tam serve, {PROFILE}, {args.devices} devices, {args.sessions} sessions per run,"
        f" concurrency {CONCURRENCY}; load average {os.getloadavg()[0]:.2f} at start",
        flush=True,
    )
    ratios = []
    with tempfile.TemporaryDirectory(prefix="libcoap-probe-") as tmp:
        root = Path(tmp)
        world = make_fleet_world(root / "tam", root / "cred", args.devices, 1024, PROFILE)
        for n in range(args.rounds):
            runs: dict[str, float] = {}
            for name in ("tam serve", "probe") if n % 2 == 0 else ("probe", "tam serve"):
                if name == "tam serve":
                    result, cpu = _tam_serve(world, args.sessions, args.devices)
                else:
                    result, cpu = _probe(world, args.sessions, root / f"probe-{n}.json")
                runs[name] = cpu / args.sessions * 1e3
                rate = len(result.latencies) / result.seconds
                print(
                    f"  round {n + 1} {name:9s}: {len(result.latencies)} ok, {len(result.failures)} failed,"
                    f" {rate:.0f} sessions/s, TAM {runs[name]:.3f} ms/session"
                    + (f"; first failure: {result.failures[0]}" if result.failures else ""),
                    flush=True,
                )
            ratios.append(runs["probe"] / runs["tam serve"])
            probe_stats = json.loads((root / f"probe-{n}.json").read_text())
            print(
                f"  round {n + 1}: probe / tam serve {ratios[-1]:.3f}"
                f" (probe: {probe_stats['engine_calls']} engine calls)",
                flush=True,
            )
    print(f"mean ratio {statistics.fmean(ratios):.3f} (rounds {min(ratios):.3f}-{max(ratios):.3f})")


if __name__ == "__main__":
    main()
