"""`teep-coap bench gateway`: many simulated devices through one gateway process to one TAM process.

The TAM runs as `teep-coap tam serve` (HTTP, `teep-cbor-http`), the gateway as `teep-coap gateway serve`
(devices over the device profile, default coaps-psk), each in its own process so their CPU time and
the gateway's resident memory are read from /proc. The devices (Broker + Agent) run in this process
with C sessions in flight; one session is the whole install (DTLS handshake with the gateway, three
exchanges relayed to the TAM over HTTP). Figures: complete sessions/s, latency as the device sees it,
gateway CPU per session, and gateway RSS growth per device (the sessions it keeps).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import selectors
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import matplotlib
import matplotlib.pyplot as plt

from teep_coap.bench.sessions import (
    STARTUP_TIMEOUT,
    BenchError,
    BenchResult,
    _cli_command,
    _cpu_seconds,
    _drive,
    load_agents,
    make_world,
    stop_child,
    tam_process,
)
from teep_coap.profiles import load_profile
from teep_coap.profiles.gateway import fetch_through_gateway, init_gateway_dir
from teep_coap.profiles.session import run_until_done
from teep_coap.profiles.stack import make_client
from teep_coap.protocol.agent import AgentEngine
from teep_coap.security.suit.build import build_envelope
from teep_coap.store.agentdir import load_agent_state
from teep_coap.store.tamdir import load_tam_dir
from teep_coap.transport.coap.credentials import provision_devices

UPSTREAM_PROFILE = "teep-cbor-http"


@dataclass
class GatewayBenchResult:
    """The session figures (as `bench sessions`) plus the gateway process's CPU and memory."""

    sessions: BenchResult
    gateway_cpu_seconds: float | None
    gateway_rss_start_kib: int | None
    gateway_rss_end_kib: int | None

    def to_json(self) -> dict[str, Any]:
        j = self.sessions.to_json()
        ok = self.sessions.ok
        devices = self.sessions.devices
        grow = (
            self.gateway_rss_end_kib - self.gateway_rss_start_kib
            if self.gateway_rss_end_kib is not None and self.gateway_rss_start_kib is not None
            else None
        )
        j.update(
            {
                "upstream_profile": UPSTREAM_PROFILE,
                "gateway_cpu_seconds": None
                if self.gateway_cpu_seconds is None
                else round(self.gateway_cpu_seconds, 2),
                "gateway_cpu_ms_per_session": round(self.gateway_cpu_seconds / ok * 1000, 2)
                if self.gateway_cpu_seconds is not None and ok
                else None,
                "gateway_rss_start_kib": self.gateway_rss_start_kib,
                "gateway_rss_end_kib": self.gateway_rss_end_kib,
                "gateway_rss_growth_kib_per_device": round(grow / devices, 2) if grow is not None else None,
            }
        )
        return j


def format_gateway_result(r: GatewayBenchResult) -> str:
    j = r.to_json()
    lines = [
        f"{j['devices']} devices ({j['profile']}) -> one gateway -> one TAM ({j['upstream_profile']}),"
        f" concurrency {j['concurrency']}, {j['sessions']} sessions",
        f"  complete sessions: {j['ok']} ok, {j['failed']} failed in {j['seconds']} s"
        f" = {j['sessions_per_second']} sessions/s",
        f"  latency per session: p50 {j['p50_ms']} ms, p99 {j['p99_ms']} ms",
        f"  gateway process: CPU {j['gateway_cpu_seconds']} s ({j['gateway_cpu_ms_per_session']} ms/session);"
        f" RSS {j['gateway_rss_start_kib']} KiB at start, {j['gateway_rss_end_kib']} KiB at the end"
        f" ({j['gateway_rss_growth_kib_per_device']} KiB per device)",
        f"  TAM process CPU: {j['tam_cpu_seconds']} s ({j['tam_cpu_ms_per_session']} ms/session);"
        f" device side CPU {j['client_cpu_seconds']} s",
        f"  machine: {os.cpu_count()} cores, load average {j['load_average_at_start']} at start",
    ]
    lines += [f"  failure: {f}" for f in j["failures"]]
    return "\n".join(lines)


def _rss_kib(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


@contextlib.contextmanager
def gateway_process(
    gw_dir: Path, profile: str, tam_uri: str, *, extra: tuple[str, ...] = ()
) -> Iterator[tuple[str, int]]:
    """`teep-coap gateway serve` in a child process; yields (gateway URI, pid)."""

    proc = subprocess.Popen(
        _cli_command(
            "gateway", "serve", "--dir", str(gw_dir), "--profile", profile, "--tam", tam_uri, "-q", *extra
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        sel = selectors.DefaultSelector()
        sel.register(proc.stdout, selectors.EVENT_READ)
        deadline = time.monotonic() + STARTUP_TIMEOUT
        uri = None
        while uri is None and time.monotonic() < deadline and proc.poll() is None:
            if sel.select(timeout=0.2):
                line = proc.stdout.readline()
                if line.startswith("gateway serving "):
                    uri = line.split()[2]
        if uri is None:
            err = proc.stderr.read() if proc.stderr and proc.poll() is not None else ""
            raise BenchError(f"`teep-coap gateway serve` did not start: {err.strip()[-500:] or 'no output'}")
        yield uri, proc.pid
    finally:
        stop_child(proc)


def run_gateway_bench(
    profile_name: str = "coaps-psk", *, devices: int, concurrency: int, image_size: int = 1024
) -> GatewayBenchResult:
    """Build a TAM, a gateway and `devices` Agents; one install session per device through the gateway."""

    load_profile(profile_name)
    shm = Path("/dev/shm")
    agents_base = str(shm) if shm.is_dir() and os.access(shm, os.W_OK) else None
    tmp = tempfile.mkdtemp(prefix="teep-bench-gw-")
    agents_tmp = tempfile.mkdtemp(prefix="teep-bench-gw-agents-", dir=agents_base)
    try:
        world = make_world(Path(tmp) / "tam", Path(agents_tmp), devices, image_size)
        gw_dir = init_gateway_dir(Path(tmp) / "gw")
        # the devices' transport credentials now name the gateway, not the TAM
        provision_devices(gw_dir, [(d.name, d) for d in world.agent_dirs])
        agents = load_agents(world.agent_dirs)
        load = os.getloadavg()[0]
        with (
            tam_process(UPSTREAM_PROFILE, world.tam_dir) as (tam_uri, tam_pid),
            gateway_process(gw_dir, profile_name, tam_uri) as (gw_uri, gw_pid),
        ):
            tam0, gw0, rss0 = _cpu_seconds(tam_pid), _cpu_seconds(gw_pid), _rss_kib(gw_pid)
            c0 = time.process_time()
            latencies, failures, seconds, restarts = asyncio.run(
                _drive(profile_name, gw_uri, world.agent_dirs, devices, concurrency, None, agents)
            )
            client_cpu = time.process_time() - c0
            tam1, gw1, rss1 = _cpu_seconds(tam_pid), _cpu_seconds(gw_pid), _rss_kib(gw_pid)
        result = BenchResult(
            profile=profile_name,
            devices=devices,
            concurrency=concurrency,
            sessions=devices,
            ok=len(latencies),
            failed=len(failures),
            seconds=seconds,
            latencies=latencies,
            tam_cpu_seconds=tam1 - tam0 if tam0 is not None and tam1 is not None else None,
            client_cpu_seconds=client_cpu,
            handshake_restarts=restarts,
            failures=failures,
            load_average=load,
        )
        return GatewayBenchResult(
            result, gw1 - gw0 if gw0 is not None and gw1 is not None else None, rss0, rss1
        )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(agents_tmp, ignore_errors=True)


# --- the component cache: upstream bytes with and without it ---------------------------------------


@dataclass
class CachePoint:
    """One run: N devices install the same URI-named image through one gateway."""

    devices: int
    cache: bool
    ok: int
    upstream_fetches: int
    upstream_bytes: int
    image_size: int
    seconds: float

    def to_json(self) -> dict[str, Any]:
        return {
            "devices": self.devices,
            "cache": self.cache,
            "ok": self.ok,
            "upstream_fetches": self.upstream_fetches,
            "upstream_bytes": self.upstream_bytes,
            "image_size": self.image_size,
            "seconds": round(self.seconds, 2),
        }


@contextlib.contextmanager
def _origin(image: bytes) -> Iterator[tuple[str, list[int]]]:
    """An HTTP origin for one image in a thread (the devices' fetches block this process's loop);
    yields (its URI, [bytes served, requests])."""

    counts = [0, 0]

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # http.server's method name
            self.send_response(200)
            self.send_header("Content-Length", str(len(image)))
            self.end_headers()
            self.wfile.write(image)
            counts[0] += len(image)
            counts[1] += 1

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/tc.bin", counts
    finally:
        server.shutdown()
        server.server_close()


def _uri_world(root: Path, agents_root: Path, devices: int, image: bytes, uri: str) -> Any:
    """`make_world` with a component whose manifest names its image by URI (nothing integrated)."""

    world = make_world(root, agents_root, devices, 0)
    config, store = load_tam_dir(root)

    agent_config = load_agent_state(world.agent_dirs[0]).config
    envelope = build_envelope(
        image,
        key=config.keys[0],
        component_id=(b"bench-gateway-uri-tc",),
        sequence_number=1,
        vendor_id=agent_config.vendor_id,
        class_id=agent_config.class_id,
        uri=uri,
    )
    store.add_component(
        component_id=(b"bench-gateway-uri-tc",),
        sequence_number=1,
        envelope=envelope,
        now=time.time(),
        name="bench-uri",
        audience="all",
    )
    store.close()
    return world


async def _drive_with_fetcher(profile_name: str, uri: str, agent_dirs: list[Path], concurrency: int) -> int:
    """Install sessions (until nothing more) for every device, with the gateway fetcher; ok count."""

    profile = load_profile(profile_name)
    queue: asyncio.Queue[Path] = asyncio.Queue()
    for d in agent_dirs:
        queue.put_nowait(d)
    ok = 0

    async def worker() -> None:
        nonlocal ok
        while not queue.empty():
            d = queue.get_nowait()
            agent = AgentEngine(load_agent_state(d), fetcher=fetch_through_gateway(profile, uri, d))
            client = make_client(profile, uri, state_dir=d)
            try:
                report = await run_until_done(agent, client, uri, timeout=profile.limits.request_timeout)
            finally:
                await client.close()
            ok += report.ok and any(cid == (b"bench-gateway-uri-tc",) for cid, _ in report.installed)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return ok


def run_cache_bench(
    device_counts: tuple[int, ...] = (1, 10, 100),
    *,
    image_size: int = 65536,
    profile_name: str = "coaps-psk",
    concurrency: int = 8,
) -> list[CachePoint]:
    """Upstream bytes for N devices installing one URI-named image, with and without the cache."""

    image = bytes(i % 251 for i in range(image_size))
    points: list[CachePoint] = []
    for n in device_counts:
        for cache in (True, False):
            tmp = tempfile.mkdtemp(prefix="teep-bench-gwc-")
            try:
                with _origin(image) as (image_uri, counts):
                    world = _uri_world(Path(tmp) / "tam", Path(tmp) / "agents", n, image, image_uri)
                    gw_dir = init_gateway_dir(Path(tmp) / "gw")
                    provision_devices(gw_dir, [(d.name, d) for d in world.agent_dirs])
                    extra = ("--image-origin", image_uri) + (() if cache else ("--no-cache",))
                    with (
                        tam_process(UPSTREAM_PROFILE, world.tam_dir) as (tam_uri, _),
                        gateway_process(gw_dir, profile_name, tam_uri, extra=extra) as (gw_uri, _),
                    ):
                        t0 = time.perf_counter()
                        ok = asyncio.run(
                            _drive_with_fetcher(profile_name, gw_uri, world.agent_dirs, concurrency)
                        )
                        seconds = time.perf_counter() - t0
                    points.append(CachePoint(n, cache, ok, counts[1], counts[0], image_size, seconds))
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
    return points


def format_cache_points(points: list[CachePoint]) -> str:
    lines = [f"{'devices':>7} {'cache':>5} {'ok':>4} {'upstream fetches':>16} {'upstream bytes':>14}"]
    for p in points:
        cache = "yes" if p.cache else "no"
        lines.append(f"{p.devices:>7} {cache:>5} {p.ok:>4} {p.upstream_fetches:>16} {p.upstream_bytes:>14,}")
    return "\n".join(lines)


def cache_chart(points: list[CachePoint], path: Path) -> None:
    """Upstream bytes against devices, with and without the cache (log-log PNG)."""

    matplotlib.use("Agg")

    fig, ax = plt.subplots(figsize=(6, 4))
    for cache, label in ((False, "without cache"), (True, "with the gateway's cache")):
        xs = [p.devices for p in points if p.cache is cache]
        ys = [p.upstream_bytes for p in points if p.cache is cache]
        ax.plot(xs, ys, marker="o", label=label)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("devices installing the same component")
    ax.set_ylabel("image bytes fetched upstream")
    ax.set_title(f"{points[0].image_size // 1024} KiB component through one gateway")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


__all__ = [
    "CachePoint",
    "GatewayBenchResult",
    "cache_chart",
    "format_cache_points",
    "format_gateway_result",
    "gateway_process",
    "run_cache_bench",
    "run_gateway_bench",
]
