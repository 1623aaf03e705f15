"""`teep-coap bench sessions`: complete TEEP install sessions per second against one TAM process.

The TAM runs as `teep-coap tam serve` in its own process (its CPU time is read from /proc); the
Broker/Agent side runs N simulated devices in this process with C sessions in flight. One session =
empty POST → QueryRequest, QueryResponse → Update (one SUIT envelope), Success → 2.04 without payload;
over coaps that includes the device's DTLS handshake, over OSCORE its context setup. Latency is the
wall time of one whole session as the device sees it.

The TAM folder is on the ordinary disk (its SQLite commits cost what they cost). The simulated
devices are `bench.fleet`'s: derived from a seed, registered in one transaction, each Agent built in
memory when its session starts and dropped after it, so neither the build nor the simulator's memory
grows with the number of devices beyond the TAM's rows. Profiles that need per-device credentials
(DTLS PSK, OSCORE, EDHOC) get them in folders under /dev/shm when it exists, so the clients' writes do
not eat the machine that the TAM is measured on. `make_world` / `load_agents` / `_drive` (one Agent
folder per device) stay for the other benchmarks and the tests that want real Agent folders.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from teep_coap.bench.fleet import (
    COMPONENT_ID,
    Progress,
    SessionTally,
    drive_fleet,
    make_fleet_world,
    used_client,
)  # fmt: skip
from teep_coap.bench.fleet_procs import DeviceProcessError, drive_in_processes
from teep_coap.bench.pinning import cpu_list, pin_processes, split_cpus, this_thread_on
from teep_coap.errors import TeepCoapError
from teep_coap.profiles import load_profile
from teep_coap.profiles.event_loop import EVENT_LOOPS
from teep_coap.profiles.scenario import offer_component
from teep_coap.profiles.stack import make_client
from teep_coap.profiles.workers import check_workers_allowed, read_serving_uri
from teep_coap.protocol.agent import AgentEngine
from teep_coap.security.certs import write_bundle
from teep_coap.store.agentdir import init_agent_state, load_agent_state
from teep_coap.store.tam_db import TamStore
from teep_coap.store.tamdir import init_tam_dir, load_tam_dir
from teep_coap.store.throwaway_pg import throwaway_postgres_server
from teep_coap.transport.coap.credentials import provision_devices

STARTUP_TIMEOUT = 30.0  # seconds for `tam serve` to print its URI
STARTUP_PER_DEVICE = 0.001  # more seconds per registered device (it reads every device's credentials)
RSS_EVERY = 2.0  # seconds between two samples of the TAM's VmRSS during a run


class BenchError(TeepCoapError):
    """The benchmark could not run (TAM did not start, sessions failed)."""


@dataclass
class BenchResult:
    profile: str
    devices: int
    concurrency: int
    sessions: int
    ok: int
    failed: int
    seconds: float
    latencies: list[float] = field(repr=False, default_factory=list)
    tam_cpu_seconds: float | None = None
    # CPU inside the TAM's engine calls, summed over workers (`tam serve --stats-file`); the rest of
    # tam_cpu_seconds is the transport, the event loop and the process's housekeeping
    tam_engine_cpu_seconds: float | None = None
    tam_mean_batch: float | None = None  # requests per engine call (group commit), over all workers
    client_cpu_seconds: float = 0.0
    handshake_restarts: int = 0
    failures: list[str] = field(default_factory=list)
    load_average: float = 0.0  # 1-minute load average when the run started (other work skews figures)
    tam_workers: int = 1
    database: str = "sqlite"  # "sqlite" (the TAM folder's file) or "postgresql"
    tam_peak_rss_mib: list[float] = field(default_factory=list)  # VmHWM of each worker at the end
    fleet_build_seconds: float = 0.0  # TAM folder, device registration, credentials, catalog
    agent_build_seconds: float = 0.0  # making each device's in-memory Agent before its session
    peak_agents: int = 0  # most simulated Agents alive at once (bounded by the concurrency)
    client_peak_rss_mib: float | None = None  # VmHWM of this (the simulator's) process at the end
    device_processes: int = 1  # processes simulating the devices (client figures summed over them)
    device_client: str = "lean"  # what the simulated devices talk through (fleet.DEVICE_CLIENTS)
    tam_event_loop: str | None = None  # the loop the TAM's workers ran on (their stats lines), if known
    tam_rss_samples: list[tuple[float, float]] = field(default_factory=list, repr=False)  # (s, MiB)
    # --pin: the CPUs the TAM's processes and the simulated devices ran on (None: not pinned)
    tam_cpus: frozenset[int] | None = None
    device_cpus: frozenset[int] | None = None
    # CPU of the database server's processes on this host over the run (None: SQLite, which is in the
    # TAM's own CPU, or a server whose processes the bench does not know: an external URL)
    database_cpu_seconds: float | None = None
    # context switches (voluntary + involuntary) of the TAM's processes over the run: each is the
    # process giving up its CPU (waiting for a datagram or a database answer) or losing it
    tam_context_switches: int | None = None
    target_rate: float | None = None  # --rate: sessions started per second at most (None: as fast as they go)

    @property
    def rate(self) -> float:
        return self.ok / self.seconds if self.seconds > 0 else 0.0

    def percentile(self, q: float) -> float:
        if not self.latencies:
            return float("nan")
        data = sorted(self.latencies)
        return data[min(len(data) - 1, max(0, round(q / 100 * len(data) + 0.5) - 1))]

    def p99_by_tenth(self) -> list[float]:
        """p99 (s) of each tenth of the sessions in the order they ended: a tail spread over the run
        is noise (load, scheduling), one in a few tenths is something that happened then."""
        n = len(self.latencies)
        if n < 1000:
            return []
        out = []
        for k in range(10):
            part = sorted(self.latencies[k * n // 10 : (k + 1) * n // 10])
            out.append(part[min(len(part) - 1, max(0, round(0.99 * len(part) + 0.5) - 1))])
        return out

    def _per_session(self, seconds: float | None) -> float | None:
        return round(seconds / self.ok * 1000, 2) if seconds is not None and self.ok else None

    def _busy(self, cpu_seconds: float | None, cores: int) -> float | None:
        """Share of `cores` cores that `cpu_seconds` kept busy over the run."""
        if cpu_seconds is None or self.seconds <= 0:
            return None
        return round(cpu_seconds / (self.seconds * cores), 3)

    def to_json(self) -> dict[str, Any]:
        return {
            "profile": self.profile,
            "devices": self.devices,
            "concurrency": self.concurrency,
            "sessions": self.sessions,
            "ok": self.ok,
            "failed": self.failed,
            "seconds": round(self.seconds, 3),
            "sessions_per_second": round(self.rate, 1),
            "target_sessions_per_second": self.target_rate,
            "p50_ms": round(self.percentile(50) * 1000, 1),
            "p99_ms": round(self.percentile(99) * 1000, 1),
            "p99_ms_by_tenth_of_run": [round(x * 1000, 1) for x in self.p99_by_tenth()],
            "mean_ms": round(statistics.fmean(self.latencies) * 1000, 1) if self.latencies else None,
            "tam_cpu_seconds": None if self.tam_cpu_seconds is None else round(self.tam_cpu_seconds, 2),
            "tam_cpu_ms_per_session": (
                round(self.tam_cpu_seconds / self.ok * 1000, 2) if self.tam_cpu_seconds and self.ok else None
            ),
            # What one TAM process could serve with a core to itself: 1 s / its CPU per session.
            "tam_sessions_per_cpu_second": (
                round(self.ok / self.tam_cpu_seconds, 1) if self.tam_cpu_seconds and self.ok else None
            ),
            "tam_engine_cpu_ms_per_session": self._per_session(self.tam_engine_cpu_seconds),
            "tam_requests_per_commit": None if self.tam_mean_batch is None else round(self.tam_mean_batch, 2),
            "tam_outside_engine_cpu_ms_per_session": self._per_session(
                None
                if self.tam_cpu_seconds is None or self.tam_engine_cpu_seconds is None
                else self.tam_cpu_seconds - self.tam_engine_cpu_seconds
            ),
            # How busy each side kept its cores: a side near 1 sets the pace. The TAM's CPU per
            # session is higher the more it idles between requests (docs/scale.md, session 14).
            "tam_busy_share_per_worker": self._busy(self.tam_cpu_seconds, self.tam_workers),
            # each process simulating devices keeps one core busy at most
            "client_busy_share": self._busy(self.client_cpu_seconds, self.device_processes),
            "device_processes": self.device_processes,
            "device_client": self.device_client,
            "tam_event_loop": self.tam_event_loop,
            "client_cpu_seconds": round(self.client_cpu_seconds, 2),
            "client_cpu_ms_per_session": round(self.client_cpu_seconds / self.ok * 1000, 2)
            if self.ok
            else None,
            # Both sides are Python on the same machine and slow down together when its speed
            # drifts (docs/scale.md, session 16): this ratio moved ±2 % where each moved ±8 %, so it
            # compares a change to the TAM alone across minutes (one to the devices' code moves it too)
            "tam_to_device_cpu_ratio": (
                round(self.tam_cpu_seconds / self.client_cpu_seconds, 3)
                if self.tam_cpu_seconds and self.client_cpu_seconds > 0
                else None
            ),
            "handshake_restarts": self.handshake_restarts,
            "tam_workers": self.tam_workers,
            "database": self.database,
            "tam_peak_rss_mib_per_worker": [round(m, 1) for m in self.tam_peak_rss_mib],
            "load_average_at_start": round(self.load_average, 2),
            "failures": self.failures[:5],
            "fleet_build_seconds": round(self.fleet_build_seconds, 2),
            "agent_build_ms_per_session": (
                round(self.agent_build_seconds / self.sessions * 1000, 3) if self.sessions else None
            ),
            "peak_agents_alive": self.peak_agents,
            "client_peak_rss_mib": None
            if self.client_peak_rss_mib is None
            else round(self.client_peak_rss_mib, 1),
            # VmRSS of the TAM (summed over its workers) every RSS_EVERY s from the start of the sessions
            "tam_rss_mib_samples": [[round(t, 1), round(m, 1)] for t, m in self.tam_rss_samples],
            "database_cpu_ms_per_session": self._per_session(self.database_cpu_seconds),
            "tam_context_switches_per_session": (
                round(self.tam_context_switches / self.ok, 2)
                if self.tam_context_switches is not None and self.ok
                else None
            ),
            "tam_cpus": None if self.tam_cpus is None else sorted(self.tam_cpus),
            "device_cpus": None if self.device_cpus is None else sorted(self.device_cpus),
        }


def busy_percent(share: float | None) -> str:
    return "?" if share is None else f"{share * 100:.0f} %"


def format_result(r: BenchResult) -> str:
    j = r.to_json()
    lines = [
        f"profile {j['profile']}: {j['devices']} devices, concurrency {j['concurrency']},"
        f" {j['sessions']} sessions",
        f"  complete sessions: {j['ok']} ok, {j['failed']} failed in {j['seconds']} s"
        f" = {j['sessions_per_second']} sessions/s"
        + ("" if r.target_rate is None else f" (started at most {r.target_rate:g} per second)"),
        f"  latency per session: p50 {j['p50_ms']} ms, p99 {j['p99_ms']} ms, mean {j['mean_ms']} ms",
        f"  TAM process CPU: {j['tam_cpu_seconds']} s ({j['tam_cpu_ms_per_session']} ms/session,"
        f" {j['tam_sessions_per_cpu_second']} sessions per TAM CPU second);"
        f" client CPU {j['client_cpu_seconds']} s ({j['client_cpu_ms_per_session']} ms/session);"
        f" DTLS handshake restarts {j['handshake_restarts']}",
        f"  TAM CPU per session in engine calls {j['tam_engine_cpu_ms_per_session']} ms, outside them"
        f" (transport, event loop) {j['tam_outside_engine_cpu_ms_per_session']} ms;"
        f" {j['tam_requests_per_commit']} requests per engine call (group commit)",
        f"  TAM: {j['tam_workers']} worker(s) on {j['database']}, peak RSS per worker"
        f" {j['tam_peak_rss_mib_per_worker']} MiB, {j['tam_context_switches_per_session']} context"
        " switches per session",
        f"  simulator ({j['device_client']} device client): fleet built in {j['fleet_build_seconds']} s,"
        f" {j['agent_build_ms_per_session']} ms"
        f" per session to make a device's Agent, at most {j['peak_agents_alive']} alive, peak RSS"
        f" {j['client_peak_rss_mib']} MiB" + ("" if r.device_processes == 1 else " (the largest process)"),
        f"  busy: TAM {busy_percent(j['tam_busy_share_per_worker'])} of a core per worker, simulated devices"
        f" {busy_percent(j['client_busy_share'])} of "
        + ("their one core" if r.device_processes == 1 else f"a core per process ({r.device_processes})")
        + " (a side near 100 % sets the pace); the TAM's CPU per session"
        f" {'?' if j['tam_to_device_cpu_ratio'] is None else j['tam_to_device_cpu_ratio']} of the devices'",
        f"  machine: {os.cpu_count()} cores, load average {j['load_average_at_start']} at start",
    ]
    if j["database_cpu_ms_per_session"] is not None:
        lines.insert(
            -2,
            f"  database server: {j['database_cpu_ms_per_session']} ms of CPU per session (all its"
            " processes on this host; not in the TAM's figure)",
        )
    samples = j["tam_rss_mib_samples"]
    if samples:
        picks = [samples[i] for i in sorted({round(k * (len(samples) - 1) / 4) for k in range(5)})]
        lines.insert(-1, "  TAM VmRSS over the run (s: MiB): " + ", ".join(f"{t:g}: {m:g}" for t, m in picks))
    if r.tam_cpus is not None and r.device_cpus is not None:
        lines.insert(
            -1,
            f"  pinned: TAM on CPU {cpu_list(r.tam_cpus)}, simulated devices on CPU"
            f" {cpu_list(r.device_cpus)}",
        )
    lines += [f"  failure: {f}" for f in j["failures"]]
    return "\n".join(lines)


@dataclass
class BenchWorld:
    tam_dir: Path
    agent_dirs: list[Path]


def make_world(
    tam_dir: Path, agents_root: Path, devices: int, image_size: int, *, db: str | None = None
) -> BenchWorld:
    """A TAM with `devices` registered devices (keys + DTLS PSK + OSCORE) and one TC for all; with
    `db` (an SQLAlchemy URL) the devices and the TC go to that database instead of the folder's."""

    init_tam_dir(tam_dir, algs=("esp256",))
    config, store = load_tam_dir(tam_dir)
    if db is not None:
        store.close()
        store = TamStore(db)
    tam_key = config.keys[0]
    now = time.time()
    agent_dirs: list[Path] = []
    pairs: list[tuple[str, str | os.PathLike[str] | None]] = []
    state = None
    for i in range(devices):
        name = f"dev-{i:05d}"
        agent_dir = agents_root / name
        state = init_agent_state(agent_dir, tam_key.public, "esp256")
        store.add_device(
            kid=state.key.kid,
            alg=state.key.alg,
            public_key=state.key.public.to_pem(),
            now=now,
            name=name,
            psk_identity=name,
        )
        agent_dirs.append(agent_dir)
        pairs.append((name, agent_dir))
    provision_devices(tam_dir, pairs)
    assert state is not None
    payload = bytes(i % 251 for i in range(image_size))
    offer_component(store, tam_key, state.config, COMPONENT_ID, payload, now=now, name="bench")
    store.close()
    return BenchWorld(tam_dir, agent_dirs)


def _cli_command(*args: str) -> list[str]:
    return [sys.executable, "-c", "from teep_coap.cli import main; main()", *args]


@contextlib.contextmanager
def tam_process(
    profile: str, tam_dir: Path, *, extra: tuple[str, ...] = (), devices: int = 0
) -> Iterator[tuple[str, int]]:
    """`teep-coap tam serve` in a child process; yields (TAM URI, pid); SIGTERM and wait on exit.
    `devices`: how many the TAM folder registers (a large fleet takes the TAM longer to start)."""
    proc = subprocess.Popen(
        _cli_command("tam", "serve", "--profile", profile, "--dir", str(tam_dir), "-q", *extra),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        uri = _read_uri(proc, STARTUP_TIMEOUT + STARTUP_PER_DEVICE * devices)
        yield uri, proc.pid
    finally:
        stop_child(proc)


def stop_child(proc: subprocess.Popen[Any]) -> None:
    """End a child server: SIGTERM (it shuts down cleanly), SIGKILL if it is still there after 10 s."""
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def _read_uri(proc: subprocess.Popen[str], timeout: float = STARTUP_TIMEOUT) -> str:
    uri = read_serving_uri(proc, time.monotonic() + timeout)
    if uri is not None:
        return uri
    err = proc.stderr.read() if proc.stderr and proc.poll() is not None else ""
    raise BenchError(f"`teep-coap tam serve` did not start: {err.strip()[-500:] or 'no output'}")


def tam_pids(pid: int) -> list[int]:
    """The TAM worker processes: `pid` itself, or its children when it supervises `--workers`."""
    try:
        children = [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except (OSError, ValueError):
        children = []
    return children or [pid]


def peak_rss_mib(pid: int) -> float | None:
    """The process's peak resident set (VmHWM) in MiB, from /proc."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def worker_stats(stats_file: Path, workers: int) -> list[dict[str, Any]] | None:
    """The lines the stopped TAM's processes wrote (one JSON object each); None unless every worker
    wrote its line (a worker killed by the 10 s stop deadline writes none)."""
    try:
        lines = stats_file.read_text(encoding="utf-8").splitlines()
        stats = [json.loads(line) for line in lines if line.strip()]
    except (OSError, ValueError):
        return None
    return stats if len(stats) == workers and all(isinstance(s, dict) for s in stats) else None


def engine_cpu_seconds(stats_file: Path, workers: int) -> float | None:
    """The engine CPU of all the stopped TAM's workers (None unless each wrote its stats line)."""
    stats = worker_stats(stats_file, workers)
    try:
        return None if stats is None else sum(float(s["engine_cpu_seconds"]) for s in stats)
    except (KeyError, TypeError, ValueError):
        return None


def mean_batch(stats_file: Path, workers: int) -> float | None:
    """Requests per engine call over all the stopped TAM's workers (group commit), None if unknown."""
    stats = worker_stats(stats_file, workers)
    try:
        calls = sum(int(s["engine_calls"]) for s in stats or ())
        batches = sum(int(s["engine_batches"]) for s in stats or ())
    except (KeyError, TypeError, ValueError):
        return None
    return calls / batches if batches else None


def event_loop_of(stats_file: Path, workers: int) -> str | None:
    """The event loop the stopped TAM's workers ran on ("uvloop", "asyncio", or both names joined by
    "+" if they differed); None unless each wrote its stats line."""
    stats = worker_stats(stats_file, workers)
    return "+".join(sorted({str(s.get("event_loop")) for s in stats})) if stats else None


def _tam_cpu_seconds(pid: int) -> float | None:
    """CPU time of the TAM process and all its workers (a supervisor's own share included)."""
    total = 0.0
    for p in {pid, *tam_pids(pid)}:
        cpu = _cpu_seconds(p)
        if cpu is None:
            return None
        total += cpu
    return total


def _cpu_seconds(pid: int, *, ended_children: bool = False) -> float | None:
    """User + system CPU of `pid` from /proc/PID/stat (utime, stime), with `ended_children` also
    that of its children it waited for (cutime, cstime); None if the process is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks = sum(int(f) for f in fields[11 : 15 if ended_children else 13])
    except (OSError, IndexError, ValueError):
        return None
    return ticks / os.sysconf("SC_CLK_TCK")


def tree_cpu_seconds(pid: int) -> float | None:
    """CPU time of `pid`, of its children that ended (waited for: cutime, cstime) and of those alive,
    recursively: what a server that forks a process per connection (PostgreSQL) has spent so far."""
    total = _cpu_seconds(pid, ended_children=True)
    try:
        children = [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except (OSError, ValueError):
        return None
    if total is None:
        return None
    for child in children:
        total += tree_cpu_seconds(child) or 0.0  # a child that ended meanwhile is in cutime next time
    return total


def _context_switches(pids: list[int]) -> int | None:
    """Voluntary and involuntary context switches of the live threads of these processes (a thread
    that ended takes its count with it; the TAM's threads live as long as it)."""
    total = 0
    for pid in pids:
        try:
            tasks = list(Path(f"/proc/{pid}/task").iterdir())
        except OSError:
            return None
        for task in tasks:
            try:
                status = (task / "status").read_text()
            except OSError:  # the thread ended meanwhile
                continue
            total += sum(int(line.split()[1]) for line in status.splitlines() if "ctxt_switches:" in line)
    return total


def rss_mib(pid: int) -> float | None:
    """The process's resident set now (VmRSS) in MiB, from /proc."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


class RssSampler:
    """VmRSS of the TAM (`pid` and its workers, summed) every `every` seconds, on a thread, while the
    sessions run: shows whether memory levels off or keeps growing with the devices seen."""

    def __init__(self, pid: int, every: float = RSS_EVERY) -> None:
        self.pid, self.every = pid, every
        self.samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tam-rss", daemon=True)

    def _sample(self, t0: float) -> None:
        values = [rss_mib(p) for p in tam_pids(self.pid)]
        if values and all(v is not None for v in values):
            self.samples.append((time.perf_counter() - t0, sum(v for v in values if v is not None)))

    def _run(self) -> None:
        t0 = time.perf_counter()
        self._sample(t0)
        while not self._stop.wait(self.every):
            self._sample(t0)
        self._sample(t0)  # the end of the run

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)


def load_agents(agent_dirs: list[Path]) -> list[Any]:
    """The simulated devices' engines, loaded before the clock starts (not part of a session)."""

    return [AgentEngine(load_agent_state(d)) for d in agent_dirs]


async def _drive(
    profile_name: str,
    uri: str,
    agent_dirs: list[Path],
    sessions: int,
    concurrency: int,
    certs: Path | None = None,
    agents: list[Any] | None = None,
    progress: Progress | None = None,
) -> tuple[list[float], list[str], float, int]:

    profile = load_profile(profile_name)
    if agents is None:
        agents = load_agents(agent_dirs)
    tally = SessionTally(sessions, progress)
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(sessions):
        queue.put_nowait(i % len(agents))

    async def worker() -> None:
        while True:
            try:
                index = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            client = make_client(profile, uri, state_dir=agent_dirs[index], certs_path=certs)
            timeout = profile.limits.request_timeout
            await tally.run(agents[index], client, uri, timeout=timeout, name=agent_dirs[index].name)

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return tally.latencies, tally.failures, time.perf_counter() - t0, tally.restarts


def run_bench(
    profile_name: str,
    *,
    devices: int,
    concurrency: int,
    sessions: int | None = None,
    image_size: int = 1024,
    keep: bool = False,
    progress: Progress | None = None,
    tam_workers: int = 1,
    db: str | None = None,
    pin: bool = False,
    db_server_pid: int | None = None,
    rate: float | None = None,
    device_processes: int = 1,
    device_client: str = "lean",
    tam_loop: str = "auto",
) -> BenchResult:
    """Build a world, start the TAM process(es), run the sessions, return the figures.

    `db`: an SQLAlchemy URL shared by the TAM workers, or "postgres" for a throwaway PostgreSQL
    server started (and deleted) here, reached over its Unix-domain socket as a TAM on the database's
    host would be (a round trip costs the client a third less CPU than over loopback TCP; give a
    TCP URL to measure that); None = the TAM folder's SQLite file.
    `pin`: the TAM's processes on the first `tam_workers` CPUs, the simulated devices on the others
    (bench.pinning: the devices then cannot preempt the TAM); a throwaway PostgreSQL is not pinned.
    `db_server_pid`: the main process of a database server on this host (set for the throwaway one):
    the CPU of its process tree over the run is reported as the database's.
    `rate`: sessions start at most this many per second (`fleet.drive_fleet`): the TAM's CPU per
    session depends on how many requests share a group commit, so set-ups are compared at the same
    offered load with it, rather than each as fast as its own simulated devices go.
    `device_processes`: the devices simulated by that many processes (`fleet_procs`), for a TAM that
    one simulating process cannot keep busy; their CPU is summed, their peak RSS the largest.
    `device_client`: what the simulated devices talk through (`fleet.DEVICE_CLIENTS`).
    `tam_loop`: the TAM's event loop (`tam serve --loop`: auto, uvloop or asyncio).
    `progress(ok, failed, total)` is called after every session (the CLI draws a bar from it)."""

    profile = load_profile(profile_name)  # fail early on a bad name
    if rate is not None and not rate > 0:  # NaN fails too
        raise BenchError(f"rate {rate!r}: give sessions per second above 0")
    if tam_loop not in EVENT_LOOPS:
        raise BenchError(f"TAM event loop {tam_loop!r}: choose one of {', '.join(EVENT_LOOPS)}")
    if not 1 <= device_processes <= concurrency:
        raise BenchError(
            f"{device_processes} device processes for a concurrency of {concurrency}: each process needs"
            " at least one session in flight (1..concurrency)"
        )
    if db == "postgres":
        with throwaway_postgres_server(unix_socket=True) as server:
            return run_bench(
                profile_name, devices=devices, concurrency=concurrency, sessions=sessions,
                image_size=image_size, keep=keep, progress=progress, tam_workers=tam_workers,
                db=server.url, pin=pin, db_server_pid=server.server_pid(), rate=rate,
                device_processes=device_processes, device_client=device_client, tam_loop=tam_loop,
            )  # fmt: skip
    if tam_workers > 1:
        check_workers_allowed(profile_name, db or "sqlite", tam_workers)
    tam_cpus, device_cpus = split_cpus(tam_workers) if pin else (None, None)
    n = sessions or devices
    shm = Path("/dev/shm")
    agents_base = str(shm) if shm.is_dir() and os.access(shm, os.W_OK) else None
    tam_tmp = tempfile.mkdtemp(prefix="teep-bench-tam-")
    agents_tmp = tempfile.mkdtemp(prefix="teep-bench-agents-", dir=agents_base)
    try:
        world = make_fleet_world(
            Path(tam_tmp) / "tam", Path(agents_tmp), devices, image_size, profile_name, db=db
        )
        load = os.getloadavg()[0]
        certs: Path | None = None
        extra: tuple[str, ...] = ()
        if profile.transport.scheme == "https":
            certs = Path(tam_tmp) / "certs"
            write_bundle(certs)
            extra = ("--certs", str(certs))
        if db is not None:
            extra += ("--db", db)
        if tam_workers > 1:
            extra += ("--workers", str(tam_workers))
        stats_file = Path(tam_tmp) / "tam-stats.jsonl"
        extra += ("--stats-file", str(stats_file), "--loop", tam_loop)
        with tam_process(profile_name, world.tam_dir, extra=extra, devices=devices) as (uri, pid):
            pinned: contextlib.AbstractContextManager[None] = contextlib.nullcontext()
            if tam_cpus is not None and device_cpus is not None:
                pin_processes({pid, *tam_pids(pid)}, tam_cpus)  # all workers are up: it printed its URI
                pinned = this_thread_on(device_cpus)
            cpu0 = _tam_cpu_seconds(pid)
            switches0 = _context_switches(tam_pids(pid))
            db0 = tree_cpu_seconds(db_server_pid) if db_server_pid is not None else None
            c0 = time.process_time()
            with pinned, RssSampler(pid) as sampler:
                if device_processes == 1:
                    drive = asyncio.run(
                        drive_fleet(
                            profile_name,
                            uri,
                            world,
                            n,
                            concurrency,
                            certs,
                            progress,
                            rate=rate,
                            device_client=device_client,
                        )
                    )
                    client_cpu, client_peak = time.process_time() - c0, peak_rss_mib(os.getpid())
                else:
                    try:
                        shared = drive_in_processes(
                            profile_name, uri, world, n, concurrency, device_processes,
                            certs=certs, progress=progress, rate=rate, device_client=device_client,
                        )  # fmt: skip
                    except DeviceProcessError as exc:
                        raise BenchError(str(exc)) from None
                    # this process only waited for them: theirs is the simulator's CPU
                    drive, client_cpu = shared.drive, shared.cpu_seconds
                    client_peak = max(shared.peak_rss_mib)
            cpu1 = _tam_cpu_seconds(pid)
            switches1 = _context_switches(tam_pids(pid))
            db1 = tree_cpu_seconds(db_server_pid) if db_server_pid is not None else None
            rss = [peak_rss_mib(p) for p in tam_pids(pid)]
        tam_cpu = cpu1 - cpu0 if cpu0 is not None and cpu1 is not None else None
        return BenchResult(
            profile=profile_name,
            devices=devices,
            concurrency=concurrency,
            sessions=n,
            ok=len(drive.latencies),
            failed=len(drive.failures),
            seconds=drive.seconds,
            latencies=drive.latencies,
            tam_cpu_seconds=tam_cpu,
            tam_engine_cpu_seconds=engine_cpu_seconds(stats_file, tam_workers),
            tam_mean_batch=mean_batch(stats_file, tam_workers),
            client_cpu_seconds=client_cpu,
            handshake_restarts=drive.handshake_restarts,
            failures=drive.failures,
            load_average=load,
            tam_workers=tam_workers,
            database="sqlite" if db is None else db.split(":", 1)[0].split("+", 1)[0],
            tam_peak_rss_mib=[m for m in rss if m is not None],
            database_cpu_seconds=db1 - db0 if db0 is not None and db1 is not None else None,
            tam_context_switches=(
                switches1 - switches0 if switches0 is not None and switches1 is not None else None
            ),
            target_rate=rate,
            fleet_build_seconds=world.build_seconds,
            agent_build_seconds=drive.agent_build_seconds,
            peak_agents=drive.peak_agents,
            client_peak_rss_mib=client_peak,
            device_processes=device_processes,
            device_client=used_client(profile, device_client),
            tam_event_loop=event_loop_of(stats_file, tam_workers),
            tam_rss_samples=sampler.samples,
            tam_cpus=tam_cpus,
            device_cpus=device_cpus,
        )
    finally:
        if not keep:
            shutil.rmtree(tam_tmp, ignore_errors=True)
            shutil.rmtree(agents_tmp, ignore_errors=True)


__all__ = [
    "COMPONENT_ID", "BenchError", "BenchResult", "RssSampler", "busy_percent", "engine_cpu_seconds",
    "format_result", "make_world", "peak_rss_mib", "rss_mib", "run_bench", "tam_pids", "tam_process",
]  # fmt: skip
