"""`tam serve` settles the heap once it is up: start-up objects frozen, young collections rarer."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from teep_coap.cli.serving import GC_YOUNG_THRESHOLD, settle_heap


@pytest.fixture
def restored_gc() -> Iterator[None]:
    threshold = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)


def test_settle_heap_freezes_what_exists_and_raises_the_young_threshold(restored_gc: None) -> None:
    gc.unfreeze()
    assert gc.get_freeze_count() == 0
    older = gc.get_threshold()[1:]
    settle_heap()
    assert gc.get_freeze_count() > 1000  # the modules, classes and functions loaded so far
    assert gc.get_threshold() == (GC_YOUNG_THRESHOLD, *older)
    assert GC_YOUNG_THRESHOLD > 700  # Python's default: the point is to collect less often


def test_objects_made_after_settling_are_still_collected(restored_gc: None) -> None:
    settle_heap()

    class Node:
        def __init__(self) -> None:
            self.me = self

    frozen = gc.get_freeze_count()
    for _ in range(100):
        Node()  # a cycle each: only the collector frees it
    assert gc.collect() >= 100
    assert gc.get_freeze_count() == frozen
