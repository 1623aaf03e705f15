"""The simulated fleet driven by several processes (`bench/fleet_procs.py`, `bench sessions
--device-processes N`): each session run exactly once, by one process, against a real `tam serve`."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from teep_coap.bench import fleet_procs
from teep_coap.bench.fleet import DriveResult, drive_fleet, make_fleet_world
from teep_coap.bench.fleet_procs import DeviceProcessError, drive_in_processes, merge, shares
from teep_coap.bench.sessions import BenchError, run_bench, tam_process
from teep_coap.store.tam_db import TamStore
from teep_coap.store.tamdir import load_tam_dir

pytestmark = pytest.mark.timeout(180)


def test_shares_differ_by_one_at_most_and_add_up() -> None:
    assert shares(32, 3) == [11, 11, 10]
    assert shares(4, 4) == [1, 1, 1, 1]
    assert shares(7, 2) == [4, 3]
    assert all(sum(shares(t, p)) == t for t in range(1, 40) for p in range(1, t + 1))


def test_merged_figures_are_those_of_processes_that_ran_at_once() -> None:
    a = DriveResult([0.1, 0.2], ["dev-1: x"], 2.0, 1, 0.5, 3)
    b = DriveResult([0.3], [], 3.0, 0, 0.25, 2)
    m = merge([a, b])
    assert sorted(m.latencies) == [0.1, 0.2, 0.3] and m.failures == ["dev-1: x"]
    assert (m.seconds, m.handshake_restarts, m.agent_build_seconds, m.peak_agents) == (3.0, 1, 0.75, 5)


def test_a_slice_of_the_sessions_is_every_stride_th_from_its_offset(tmp_path: Path) -> None:
    world = make_fleet_world(tmp_path / "tam", tmp_path / "creds", 6, 200, "coap")
    with tam_process("coap", world.tam_dir, devices=6) as (uri, _pid):
        first = asyncio.run(drive_fleet("coap", uri, world, 7, 2, offset=0, stride=3))
        second = asyncio.run(drive_fleet("coap", uri, world, 7, 2, offset=2, stride=3))
    assert len(first.latencies) == 3 and len(second.latencies) == 2  # sessions 0, 3, 6 and 2, 5
    _config, store = load_tam_dir(world.tam_dir)
    try:
        assert isinstance(store, TamStore)
        seen = [world.fleet.name(i) for i in range(6) if _sessions_of(store, world, i)]
        assert seen == ["dev-00000", "dev-00002", "dev-00003", "dev-00005"]  # device i % 6 of each
    finally:
        store.close()
    with pytest.raises(ValueError, match="offset 3, stride 3"):
        asyncio.run(drive_fleet("coap", uri, world, 7, 2, offset=3, stride=3))


def test_a_run_after_a_warm_up_starts_where_the_warm_up_ended(tmp_path: Path) -> None:
    """`start`: the sessions below it are skipped, so a run after a warm-up meets only new devices."""
    world = make_fleet_world(tmp_path / "tam", tmp_path / "creds", 6, 200, "coap")
    with tam_process("coap", world.tam_dir, devices=6) as (uri, _pid):
        later = asyncio.run(drive_fleet("coap", uri, world, 6, 2, start=4))
    assert len(later.latencies) == 2 and not later.failures
    _config, store = load_tam_dir(world.tam_dir)
    try:
        assert isinstance(store, TamStore)
        assert [i for i in range(6) if _sessions_of(store, world, i)] == [4, 5]
    finally:
        store.close()
    with pytest.raises(ValueError, match="start -1"):
        asyncio.run(drive_fleet("coap", uri, world, 6, 2, start=-1))


def _sessions_of(store: TamStore, world: Any, i: int) -> bool:
    device = store.device_by_kid(world.fleet.registration(i).kid)
    assert device is not None
    return any(c.installed_seq for c in store.device_components(device.id))  # its session installed it


@pytest.mark.parametrize("profile", ["coap", "coaps-psk"])
def test_two_device_processes_run_every_session_once(profile: str) -> None:
    told: list[tuple[int, int, int]] = []
    r = run_bench(
        profile, devices=5, concurrency=3, sessions=9, image_size=200, device_processes=2,
        progress=lambda ok, failed, total: told.append((ok, failed, total)),
    )  # fmt: skip
    assert (r.ok, r.failed) == (9, 0), r.failures
    j = r.to_json()
    assert j["device_processes"] == 2 and j["client_cpu_seconds"] > 0
    assert j["client_peak_rss_mib"] > 10 and 1 <= j["peak_agents_alive"] <= 3
    assert told and told[-1] == (9, 0, 9)  # the processes' counts, added up


def test_a_failing_device_process_is_named(tmp_path: Path) -> None:
    world = make_fleet_world(tmp_path / "tam", tmp_path / "creds", 2, 100, "coap")
    with pytest.raises(DeviceProcessError, match=r"device process [01]: .*no-such-profile"):
        drive_in_processes("no-such-profile", "coap://127.0.0.1:9/teep", world, 4, 2, 2)


def test_a_device_process_that_dies_is_found_out(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    world = make_fleet_world(tmp_path / "tam", tmp_path / "creds", 2, 100, "coap")

    async def dies(**_kwargs: Any) -> DriveResult:
        os._exit(3)  # as a process killed mid-run: no figures, no error message

    monkeypatch.setattr(fleet_procs, "drive_fleet", dies)  # the forked processes inherit it
    with pytest.raises(DeviceProcessError, match=r"ended without its figures \(exit code 3\)"):
        drive_in_processes("coap", "coap://127.0.0.1:9/teep", world, 4, 2, 2)


def test_more_processes_than_sessions_in_flight_are_refused() -> None:
    with pytest.raises(BenchError, match="3 device processes for a concurrency of 2"):
        run_bench("coap", devices=2, concurrency=2, device_processes=3)
    cmd = [sys.executable, "-c", "from teep_coap.cli import main; main()", "bench", "sessions"]
    done = subprocess.run(
        [*cmd, "--devices", "2", "--concurrency", "2", "--device-processes", "3"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert "device processes" in done.stderr and "Traceback" not in done.stderr
