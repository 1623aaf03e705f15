"""The simulated fleet driven by several processes at once.

One Python process simulating devices keeps one core busy at 450-550 sessions/s on the development
VM, which is about what one TAM worker serves: past that (a TAM with several workers, or a TAM kept
busy enough that it stops idling between requests) the simulator, not the TAM, would set the pace.
`drive_in_processes` forks N processes from the one that built the fleet (devices are derived from
a seed and the TAM's key, and cryptography's key objects cannot be pickled for a spawned process),
gives process k the sessions k, k + N, k + 2N, … and its share of the concurrency, starts them
together and merges what they measured. Forked before anything runs an event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import resource
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any

from teep_coap.bench.fleet import DriveResult, FleetWorld, Progress, drive_fleet

# How long the processes may take to be forked and reach the start line.
START_TIMEOUT = 30.0
# How often the parent adds up the processes' progress while they run.
POLL_SECONDS = 0.25
# How long to wait for a process whose pipe closed to be reaped, for its exit code.
REAP_TIMEOUT = 5.0


class DeviceProcessError(RuntimeError):
    """A device process failed or ended without its figures."""


@dataclass(frozen=True)
class ProcessesResult:
    drive: DriveResult  # the processes' sessions merged: latencies and failures of all
    cpu_seconds: float  # CPU the device processes spent from the start line to their last session
    peak_rss_mib: list[float]  # each device process's peak resident set


def shares(total: int, parts: int) -> list[int]:
    """`total` split into `parts` whole shares that differ by one at most, the larger first."""
    return [total // parts + (1 if k < total % parts else 0) for k in range(parts)]


def merge(drives: list[DriveResult]) -> DriveResult:
    """One run's figures from its processes' (they ran at the same time: the longest is the run's)."""
    return DriveResult(
        latencies=[x for d in drives for x in d.latencies],
        failures=[x for d in drives for x in d.failures],
        seconds=max(d.seconds for d in drives),
        handshake_restarts=sum(d.handshake_restarts for d in drives),
        agent_build_seconds=sum(d.agent_build_seconds for d in drives),
        peak_agents=sum(d.peak_agents for d in drives),
    )


def _device_process(
    k: int,
    processes: int,
    job: dict[str, Any],
    ready: Any,
    go: Any,
    counts: Any,
    conn: Connection,
) -> None:
    """Process k: wait for the start line, drive its sessions, send back what it measured."""
    try:

        def progress(ok: int, failed: int, _total: int) -> None:
            counts[2 * k], counts[2 * k + 1] = ok, failed

        ready.release()
        if not go.wait(START_TIMEOUT):
            raise DeviceProcessError("the start signal never came")
        c0 = time.process_time()
        drive = asyncio.run(
            drive_fleet(**job, progress=progress, offset=k, stride=processes)  # the same run, sliced
        )
        cpu = time.process_time() - c0
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
        conn.send(("ok", drive, cpu, peak))
    except BaseException as exc:  # reported to the parent, which raises it
        with contextlib.suppress(OSError):
            conn.send(("error", f"device process {k}: {type(exc).__name__}: {exc}"))
    finally:
        conn.close()


def drive_in_processes(
    profile_name: str,
    uri: str,
    world: FleetWorld,
    sessions: int,
    concurrency: int,
    processes: int,
    *,
    certs: Path | None = None,
    progress: Progress | None = None,
    rate: float | None = None,
    device_client: str = "lean",
) -> ProcessesResult:
    """`drive_fleet` over `processes` forked processes, each with its share of the concurrency; the
    rate, if any, is the whole run's (session i is still due i / rate seconds in). Raises
    DeviceProcessError if a process fails or dies; the others are then stopped."""
    if not 1 <= processes <= concurrency:
        raise ValueError(f"{processes} device processes for a concurrency of {concurrency}")
    ctx = multiprocessing.get_context("fork")
    ready = ctx.Semaphore(0)
    go = ctx.Event()
    counts = ctx.Array("l", 2 * processes, lock=False)  # (ok, failed) of each process, shared memory
    children: list[tuple[Any, Connection]] = []
    try:
        for k, share in enumerate(shares(concurrency, processes)):
            job = {
                "profile_name": profile_name, "uri": uri, "world": world, "sessions": sessions,
                "concurrency": share, "certs": certs, "rate": rate, "device_client": device_client,
            }  # fmt: skip
            parent_end, child_end = ctx.Pipe(duplex=False)
            proc = ctx.Process(
                target=_device_process,
                args=(k, processes, job, ready, go, counts, child_end),
                name=f"teep-bench-devices-{k}",
                daemon=True,
            )
            proc.start()
            child_end.close()
            children.append((proc, parent_end))
        for _ in children:
            if not ready.acquire(timeout=START_TIMEOUT):
                raise DeviceProcessError(f"the device processes did not start within {START_TIMEOUT:g} s")
        go.set()
        results = _collect(children, counts, sessions, progress)
    finally:
        for proc, conn in children:
            if proc.is_alive():
                proc.terminate()
            proc.join(10)
            conn.close()
    return ProcessesResult(
        merge([r[0] for r in results]), sum(r[1] for r in results), [round(r[2], 1) for r in results]
    )


def _collect(
    children: list[tuple[Any, Connection]], counts: Any, total: int, progress: Progress | None
) -> list[tuple[DriveResult, float, float]]:
    """Each process's (drive, CPU seconds, peak RSS MiB), in process order, telling `progress` the
    sum of their counts meanwhile."""
    results: dict[int, tuple[DriveResult, float, float]] = {}
    pending = {conn: k for k, (_, conn) in enumerate(children)}
    while pending:
        for conn in wait(list(pending), timeout=POLL_SECONDS):
            assert isinstance(conn, Connection)
            k = pending.pop(conn)
            try:
                message = conn.recv()
            except EOFError:
                proc = children[k][0]
                proc.join(REAP_TIMEOUT)  # its pipe closes a moment before it can be reaped
                raise DeviceProcessError(
                    f"device process {k} ended without its figures (exit code {proc.exitcode})"
                ) from None
            if message[0] != "ok":
                raise DeviceProcessError(message[1])
            results[k] = (message[1], message[2], message[3])
        if progress is not None:
            progress(sum(counts[0::2]), sum(counts[1::2]), total)
    return [results[k] for k in range(len(children))]


__all__ = ["DeviceProcessError", "ProcessesResult", "drive_in_processes", "merge", "shares"]
