"""`bench sessions --pin`: the TAM's processes and the simulated devices on CPUs apart."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from teep_coap.bench.pinning import PinningError, affinity_of, pin_processes, split_cpus
from teep_coap.bench.sessions import format_result, make_world, run_bench, tam_process

pytestmark = pytest.mark.timeout(120)

CPUS = sorted(os.sched_getaffinity(0))


def test_split_gives_the_tam_its_own_cpus_and_the_devices_the_rest() -> None:
    if len(CPUS) < 2:
        with pytest.raises(PinningError, match="more CPUs than TAM workers"):
            split_cpus(1)
        return
    tam, devices = split_cpus(1)
    assert tam == {CPUS[0]} and devices == set(CPUS[1:])
    with pytest.raises(PinningError, match=f"may use {len(CPUS)}"):
        split_cpus(len(CPUS))  # no CPU left for the devices


def test_every_thread_of_a_tam_process_is_pinned(tmp_path: Path) -> None:
    if len(CPUS) < 2:
        pytest.fail("this test needs a machine with 2 CPUs (the project's CI machines have 2)")
    world = make_world(tmp_path / "tam", tmp_path / "agents", 1, 100)
    target = frozenset({CPUS[-1]})
    with tam_process("coap", world.tam_dir) as (_uri, pid):
        assert affinity_of(pid) == set(CPUS)
        pin_processes([pid], target)
        tids = [int(t) for t in os.listdir(f"/proc/{pid}/task")]
        assert tids and all(os.sched_getaffinity(t) == target for t in tids)


def test_pinned_run_drives_the_devices_from_their_cpus_and_restores_this_thread() -> None:
    if len(CPUS) < 2:
        pytest.fail("this test needs a machine with 2 CPUs (the project's CI machines have 2)")
    seen: list[set[int]] = []
    r = run_bench(
        "coap", devices=4, concurrency=2, image_size=200, pin=True,
        progress=lambda *_a: seen.append(os.sched_getaffinity(0)),
    )  # fmt: skip
    assert r.ok == 4 and r.failed == 0
    assert r.tam_cpus == {CPUS[0]} and r.device_cpus == set(CPUS[1:])
    assert seen and all(s == set(CPUS[1:]) for s in seen)  # the devices ran on theirs
    assert os.sched_getaffinity(0) == set(CPUS)  # and this thread got its CPUs back
    assert f"pinned: TAM on CPU {CPUS[0]}" in format_result(r)
    assert r.to_json()["tam_cpus"] == [CPUS[0]]
