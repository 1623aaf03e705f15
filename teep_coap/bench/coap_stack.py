"""`teep-coap bench coap-stack`: what the TAM's CoAP and DTLS stack costs per device session, next to
libcoap's C server doing the same exchanges.

About a third of a coaps-psk session's TAM CPU is spent outside the engine (docs/scale.md): the
DTLS records, aiocoap, our hardening and the event loop. How much of that a CoAP/DTLS stack in C
would save cannot be read off a profile, so it is measured: the bench's lean DTLS devices do the
same thing against two servers, in turns, on loopback — a DTLS-PSK handshake, K POSTs of a few
hundred bytes that are not TEEP messages, close_notify:

- `teep-coap tam serve --profile coaps-psk`: each POST goes through the whole stack up to the
  engine, which refuses it (4.00). The engine's CPU for those refusals (its mean per call, from
  the `--stats-file` line) is taken off, so what is left is the stack's.
- libcoap's `coap-server-openssl` (Debian's libcoap3-bin): the same handshake and exchanges in C.
  It has no POST handler, so libcoap answers each 4.05 itself.

Each server's CPU comes from /proc over the measured sessions (after a warm-up). Neither answer is a
TEEP message: this compares the cost of the stacks per handshake and exchange, not TEEP sessions.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from teep_coap.bench.fleet import make_fleet_world
from teep_coap.bench.lean_dtls import LeanDtlsClient
from teep_coap.bench.sessions import (
    BenchError,
    stop_child,
    tam_process,
    tree_cpu_seconds,
    worker_stats,
)
from teep_coap.profiles import load_profile
from teep_coap.transport.base import PeerRejected, TransportError
from teep_coap.transport.coap.credentials import DeviceCredentials

PROFILE = "coaps-psk"
LIBCOAP_SERVER = "coap-server-openssl"
SERVERS = ("teep-coap", "libcoap")
# Sizes of the POSTs, in turn: about those of a session's requests (the Agent's first POST, the
# QueryResponse, a Block2 follow-up, the Success), but never empty: an empty POST starts a session.
PAYLOAD_SIZES = (16, 450, 16, 120)
WARM_UP = 50  # sessions before each measurement (imports, caches, the first handshakes)
STARTUP_TIMEOUT = 10.0  # seconds for coap-server to bind its DTLS port
LIBCOAP_PSK = b"teep-bench-psk"  # tinydtls (the lean client) takes keys of up to 16 bytes


@dataclass(frozen=True)
class StackRun:
    """One server's measured sessions."""

    server: str  # "teep-coap" | "libcoap"
    sessions: int
    exchanges: int  # POSTs per session
    failed: int  # sessions with an exchange that got no answer (timeout, DTLS alert, ...)
    seconds: float
    server_cpu: float  # s over the measured sessions
    engine_cpu: float | None  # s of it in the TAM's engine (teep-coap only)

    @property
    def cpu_ms(self) -> float:
        return self.server_cpu / self.sessions * 1e3

    @property
    def stack_ms(self) -> float:
        """Server CPU per session without the engine's refusals."""
        return (self.server_cpu - (self.engine_cpu or 0.0)) / self.sessions * 1e3

    def to_json(self) -> dict[str, Any]:
        return {
            "server": self.server,
            "sessions": self.sessions,
            "exchanges_per_session": self.exchanges,
            "failed": self.failed,
            "seconds": round(self.seconds, 3),
            "server_cpu_ms_per_session": round(self.cpu_ms, 4),
            "engine_cpu_ms_per_session": None
            if self.engine_cpu is None
            else round(self.engine_cpu / self.sessions * 1e3, 4),
            "stack_cpu_ms_per_session": round(self.stack_ms, 4),
        }


@dataclass(frozen=True)
class StackComparison:
    """Rounds of one run per server, the order alternating (teep-coap first in odd rounds)."""

    rounds: tuple[tuple[StackRun, StackRun], ...]  # (teep-coap, libcoap) per round
    concurrency: int
    load_average: float

    def mean_stack_ms(self, server: str) -> float:
        i = SERVERS.index(server)
        return statistics.fmean(pair[i].stack_ms for pair in self.rounds)

    def ratios(self) -> list[float]:
        """teep-coap's stack CPU over libcoap's, per round."""
        return [ours.stack_ms / theirs.stack_ms for ours, theirs in self.rounds]

    def to_json(self) -> dict[str, Any]:
        return {
            "concurrency": self.concurrency,
            "load_average_at_start": round(self.load_average, 2),
            "rounds": [[run.to_json() for run in pair] for pair in self.rounds],
            "stack_cpu_ms_per_session": {s: round(self.mean_stack_ms(s), 4) for s in SERVERS},
            "ratio_by_round": [round(r, 3) for r in self.ratios()],
        }


def format_stack_comparison(c: StackComparison) -> str:
    first = c.rounds[0][0]
    sizes = ", ".join(str(PAYLOAD_SIZES[k % len(PAYLOAD_SIZES)]) for k in range(first.exchanges))
    lines = [
        f"coap-stack: {first.sessions} sessions per run, concurrency {c.concurrency}; each a DTLS-PSK"
        f" handshake, {first.exchanges} POST(s) of {sizes} bytes that are not TEEP messages, close_notify",
    ]
    for n, (ours, theirs) in enumerate(c.rounds, 1):
        engine = ours.cpu_ms - ours.stack_ms
        lines.append(
            f"  round {n}: teep-coap {ours.cpu_ms:.3f} ms/session (engine {engine:.3f}, stack"
            f" {ours.stack_ms:.3f}); libcoap {theirs.stack_ms:.3f} ms/session;"
            f" failed {ours.failed} / {theirs.failed}; stack ratio {ours.stack_ms / theirs.stack_ms:.2f}×"
        )
    lines.append(
        f"  stack CPU per session: teep-coap {c.mean_stack_ms('teep-coap'):.3f} ms, libcoap"
        f" {c.mean_stack_ms('libcoap'):.3f} ms (ratio {statistics.fmean(c.ratios()):.2f}×,"
        f" rounds {min(c.ratios()):.2f}–{max(c.ratios()):.2f})"
    )
    lines.append(f"  machine: {os.cpu_count()} cores, load average {c.load_average:.2f} at start")
    return "\n".join(lines)


def free_udp_pair() -> int:
    """A port p with p and p+1 free on 127.0.0.1 (coap-server takes p for CoAP and p+1 for DTLS)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port >= 65535:
            continue
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s2:
                s2.bind(("127.0.0.1", port + 1))
        except OSError:
            continue
        return port
    raise BenchError("found no two adjacent free UDP ports on 127.0.0.1 for libcoap's coap-server")


def _udp_bound(port: int) -> bool:
    """Whether some socket is bound to UDP `port` on this host (from /proc/net/udp)."""
    try:
        lines = Path("/proc/net/udp").read_text().splitlines()[1:]
    except OSError:
        return False
    return any(line.split()[1].endswith(f":{port:04X}") for line in lines if len(line.split()) > 1)


def find_libcoap_server(executable: str = LIBCOAP_SERVER) -> str:
    """The server's path, or a BenchError that says where it comes from."""
    path = shutil.which(executable)
    if path is None:
        raise BenchError(
            f"{executable} not found: it is libcoap's example server (Debian package libcoap3-bin;"
            " `bash scripts/setup.sh full` installs it)"
        )
    return path


@contextlib.contextmanager
def libcoap_server(executable: str = LIBCOAP_SERVER) -> Iterator[tuple[str, int]]:
    """libcoap's example server on loopback with LIBCOAP_PSK; yields (coaps URI, pid)."""
    path = find_libcoap_server(executable)
    port = free_udp_pair()
    with tempfile.TemporaryFile() as errors:
        proc = subprocess.Popen(
            [path, "-A", "127.0.0.1", "-p", str(port), "-k", LIBCOAP_PSK.decode(), "-v", "0"],
            stdout=subprocess.DEVNULL,
            stderr=errors,
        )
        try:
            deadline = time.monotonic() + STARTUP_TIMEOUT
            while not _udp_bound(port + 1):
                if proc.poll() is not None or time.monotonic() > deadline:
                    errors.seek(0)
                    said = errors.read().decode("utf-8", "replace").strip()[-300:]
                    state = "exited" if proc.poll() is not None else "did not bind its DTLS port"
                    raise BenchError(f"{executable} {state}: {said or 'no output'}")
                time.sleep(0.02)
            yield f"coaps://127.0.0.1:{port + 1}/teep", proc.pid
        finally:
            stop_child(proc)


async def _drive(
    uri: str,
    credentials: Callable[[int], DeviceCredentials],
    first: int,
    sessions: int,
    exchanges: int,
    concurrency: int,
) -> int:
    """Run the sessions; the number that failed (an exchange without an answer)."""
    profile = load_profile(PROFILE)
    gate = asyncio.Semaphore(concurrency)
    failed = 0

    async def one(i: int) -> None:
        nonlocal failed
        async with gate:
            client = LeanDtlsClient(profile, uri, credentials(i))
            try:
                for k in range(exchanges):
                    with contextlib.suppress(PeerRejected):  # both servers answer with an error code
                        await client.post(b"\xff" * PAYLOAD_SIZES[k % len(PAYLOAD_SIZES)])
            except TransportError:
                failed += 1
            finally:
                await client.close()

    await asyncio.gather(*(one(i) for i in range(first, first + sessions)))
    return failed


def _measure(
    server: str,
    uri: str,
    pid: int,
    credentials: Callable[[int], DeviceCredentials],
    sessions: int,
    exchanges: int,
    concurrency: int,
    bound: float,
) -> tuple[int, float, float]:
    """Warm up, then the measured sessions: (failed, seconds, server CPU seconds)."""

    async def both() -> tuple[int, float, float]:
        await _drive(uri, credentials, 0, WARM_UP, exchanges, concurrency)
        cpu0, t0 = tree_cpu_seconds(pid), time.perf_counter()
        failed = await _drive(uri, credentials, WARM_UP, sessions, exchanges, concurrency)
        cpu1, t1 = tree_cpu_seconds(pid), time.perf_counter()
        if cpu0 is None or cpu1 is None:
            raise BenchError(f"the {server} server (pid {pid}) ended during the run")
        if cpu1 <= cpu0:
            raise BenchError(
                f"the {server} server used less CPU than /proc shows (a clock tick): give more --sessions"
            )
        return failed, t1 - t0, cpu1 - cpu0

    try:
        return asyncio.run(asyncio.wait_for(both(), bound))
    except TimeoutError:
        raise BenchError(f"the {server} run did not finish within {bound:.0f} s") from None


def run_coap_stack(
    *,
    sessions: int = 3000,
    exchanges: int = 4,
    rounds: int = 2,
    concurrency: int = 32,
    devices: int = 1000,
    libcoap_executable: str = LIBCOAP_SERVER,
) -> StackComparison:
    """`rounds` runs per server, alternating which goes first; see the module docstring."""
    find_libcoap_server(libcoap_executable)  # before minutes of the other server's runs
    load = os.getloadavg()[0]
    bound = 60.0 + (WARM_UP + sessions) * exchanges * 0.02  # seconds per run, generous
    devices = min(devices, WARM_UP + sessions)
    shared = DeviceCredentials("bench", "bench", LIBCOAP_PSK)
    with tempfile.TemporaryDirectory(prefix="teep-coap-stack-") as tmp:
        root = Path(tmp)
        world = make_fleet_world(root / "tam", root / "cred", devices, 1024, PROFILE)

        def ours_credentials(i: int) -> DeviceCredentials:
            creds = world.credentials(i % devices)
            assert creds is not None  # coaps-psk worlds have device files
            return creds

        def ours(n: int) -> StackRun:
            stats = root / f"stats-{n}.jsonl"
            with tam_process(PROFILE, world.tam_dir, extra=("--stats-file", str(stats)), devices=devices) as (
                uri,
                pid,
            ):
                failed, seconds, cpu = _measure(
                    "teep-coap", uri, pid, ours_credentials, sessions, exchanges, concurrency, bound
                )
            lines = worker_stats(stats, 1)
            if not lines or not lines[0].get("engine_calls"):
                raise BenchError("`tam serve` wrote no engine figures to its --stats-file")
            per_call = float(lines[0]["engine_cpu_seconds"]) / int(lines[0]["engine_calls"])
            engine = per_call * sessions * exchanges
            return StackRun("teep-coap", sessions, exchanges, failed, seconds, cpu, engine)

        def theirs() -> StackRun:
            with libcoap_server(libcoap_executable) as (uri, pid):
                failed, seconds, cpu = _measure(
                    "libcoap", uri, pid, lambda _i: shared, sessions, exchanges, concurrency, bound
                )
            return StackRun("libcoap", sessions, exchanges, failed, seconds, cpu, None)

        results = []
        for n in range(rounds):
            if n % 2 == 0:
                first_ours = ours(n)
                results.append((first_ours, theirs()))
            else:
                first_theirs = theirs()
                results.append((ours(n), first_theirs))
    return StackComparison(tuple(results), concurrency, load)
