"""`bench sessions --pin`: the TAM's processes on CPUs of their own, the simulated devices on the rest.

The simulated devices run on the machine they measure. Unpinned, the scheduler preempts the TAM
whenever a device wakes up, and every preemption costs the TAM cache refills it is then charged
for: on the 2-core development VM, `coap` engine calls were preempted 0.35–2 times each against
0.01–0.06 for `teep-cbor-http` (whose devices need half the CPU), which put ~0.1 ms per session on
the CoAP TAM that a TAM with its clients elsewhere does not pay (docs/scale.md, session 10).
Pinning the two sides apart measures the TAM as it runs in production.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Iterator

from teep_coap.errors import TeepCoapError


class PinningError(TeepCoapError):
    """The CPUs cannot be split between the TAM and the devices here."""


def split_cpus(tam_workers: int) -> tuple[frozenset[int], frozenset[int]]:
    """(CPUs for the TAM, CPUs for the devices): the first `tam_workers` CPUs this process may use
    for the TAM, the others for the devices. The devices need at least one."""
    if not hasattr(os, "sched_getaffinity"):
        raise PinningError("--pin needs CPU affinity (Linux); run without --pin")
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) <= tam_workers:
        raise PinningError(
            f"--pin needs more CPUs than TAM workers: this process may use {len(cpus)} "
            f"({', '.join(map(str, cpus))}) for {tam_workers} worker(s) and the devices; "
            "use fewer --tam-workers or run without --pin"
        )
    return frozenset(cpus[:tam_workers]), frozenset(cpus[tam_workers:])


def pin_processes(pids: Iterable[int], cpus: frozenset[int]) -> None:
    """Every thread of these processes on `cpus` (sched_setaffinity binds one thread; threads
    started later inherit their creator's set)."""
    for pid in pids:
        try:
            tids = [int(t) for t in os.listdir(f"/proc/{pid}/task")]
        except OSError:
            tids = [pid]
        for tid in tids:
            with contextlib.suppress(ProcessLookupError):  # a thread that just ended
                os.sched_setaffinity(tid, cpus)


def affinity_of(pid: int) -> frozenset[int]:
    """The CPUs the process's main thread may run on (for reports and tests)."""
    return frozenset(os.sched_getaffinity(pid))


@contextlib.contextmanager
def this_thread_on(cpus: frozenset[int]) -> Iterator[None]:
    """The calling thread (and the threads it starts meanwhile) on `cpus`; its set restored after."""
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, cpus)
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


def cpu_list(cpus: Iterable[int]) -> str:
    """`0`, `0,1`: how a report names a set of CPUs."""
    return ",".join(str(c) for c in sorted(cpus))


__all__ = ["PinningError", "affinity_of", "cpu_list", "pin_processes", "split_cpus", "this_thread_on"]
