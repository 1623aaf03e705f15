"""`teep-coap bench dtls-burst`: N `teep-coap agent run` processes started at once against one TAM.

This is the operator's worst morning: every device of a site powers up together. Each client is its
own process (its own Python start-up, its own DTLS handshake, its own Agent folder), the TAM is one
`teep-coap tam serve` process, all on loopback. A client counts as done when `agent run` exits 0
within the run's bound; the TAM's own record (its sessions table) is counted too, so a client that
gave up after the TAM finished is told apart from one whose handshake never got through.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from teep_coap.bench.sessions import STARTUP_TIMEOUT, BenchError, _cli_command, make_world, stop_child
from teep_coap.profiles import load_profile
from teep_coap.store.tamdir import open_store, read_config

DEFAULT_BOUND = 180.0  # seconds for the whole burst; every client still running then is killed


@dataclass
class BurstResult:
    profile: str
    clients: int
    ok: int  # `agent run` exited 0
    failed: int  # exited non-zero
    killed: int  # still running at the bound
    tam_sessions_done: int  # devices with an install session the TAM recorded as a success
    seconds: float  # from the first start to the last exit
    load_average: float
    failures: list[str] = field(default_factory=list)
    tam_warnings: int = 0  # WARNING/ERROR lines in the TAM's log during the run

    @property
    def success_rate(self) -> float:
        return self.ok / self.clients if self.clients else 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "profile": self.profile,
            "clients": self.clients,
            "ok": self.ok,
            "failed": self.failed,
            "killed_at_bound": self.killed,
            "success_rate": round(self.success_rate, 4),
            "tam_sessions_done": self.tam_sessions_done,
            "seconds": round(self.seconds, 1),
            "load_average_at_start": round(self.load_average, 2),
            "cores": os.cpu_count(),
            "tam_log_warnings": self.tam_warnings,
            "failures": self.failures[:5],
        }


def format_burst(r: BurstResult) -> str:
    j = r.to_json()
    lines = [
        f"{j['clients']} `agent run` processes at once over {j['profile']}: {j['ok']} ok "
        f"({j['success_rate']:.1%}), {j['failed']} failed, {j['killed_at_bound']} killed at the bound,"
        f" in {j['seconds']} s",
        f"  TAM recorded a successful install session for {j['tam_sessions_done']} devices;"
        f" {j['tam_log_warnings']} warnings in its log",
        f"  machine: {j['cores']} cores, load average {j['load_average_at_start']} at start",
    ]
    lines += [f"  failure: {f}" for f in j["failures"]]
    return "\n".join(lines)


@contextlib.contextmanager
def _tam(profile: str, tam_dir: Path, log_path: Path) -> Iterator[str]:
    """`tam serve` with its log in a file: a pipe nobody reads would fill and stop the TAM."""
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            _cli_command("tam", "serve", "--profile", profile, "--dir", str(tam_dir), "-q"),
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
        )
        try:
            assert proc.stdout is not None
            deadline = time.monotonic() + STARTUP_TIMEOUT
            line = ""
            while time.monotonic() < deadline and proc.poll() is None:
                line = proc.stdout.readline()
                if line.startswith("TAM serving "):
                    break
            if not line.startswith("TAM serving "):
                raise BenchError(f"`teep-coap tam serve` did not start: {log_path.read_text()[-500:]}")
            yield line.split()[2]
        finally:
            stop_child(proc)


def _tam_sessions_done(tam_dir: Path) -> int:

    store = open_store(tam_dir, read_config(tam_dir))
    try:
        return len({dev for _, dev, _, _, outcome in store.sessions() if outcome == "success"})
    finally:
        store.close()


def run_burst(
    profile_name: str = "coaps-psk",
    *,
    clients: int = 200,
    bound: float = DEFAULT_BOUND,
    timeout: float | None = None,
) -> BurstResult:
    """Start `clients` Agents at once, wait at most `bound` seconds, count who finished."""

    load_profile(profile_name)  # fail early on a bad name
    tmp = Path(tempfile.mkdtemp(prefix="teep-burst-"))
    try:
        world = make_world(tmp / "tam", tmp / "agents", clients, 256)
        load = os.getloadavg()[0]
        env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
        with _tam(profile_name, world.tam_dir, tmp / "tam.log") as uri:
            extra = ("--timeout", str(timeout)) if timeout else ()
            t0 = time.monotonic()
            procs = [
                subprocess.Popen(
                    _cli_command(
                        "agent", "run", "--profile", profile_name, "--tam", uri, "--state", str(d), *extra
                    ),
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.PIPE,
                    text=True,
                    env=env,
                    start_new_session=True,
                )
                for d in world.agent_dirs
            ]
            ok = failed = killed = 0
            failures: list[str] = []
            for p in procs:
                left = max(0.1, bound - (time.monotonic() - t0))
                try:
                    _, err = p.communicate(timeout=left)
                except subprocess.TimeoutExpired:
                    os.killpg(p.pid, signal.SIGKILL)
                    p.communicate()
                    killed += 1
                    continue
                if p.returncode == 0:
                    ok += 1
                else:
                    failed += 1
                    failures.append(err.strip().splitlines()[-1] if err.strip() else f"exit {p.returncode}")
            seconds = time.monotonic() - t0
        done = _tam_sessions_done(world.tam_dir)
        log_text = (tmp / "tam.log").read_text(errors="replace")
        if os.environ.get("TEEP_BURST_TAM_LOG"):  # keep the TAM's log for a closer look
            shutil.copy(tmp / "tam.log", os.environ["TEEP_BURST_TAM_LOG"])
        warnings = sum(1 for line in log_text.splitlines() if " WARNING " in line or " ERROR " in line)
        return BurstResult(profile_name, clients, ok, failed, killed, done, seconds, load, failures, warnings)
    except OSError as exc:
        raise BenchError(f"dtls-burst could not run: {exc}") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


__all__ = ["BurstResult", "format_burst", "run_burst"]
