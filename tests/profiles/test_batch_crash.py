"""A real `tam serve` dies (TEEP_COAP_CRASH_AT: `os._exit` at the point) just after committing a batch
of requests from several devices at once (group commit), before any answer of it leaves. The restarted
TAM and the devices' next runs must converge: every device holds the component once, and the TAM's
record says so. test_recovery_processes.py kills the TAM under one device at a time; here the
requests of six devices arrive together, so the dying batch holds several (tests/protocol/
test_group_commit.py checks in process that both of a batch's requests are committed before the point).
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest

from teep_coap.bench.sessions import COMPONENT_ID, make_world
from teep_coap.crashpoints import ENV, EXIT_STATUS, PAUSE_ENV
from teep_coap.profiles import load_profile
from teep_coap.profiles.session import RunReport, run_until_done
from teep_coap.profiles.stack import make_client
from teep_coap.protocol.agent import AgentEngine
from teep_coap.store.agentdir import load_agent_state
from teep_coap.store.tamdir import load_tam_dir

pytestmark = [pytest.mark.recovery, pytest.mark.timeout(180)]

DEVICES = 6
CLI = [sys.executable, "-c", "from teep_coap.cli import main; main()"]
PROFILE = "coap"


def start_tam(tam_dir: Path, port: int, crash_at: str | None) -> tuple[subprocess.Popen[str], str]:
    env = {k: v for k, v in os.environ.items() if k not in (ENV, PAUSE_ENV)}
    if crash_at is not None:
        env[ENV] = crash_at
    cmd = [*CLI, "tam", "serve", "--profile", PROFILE, "--dir", str(tam_dir), "-q"]
    proc = subprocess.Popen([*cmd, "--bind", f"127.0.0.1:{port}"], stdout=subprocess.PIPE, text=True, env=env)
    assert proc.stdout is not None
    line = proc.stdout.readline()  # "TAM serving URI (profile …)"
    assert line.startswith("TAM serving "), line
    return proc, line.split()[2]


async def run_all(agent_dirs: list[Path], uri: str) -> list[RunReport | BaseException]:
    profile = load_profile(PROFILE)
    profile = dataclasses.replace(profile, limits=dataclasses.replace(profile.limits, request_timeout=3.0))

    async def one(agent_dir: Path) -> RunReport:
        client = make_client(profile, uri, state_dir=agent_dir)
        try:
            return await run_until_done(AgentEngine(load_agent_state(agent_dir)), client, uri, timeout=3.0)
        finally:
            await client.close()

    return await asyncio.gather(*(one(d) for d in agent_dirs), return_exceptions=True)


def installed(agent_dir: Path) -> dict[tuple[bytes, ...], tuple[int, float]]:
    return {
        tuple(e.component_id): (e.sequence_number, e.installed_at)
        for e in load_agent_state(agent_dir).components.list()
    }


@pytest.mark.parametrize(
    "point", ["tam.committed.connect", "tam.committed.query-response", "tam.committed.success"]
)
async def test_a_tam_killed_after_a_batch_commit_loses_no_device(point: str, tmp_path: Path) -> None:
    world = make_world(tmp_path / "tam", tmp_path / "agents", DEVICES, 64)
    tam, uri = start_tam(world.tam_dir, 0, crash_at=point)
    try:
        first = await run_all(world.agent_dirs, uri)
        assert await asyncio.to_thread(tam.wait, 30) == EXIT_STATUS  # it died at the point
    finally:
        if tam.poll() is None:
            tam.kill()
            tam.wait(10)
    assert not all(isinstance(r, RunReport) and r.ok for r in first)  # someone met the dead TAM
    had = [installed(d) for d in world.agent_dirs]

    port = int(uri.split("://", 1)[1].split("/", 1)[0].rsplit(":", 1)[1])
    tam, uri = start_tam(world.tam_dir, port, crash_at=None)
    try:
        second = await run_all(world.agent_dirs, uri)
    finally:
        tam.terminate()
        tam.wait(30)
    assert all(isinstance(r, RunReport) and r.ok for r in second), second
    for before, agent_dir in zip(had, world.agent_dirs, strict=True):
        now = installed(agent_dir)
        assert {c: s for c, (s, _) in now.items()} == {COMPONENT_ID: 1}
        if COMPONENT_ID in before:  # installed in the first run: not installed again
            assert now[COMPONENT_ID] == before[COMPONENT_ID]
    _, store = load_tam_dir(world.tam_dir)
    try:
        records = {
            dev.id: {tuple(c.component_id): c.installed_seq for c in store.device_components(dev.id)}
            for dev in store.devices()
        }
    finally:
        store.close()
    assert len(records) == DEVICES
    assert all(r == {COMPONENT_ID: 1} for r in records.values()), records
