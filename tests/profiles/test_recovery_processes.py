"""Real processes, real bindings, real deaths: `tam serve` and `agent run` stopped by the
TEEP_COAP_CRASH_AT test hook (os._exit(137), what kill -9 leaves) exactly at a commit, then the next
`agent run` must exit 0, hold the new component once, and the TAM's record must match the device.

One TAM process per binding, restarted only where it is the one that dies; each fault is an update to
the next sequence number on the same device, so the cells run one after another on one world. The
in-process matrix (every message × drop / Agent death / TAM death, install, update, delete) is
tests/profiles/test_recovery_matrix.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from teep_coap.crashpoints import ENV, EXIT_STATUS
from teep_coap.profiles import load_profile
from teep_coap.profiles.scenario import COMPONENT_ID, teep_world
from teep_coap.protocol.tamdir import load_tam_dir
from teep_coap.security.suit.build import build_envelope

pytestmark = [pytest.mark.recovery, pytest.mark.timeout(240)]

CLI = [sys.executable, "-c", "from teep_coap.cli import main; main()"]
# (who dies, where, what the next run reports as recovered: the Update had been applied / no Update
# had reached the Agent): the Agent after its install committed (the Success never leaves), the TAM
# before it takes the Success, the TAM after it committed the Update (which is never sent). The Agent
# dying inside its install (rolled back) is a cell of the socket matrix in test_recovery_matrix.py.
CELLS = (
    ("agent", "store.index-replaced", True),
    ("tam", "tam.received.success", True),
    ("tam", "tam.committed.query-response", None),
)
BINDINGS = ("coap", "coaps-psk", "teep-cbor-http")


class TamProcess:
    """`teep-coap tam serve` on a fixed port (the first start picks it), optionally armed to die."""

    def __init__(self, profile: str, tam_dir: Path) -> None:
        self.profile, self.tam_dir = profile, tam_dir
        self.port = 0
        self.uri = ""
        self.proc: subprocess.Popen[str] | None = None

    def start(self, crash_at: str | None = None) -> None:
        env = {k: v for k, v in os.environ.items() if k != ENV}
        if crash_at:
            env[ENV] = crash_at
        cmd = [*CLI, "tam", "serve", "--profile", self.profile, "--dir", str(self.tam_dir), "-q"]
        self.proc = subprocess.Popen(
            [*cmd, "--bind", f"127.0.0.1:{self.port}"], stdout=subprocess.PIPE, text=True, env=env
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()  # "TAM serving URI (profile …)"
        assert line.startswith("TAM serving "), line
        self.uri = line.split()[2]
        self.port = int(self.uri.split("://", 1)[1].split("/", 1)[0].rsplit(":", 1)[1])

    def died(self) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=30)


def agent_run(profile: str, uri: str, agent_dir: Path, crash_at: str | None = None) -> tuple[int, Any]:
    env = {k: v for k, v in os.environ.items() if k != ENV}
    if crash_at:
        env[ENV] = crash_at
    cmd = [*CLI, "agent", "run", "--profile", profile, "--tam", uri, "--state", str(agent_dir)]
    proc = subprocess.run([*cmd, "--timeout", "2"], capture_output=True, text=True, env=env, timeout=120)
    return proc.returncode, json.loads(proc.stdout) if proc.returncode == 0 else proc.stderr


def publish(world: Any, seq: int) -> None:
    """The operator adds version `seq` of the component (its own connection to the TAM database)."""
    config, store = load_tam_dir(world.tam_dir)
    key = next(k for k in config.keys if k.key_type == "P-256")
    cfg = world.agent.state.config
    envelope = build_envelope(
        f"version {seq}".encode() * 40,
        key=key,
        component_id=COMPONENT_ID,
        sequence_number=seq,
        vendor_id=cfg.vendor_id,
        class_id=cfg.class_id,
    )
    store.add_component(
        component_id=COMPONENT_ID, sequence_number=seq, envelope=envelope, now=0.0, audience="all"
    )
    store.close()


def states(world: Any) -> tuple[list[tuple[tuple[bytes, ...], int]], dict[tuple[bytes, ...], int | None]]:
    """(what the device holds, what the TAM records), read from their folders."""
    device = [(tuple(e.component_id), e.sequence_number) for e in world.agent.state.components.list()]
    _, store = load_tam_dir(world.tam_dir)
    try:
        (dev,) = store.devices()
        record = {tuple(c.component_id): c.installed_seq for c in store.device_components(dev.id)}
    finally:
        store.close()
    return device, record


@pytest.mark.parametrize("binding", BINDINGS)
def test_killed_at_a_commit_converges_in_one_run(binding: str, tmp_path: Path) -> None:
    world = teep_world(load_profile(binding), tmp_path, 400)  # sequence 1 is in the catalog
    world.tam.store.close()
    tam = TamProcess(binding, world.tam_dir)
    tam.start()
    try:
        rc, out = agent_run(binding, tam.uri, world.agent_dir)
        assert rc == 0 and out["installed"][0]["sequence_number"] == 1, out
        for seq, (who, point, applied_before) in enumerate(CELLS, start=2):
            publish(world, seq)
            if who == "tam":
                tam.stop()
                tam.start(crash_at=point)
                rc, out = agent_run(binding, tam.uri, world.agent_dir)
                assert rc == 2 and "failed" in out, (point, out)
                assert tam.died() == EXIT_STATUS, point
                tam.start()
            else:
                rc, out = agent_run(binding, tam.uri, world.agent_dir, crash_at=point)
                assert rc == EXIT_STATUS, (point, out)
            rc, out = agent_run(binding, tam.uri, world.agent_dir)  # the one further run
            assert rc == 0, (binding, point, out)
            device, record = states(world)
            assert device == [(COMPONENT_ID, seq)], (binding, point, device)
            assert record == {COMPONENT_ID: seq}, (binding, point, record)
            if applied_before is None:
                assert "recovered" not in out, (binding, point, out)
            else:
                note = out["recovered"]["note"]
                assert ("applied an Update" in note) == applied_before, (binding, point, out)
                change = {"component_id": [p.hex() for p in COMPONENT_ID], "from": seq - 1, "to": seq}
                assert out["recovered"]["changes_since"] == [change], (binding, point, out)
    finally:
        tam.stop()
