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
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from teep_coap.bench.sessions import (
    STARTUP_TIMEOUT,
    BenchError,
    BenchResult,
    _cli_command,
    _cpu_seconds,
    _drive,
    load_agents,
    make_world,
    tam_process,
)

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
def gateway_process(gw_dir: Path, profile: str, tam_uri: str) -> Iterator[tuple[str, int]]:
    """`teep-coap gateway serve` in a child process; yields (gateway URI, pid)."""
    import selectors

    proc = subprocess.Popen(
        _cli_command("gateway", "serve", "--dir", str(gw_dir), "--profile", profile, "--tam", tam_uri, "-q"),
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
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def run_gateway_bench(
    profile_name: str = "coaps-psk", *, devices: int, concurrency: int, image_size: int = 1024
) -> GatewayBenchResult:
    """Build a TAM, a gateway and `devices` Agents; one install session per device through the gateway."""
    from teep_coap.profiles import load_profile
    from teep_coap.profiles.gateway import init_gateway_dir
    from teep_coap.transport.coap.credentials import provision_devices

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


__all__ = ["GatewayBenchResult", "format_gateway_result", "gateway_process", "run_gateway_bench"]
