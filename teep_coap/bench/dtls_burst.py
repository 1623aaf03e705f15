"""`teep-coap bench dtls-burst`: N `teep-coap agent run` processes started at once against one TAM.

This is the operator's worst morning: every device of a site powers up together. Each client is its
own process (its own Python start-up, its own DTLS handshake, its own Agent folder), the TAM is one
`teep-coap tam serve` process, all on loopback. A client counts as done when `agent run` exits 0
within the run's bound; the TAM's own record (its sessions table) is counted too, so a client that
gave up after the TAM finished is told apart from one whose handshake never got through.

Every failing client's last error line is sorted into a few kinds (`classify_failure`), so a run says
where the handshakes died; `TEEP_BURST_KEEP=DIR` keeps the TAM's log and each failing client's whole
stderr there (the clients then run with -v, which logs each handshake restart and 5.03 wait).
"""

from __future__ import annotations

import compileall
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

import teep_coap
from teep_coap.bench.sessions import STARTUP_TIMEOUT, BenchError, _cli_command, make_world, stop_child
from teep_coap.profiles import load_profile
from teep_coap.store.tamdir import open_store, read_config

DEFAULT_BOUND = 180.0  # seconds for the whole burst; every client still running then is killed
RESTART_MARK = "stalled, starting it again"  # the client's -v line for a restarted DTLS handshake
KEEP_ENV = "TEEP_BURST_KEEP"  # a folder: keep the TAM's log and every failing client's stderr

# (kind, text that marks it in the client's last error line), first match wins; the texts are the
# transport's own diagnoses (transport/coap/diagnosis.py, client.py).
FAILURE_KINDS: tuple[tuple[str, str], ...] = (
    ("tam-gone", "nothing is listening"),
    ("wrong-psk-verdict", "refused the DTLS handshake"),
    ("overloaded-5.03", "server answered 5.03"),
    ("handshake-unfinished", "answered the DTLS handshake but never completed it"),
    ("handshake-unanswered", "nothing answered the DTLS handshake"),
    ("request-timeout", "no answer from"),
    ("retransmissions-exhausted", "retransmissions exhausted"),
)


def classify_failure(last_line: str) -> str:
    """The kind of a failed client from its last stderr line ("other" when no kind matches)."""
    return next((kind for kind, mark in FAILURE_KINDS if mark in last_line), "other")


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
    tam_exit: int | None = None  # the TAM's exit status if it was gone before the run ended
    kinds: dict[str, int] = field(default_factory=dict)  # failures by kind (killed: "killed-at-bound")
    other_cpu: float | None = None  # CPU seconds the machine spent on work other than this run's
    udp: dict[str, int] = field(default_factory=dict)  # /proc/net/snmp Udp counters, change during the run
    # With TEEP_BURST_KEEP (clients log at -v): handshake restarts per client that exited 0, how close
    # the successful ones came to their handshake budget. Empty without it.
    restarts_of_ok: list[int] = field(default_factory=list)

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
            "tam_exit_during_run": self.tam_exit,
            "other_cpu_seconds_during_run": None if self.other_cpu is None else round(self.other_cpu, 1),
            "udp_counters_during_run": self.udp,
            "failure_kinds": dict(sorted(self.kinds.items())),
            "handshake_restarts_of_ok_clients": (
                {
                    "clients_with_restarts": sum(1 for n in self.restarts_of_ok if n),
                    "max": max(self.restarts_of_ok, default=0),
                    "total": sum(self.restarts_of_ok),
                }
                if self.restarts_of_ok
                else None
            ),
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
    if j["other_cpu_seconds_during_run"] is not None:
        lines.append(
            f"  other work on the machine during the run: {j['other_cpu_seconds_during_run']} CPU-seconds"
        )
    if j["udp_counters_during_run"]:
        lines.append(
            "  UDP during the run (whole machine): "
            + ", ".join(f"{k} +{v}" for k, v in j["udp_counters_during_run"].items())
        )
    if j["tam_exit_during_run"] is not None:
        lines.append(
            f"  THE TAM WAS GONE before the end (exit status {j['tam_exit_during_run']}): not a valid run"
        )
    restarts = j["handshake_restarts_of_ok_clients"]
    if restarts is not None:
        lines.append(
            f"  DTLS handshake restarts of the clients that succeeded: {restarts['total']} in all, "
            f"{restarts['clients_with_restarts']} clients with any, at most {restarts['max']} for one"
        )
    if j["failure_kinds"]:
        lines.append("  failures by kind: " + ", ".join(f"{k} {n}" for k, n in j["failure_kinds"].items()))
    lines += [f"  failure: {f}" for f in j["failures"]]
    return "\n".join(lines)


@contextlib.contextmanager
def _tam(
    profile: str, tam_dir: Path, log_path: Path, *, verbose: bool = False
) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    """`tam serve` with its log in a file (a pipe nobody reads would fill and stop the TAM); yields
    its URI and the process, whose exit during the run makes the run worthless."""
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            _cli_command(
                "tam", "serve", "--dir", str(tam_dir), "--profile", profile, "-v" if verbose else "-q"
            ),
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
            yield line.split()[2], proc
        finally:
            stop_child(proc)


def _tam_sessions_done(tam_dir: Path) -> int:

    store = open_store(tam_dir, read_config(tam_dir))
    try:
        return len({dev for _, dev, _, _, outcome in store.sessions() if outcome == "success"})
    finally:
        store.close()


def byte_compile_package() -> bool:
    """Write teep_coap's bytecode (`__pycache__`, as an installed wheel has it) before the clients start.

    An `agent run` from a source checkout in an environment with PYTHONDONTWRITEBYTECODE=1 (this
    project's development VM) compiled every teep_coap module it imports from source, in each of the
    200 processes: about 0.1 s of CPU each, a sixth of the start-up (2026-12-05, importing
    `teep_coap.cli.agent`: 0.54-0.64 s of CPU from source, 0.46-0.49 s from bytecode). Compiling once here
    measures the start-up an installed package has. False when the folder is not writable."""
    return bool(compileall.compile_dir(Path(teep_coap.__file__).parent, quiet=1))


def _busy_cpu_seconds() -> float | None:
    """CPU seconds every core of the machine has spent busy since boot (/proc/stat), or None."""
    try:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


UDP_COUNTERS = ("RcvbufErrors", "NoPorts")  # a full receive buffer; datagrams to a closed port


def _udp_counters() -> dict[str, int]:
    """The machine's UDP counters of interest (/proc/net/snmp), empty where they cannot be read."""
    try:
        head, values = [
            line.split()[1:]
            for line in Path("/proc/net/snmp").read_text().splitlines()
            if line.startswith("Udp:")
        ][:2]
    except (OSError, ValueError):
        return {}
    counters = dict(zip(head, values, strict=False))
    return {name: int(counters[name]) for name in UDP_COUNTERS if name in counters}


def _children_cpu_seconds() -> float:
    t = os.times()
    return t.children_user + t.children_system


def _keep(folder: Path | None, name: str, text: str) -> None:
    """Write one kept log into the TEEP_BURST_KEEP folder (nothing without one)."""
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)


def run_burst(
    profile_name: str = "coaps-psk",
    *,
    clients: int = 200,
    bound: float = DEFAULT_BOUND,
    timeout: float | None = None,
) -> BurstResult:
    """Start `clients` Agents at once, wait at most `bound` seconds, count who finished."""

    load_profile(profile_name)  # fail early on a bad name
    keep = Path(os.environ[KEEP_ENV]) if os.environ.get(KEEP_ENV) else None
    tmp = Path(tempfile.mkdtemp(prefix="teep-burst-"))
    try:
        world = make_world(tmp / "tam", tmp / "agents", clients, 256)
        byte_compile_package()
        load = os.getloadavg()[0]
        # The load average at start does not see a job that starts during the run: what the machine
        # spent beyond this run's own processes (the TAM, the clients) is measured as well.
        busy0, ours0, udp0 = _busy_cpu_seconds(), _children_cpu_seconds(), _udp_counters()
        env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
        with _tam(profile_name, world.tam_dir, tmp / "tam.log", verbose=keep is not None) as (uri, tam):
            extra = ("--timeout", str(timeout)) if timeout else ()
            verbose = ("-v",) if keep is not None else ()
            # stderr into files, not pipes: with -v a client waiting on a full pipe nobody reads yet
            # (the loop below reads them in order) would stall its own handshake.
            (tmp / "err").mkdir()
            errs = [(tmp / "err" / f"{i}.log").open("w") for i in range(len(world.agent_dirs))]
            t0 = time.monotonic()
            procs = [
                subprocess.Popen(
                    _cli_command(
                        "agent",
                        "run",
                        "--profile",
                        profile_name,
                        "--tam",
                        uri,
                        "--state",
                        str(d),
                        *extra,
                        *verbose,
                    ),
                    stdout=subprocess.DEVNULL,
                    stderr=errs[i],
                    env=env,
                    start_new_session=True,
                )
                for i, d in enumerate(world.agent_dirs)
            ]
            for f in errs:
                f.close()
            ok = failed = killed = 0
            failures: list[str] = []
            kinds: dict[str, int] = {}
            restarts_of_ok: list[int] = []
            for i, p in enumerate(procs):
                left = max(0.1, bound - (time.monotonic() - t0))
                try:
                    p.wait(timeout=left)
                except subprocess.TimeoutExpired:
                    os.killpg(p.pid, signal.SIGKILL)
                    p.wait()
                    err = (tmp / "err" / f"{i}.log").read_text(errors="replace")
                    killed += 1
                    kinds["killed-at-bound"] = kinds.get("killed-at-bound", 0) + 1
                    _keep(keep, f"client-{i:04d}.killed.log", err)
                    continue
                if p.returncode == 0:
                    ok += 1
                    if keep is not None:
                        err = (tmp / "err" / f"{i}.log").read_text(errors="replace")
                        restarts_of_ok.append(err.count(RESTART_MARK))
                    continue
                err = (tmp / "err" / f"{i}.log").read_text(errors="replace")
                failed += 1
                last = err.strip().splitlines()[-1] if err.strip() else f"exit {p.returncode}"
                failures.append(last)
                kind = classify_failure(last)
                kinds[kind] = kinds.get(kind, 0) + 1
                _keep(keep, f"client-{i:04d}.{kind}.log", err)
            seconds = time.monotonic() - t0
            tam_exit = tam.poll()
        busy1, ours1 = _busy_cpu_seconds(), _children_cpu_seconds()  # the TAM has been waited for
        other = None if busy0 is None or busy1 is None else max(0.0, busy1 - busy0 - (ours1 - ours0))
        udp1 = _udp_counters()
        udp = {name: udp1[name] - udp0[name] for name in udp0 if name in udp1}
        done = _tam_sessions_done(world.tam_dir)
        log_text = (tmp / "tam.log").read_text(errors="replace")
        if os.environ.get("TEEP_BURST_TAM_LOG"):  # keep the TAM's log for a closer look
            shutil.copy(tmp / "tam.log", os.environ["TEEP_BURST_TAM_LOG"])
        _keep(keep, "tam.log", log_text)
        warnings = sum(1 for line in log_text.splitlines() if " WARNING " in line or " ERROR " in line)
        return BurstResult(
            profile_name,
            clients,
            ok,
            failed,
            killed,
            done,
            seconds,
            load,
            failures,
            warnings,
            tam_exit,
            kinds,
            other,
            udp,
            restarts_of_ok,
        )
    except OSError as exc:
        raise BenchError(f"dtls-burst could not run: {exc}") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


__all__ = ["BurstResult", "byte_compile_package", "classify_failure", "format_burst", "run_burst"]
