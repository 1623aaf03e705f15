"""Real processes, real bindings, real `kill -9`: `tam serve` or `agent run` is paused by the test hook
(TEEP_COAP_PAUSE_AT, teep_coap/crashpoints.py) exactly at a message boundary — the Agent after it
committed an Update and before the Success leaves, the TAM after it committed the Update it is about
to send, the TAM with the Success received and not yet processed — and the test sends it SIGKILL
there. Then the next `agent run` must exit 0, the device must hold the new state (not installed
twice), the TAM's record must match the device, and the run must say what was recovered.

Each binding (coap, coaps-psk, http) runs one device through install, update to N+1 and delete for
every point, one after another on one world (one TAM process, restarted where it is the one killed);
the three bindings run side by side. Every measured row must equal its row of the table in
docs/engines.md. The in-process matrix (every message × loss / Agent death / TAM death, over real
sockets too) is tests/profiles/test_recovery_matrix.py.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from recovery_doc import doc_table

from teep_coap.crashpoints import ENV, MARKER_ENV, PAUSE_ENV
from teep_coap.profiles import load_profile
from teep_coap.profiles.scenario import COMPONENT_ID, teep_world
from teep_coap.security.suit.build import build_envelope
from teep_coap.store.agentdir import load_agent_state
from teep_coap.store.tamdir import load_tam_dir

pytestmark = [pytest.mark.recovery, pytest.mark.timeout(300)]

CLI = [sys.executable, "-c", "from teep_coap.cli import main; main()"]
POINTS = (  # (the process killed, where it is paused for the kill)
    ("Agent", "agent.answered.success"),  # the Update is committed on the device, the Success not sent
    ("TAM", "tam.committed.query-response"),  # the Update is committed in the TAM's database, not sent
    ("TAM", "tam.received.success"),  # the Success arrived, nothing of it processed
)
FLOWS = ("install", "update", "delete")
BINDINGS = {"coap": "coap", "coaps-psk": "coaps-psk", "teep-cbor-http": "http"}  # profile → doc column
PAUSE_WAIT = 60.0  # seconds a test waits for a process to reach its point
CALM_TIMEOUT = 10.0  # `agent run --timeout`: a loaded machine must not fail an exchange that has no fault
KILLED_TIMEOUT = 4.0  # the run whose TAM is killed under it waits this long for the answer it never gets
Device = dict[tuple[bytes, ...], tuple[int, float]]


def cli_env(pause_at: str | None = None, marker: Path | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in (ENV, PAUSE_ENV, MARKER_ENV)}
    if pause_at is not None:
        env[PAUSE_ENV], env[MARKER_ENV] = pause_at, str(marker)
    return env


def kill_when_paused(
    target: subprocess.Popen[str], marker: Path, point: str, other: subprocess.Popen[str]
) -> None:
    """Wait until `target` pauses at `point` (its marker file names it), then SIGKILL it there."""
    deadline = time.monotonic() + PAUSE_WAIT
    while not marker.exists():
        assert target.poll() is None, f"ended with {target.returncode} before it reached {point}"
        assert other.poll() is None, f"the other process ended ({other.returncode}) before {point}"
        assert time.monotonic() < deadline, f"never reached {point}"
        time.sleep(0.02)
    assert marker.read_text(encoding="ascii").split() == [str(target.pid), point]
    os.kill(target.pid, signal.SIGKILL)
    assert target.wait(timeout=30) == -signal.SIGKILL, point
    marker.unlink()


class TamProcess:
    """`teep-coap tam serve` on a fixed port (the first start picks it), optionally paused at a point."""

    def __init__(self, profile: str, tam_dir: Path) -> None:
        self.profile, self.tam_dir = profile, tam_dir
        self.port = 0
        self.uri = ""
        self.proc: subprocess.Popen[str] | None = None

    def start(self, pause_at: str | None = None, marker: Path | None = None) -> subprocess.Popen[str]:
        cmd = [*CLI, "tam", "serve", "--profile", self.profile, "--dir", str(self.tam_dir), "-q"]
        self.proc = subprocess.Popen(
            [*cmd, "--bind", f"127.0.0.1:{self.port}"],
            stdout=subprocess.PIPE,
            text=True,
            env=cli_env(pause_at, marker),
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()  # "TAM serving URI (profile …)"
        assert line.startswith("TAM serving "), line
        self.uri = line.split()[2]
        self.port = int(self.uri.split("://", 1)[1].split("/", 1)[0].rsplit(":", 1)[1])
        return self.proc

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=30)


def agent_run(
    profile: str, uri: str, agent_dir: Path, env: dict[str, str] | None = None, timeout: float = CALM_TIMEOUT
) -> subprocess.Popen[str]:
    cmd = [*CLI, "agent", "run", "--profile", profile, "--tam", uri, "--state", str(agent_dir)]
    cmd += ["--timeout", f"{timeout:g}"]
    return subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env or cli_env()
    )


def finished(proc: subprocess.Popen[str]) -> tuple[int, Any]:
    """(exit status, the JSON report when it is 0, else stderr)."""
    out, err = proc.communicate(timeout=120)
    return proc.returncode, json.loads(out) if proc.returncode == 0 else err


def device(agent_dir: Path) -> Device:
    return {
        tuple(e.component_id): (e.sequence_number, e.installed_at)
        for e in load_agent_state(agent_dir).components.list()
    }


def tam_record(tam_dir: Path) -> dict[tuple[bytes, ...], int]:
    _, store = load_tam_dir(tam_dir)
    try:
        (dev,) = store.devices()
        return {
            tuple(c.component_id): c.installed_seq
            for c in store.device_components(dev.id)
            if c.installed_seq is not None
        }
    finally:
        store.close()


class Catalog:
    """The operator's changes between cells (its own connection to the TAM database, as the CLI's)."""

    def __init__(self, world: Any) -> None:
        self.world = world
        self.seq = 1
        self.offered = True  # teep_world offers sequence 1 to all devices: the first install is ready

    def next_flow(self, flow: str) -> dict[tuple[bytes, ...], int]:
        """Make the TAM's next session do `flow`; returns the device state it must reach."""
        if flow == "delete":
            self._add(self.seq, "delete")
            return {}
        if flow == "update" or not self.offered:
            self.seq += 1
            self._add(self.seq, "all")
        self.offered = False
        return {COMPONENT_ID: self.seq}

    def _add(self, seq: int, audience: str) -> None:
        config, store = load_tam_dir(self.world.tam_dir)
        try:
            latest = store.latest_component(COMPONENT_ID)
            if latest is not None and latest.sequence_number == seq:
                envelope = latest.envelope
            else:
                cfg = self.world.agent.state.config
                envelope = build_envelope(
                    f"version {seq}".encode() * 40,
                    key=next(k for k in config.keys if k.key_type == "P-256"),
                    component_id=COMPONENT_ID,
                    sequence_number=seq,
                    vendor_id=cfg.vendor_id,
                    class_id=cfg.class_id,
                )
            store.add_component(
                component_id=COMPONENT_ID, sequence_number=seq, envelope=envelope, now=0.0, audience=audience
            )
        finally:
            store.close()


def recovered_text(report: dict[str, Any]) -> str:
    if "recovered" not in report:
        return "nothing to recover"
    note = report["recovered"]["note"]
    return "recovered: had been applied" if "applied an Update" in note else "recovered: rolled back"


@contextlib.contextmanager
def ended(proc: subprocess.Popen[str]) -> Iterator[None]:
    """A process a failed check left running does not outlive the test."""
    try:
        yield
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=30)


def kill_cell(
    binding: str, tam: TamProcess, agent_dir: Path, who: str, point: str, marker: Path
) -> tuple[str, Device]:
    """The run that is killed; returns how it ended and what the device held right after."""
    if who == "Agent":
        proc = agent_run(binding, tam.uri, agent_dir, cli_env(point, marker))
        with ended(proc):
            kill_when_paused(proc, marker, point, tam.proc)  # type: ignore[arg-type]
        return "killed", device(agent_dir)
    tam.stop()
    server = tam.start(point, marker)
    proc = agent_run(binding, tam.uri, agent_dir, timeout=KILLED_TIMEOUT)
    with ended(proc):
        kill_when_paused(server, marker, point, proc)
        rc, err = finished(proc)  # the Broker's exchange fails: no answer, or the connection reset
    assert rc == 2 and err.startswith("teep-coap: error: ") and "failed" in err, (binding, point, rc, err)
    had = device(agent_dir)
    tam.start()  # back, on the same port, without the pause
    return f"exit {rc}", had


def chain(binding: str, root: Path) -> dict[tuple[str, str], dict[str, tuple[str, str]]]:
    """Every point × install, update, delete on one device over `binding`: {(who, point): {flow:
    (first run, next run)}}."""
    world = teep_world(load_profile(binding), root, 400)
    world.tam.store.close()
    catalog = Catalog(world)
    tam = TamProcess(binding, world.tam_dir)
    tam.start()
    measured: dict[tuple[str, str], dict[str, tuple[str, str]]] = {}
    try:
        for who, point in POINTS:
            for flow in FLOWS:
                cell = (binding, who, point, flow)
                before = {c: s for c, (s, _) in device(world.agent_dir).items()}
                target = catalog.next_flow(flow)
                first, had = kill_cell(binding, tam, world.agent_dir, who, point, root / "paused")
                rc, report = finished(agent_run(binding, tam.uri, world.agent_dir))  # the one further run
                assert rc == 0, (cell, report)
                now = device(world.agent_dir)
                assert {c: s for c, (s, _) in now.items()} == target, (cell, now)
                for cid, (seq, at) in had.items():  # what the killed run installed is not installed again
                    if target.get(cid) == seq:
                        assert now[cid] == (seq, at), (cell, "installed twice")
                assert tam_record(world.tam_dir) == target, (cell, tam_record(world.tam_dir))
                hexed = [p.hex() for p in COMPONENT_ID]
                change = {
                    "component_id": hexed,
                    "from": before.get(COMPONENT_ID),
                    "to": target.get(COMPONENT_ID),
                }
                did = (report["installed"], report["updated"], report["removed"])
                if "recovered" in report:  # the killed run had changed the device; this one changes nothing
                    assert report["recovered"]["changes_since"] == [change], (cell, report)
                    assert did == ([], [], []), (cell, report)
                else:  # the killed run never reached the device: this run does the work
                    assert {c: s for c, (s, _) in had.items()} == before, (cell, had)
                    expect = {
                        "install": ([{"component_id": hexed, "sequence_number": change["to"]}], [], []),
                        "update": ([], [change], []),
                        "delete": ([], [], [{"component_id": hexed}]),
                    }[flow]
                    assert did == expect, (cell, report)
                measured.setdefault((who, point), {})[flow] = (first, f"exit {rc}, {recovered_text(report)}")
    finally:
        tam.stop()
    return measured


def test_sigkill_at_a_message_boundary_converges_in_one_run(tmp_path: Path) -> None:
    with ThreadPoolExecutor(len(BINDINGS)) as pool:
        futures = {b: pool.submit(chain, b, tmp_path / b) for b in BINDINGS}
        results = {b: f.result() for b, f in futures.items()}
    doc = doc_table("recovery-processes")
    assert sorted(doc) == sorted((who, f"`{point}`") for who, point in POINTS)
    for binding, measured in results.items():
        for (who, point), flows in measured.items():
            row = doc[who, f"`{point}`"]
            for flow in FLOWS:
                first, then = flows[flow]
                assert (row["first `agent run`"], row["next `agent run`"]) == (first, then), (
                    binding,
                    flow,
                    row,
                )
                assert row[BINDINGS[binding]].split()[FLOWS.index(flow)] == "✓", (binding, flow, row)
