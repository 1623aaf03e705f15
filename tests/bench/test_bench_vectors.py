"""The codec benchmark's shipped copies of the working group's messages match tests/vectors/."""

from __future__ import annotations

from teep_coap.bench.codec import VECTOR_NAMES, load_cases
from tests.conftest import VECTORS_DIR, read_hex_vector


def test_shipped_bench_vectors_equal_the_test_vectors() -> None:
    shipped = dict(load_cases())
    for name in VECTOR_NAMES:
        assert shipped[name] == read_hex_vector(name), name
    assert dict(load_cases(VECTORS_DIR)).keys() == shipped.keys()
