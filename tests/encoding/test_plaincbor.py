"""The C check `_plaincbor.plain` that lets `decode` skip the re-encoding comparison.

Its promise (see `_plaincbor.c`): whenever it says True, cbor2 decodes the input and re-encodes the
result to the very same bytes. These tests hold it to that on hand-made edge cases, on every kind of
value it accepts, and on random and mutated bytes; and they check that it says True for what it is
meant to accept (or the decoder would silently lose its speed).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path
from typing import Any

import cbor2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from teep_coap.encoding import cbor_codec
from teep_coap.encoding._plaincbor import plain
from tests.conftest import read_hex_vector
from tests.encoding.test_fastpath import _mutants

SETTINGS = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
VECTORS = ("query_request", "query_response", "update", "teep_success", "teep_error")


def _round_trips(data: bytes) -> bool:
    """What `plain` promises: cbor2 gives back these exact bytes, with nothing left over."""
    try:
        return cbor2.dumps(cbor2.loads(data)) == data
    except Exception:
        return False


def _keeps_promise(data: bytes) -> bool:
    """`plain` leaves UTF-8 to cbor2: a plain input either round-trips or cbor2 refuses its text."""
    try:
        value = cbor2.loads(data)
    except cbor2.CBORDecodeError as exc:
        return isinstance(exc.__cause__, UnicodeDecodeError)
    return cbor2.dumps(value) == data


def test_decoder_uses_the_compiled_check() -> None:
    assert cbor_codec._plain is plain, "teep_coap.encoding._plaincbor is not compiled: run `pip install -e .`"


@pytest.mark.parametrize("name", VECTORS)
def test_working_group_examples_are_plain(name: str) -> None:
    assert plain(read_hex_vector(name))


@pytest.mark.parametrize(
    "hex_item",
    [
        "00",
        "17",
        "1818",
        "18ff",
        "190100",
        "19ffff",
        "1a00010000",
        "1b0000000100000000",
        "1bffffffffffffffff",
        "20",
        "37",
        "3818",
        "390100",
        "3b0000000100000000",
        "3bffffffffffffffff",
        "40",
        "4161",
        "5818" + "61" * 24,
        "60",
        "6161",
        "7818" + "61" * 24,
        "80",
        "8101",
        "9818" + "00" * 24,
        "a0",
        "a10102",
        "a2010203" + "04",
        "a2416101416202",
        "a1616101",
        "a201016101" + "02",
        "f4",
        "f5",
        "f6",
        "f7",
        "82a0a0",
        "a1018201a10203",
    ],
)
def test_accepts_deterministic_items(hex_item: str) -> None:
    data = bytes.fromhex(hex_item)
    assert plain(data), hex_item
    assert _round_trips(data), hex_item


@pytest.mark.parametrize(
    ("hex_item", "why"),
    [
        ("", "empty"),
        ("1817", "1-byte argument below 24"),
        ("1900ff", "2-byte argument below 256"),
        ("1a0000ffff", "4-byte argument below 65536"),
        ("1b00000000ffffffff", "8-byte argument below 2**32"),
        ("3817", "negative with a longer head"),
        ("5801" + "61", "string length with a longer head"),
        ("9801" + "00", "array length with a longer head"),
        ("b801" + "0000", "map length with a longer head"),
        ("5f4161ff", "indefinite byte string"),
        ("7f6161ff", "indefinite text string"),
        ("9f01ff", "indefinite array"),
        ("bf0102ff", "indefinite map"),
        ("a201020103", "duplicate key"),
        ("a2416101416102", "duplicate byte-string key"),
        ("a1810102", "array as a key"),
        ("a1f501", "true as a key (cbor2 would merge it with 1)"),
        ("c11a514b67b0", "tag"),
        ("d81c80", "value-sharing tag"),
        ("c24101", "bignum tag"),
        ("f93c00", "half float"),
        ("fa3fc00000", "single float"),
        ("fb3ff8000000000000", "double float"),
        ("e0", "simple value 0"),
        ("f820", "two-byte simple value"),
        ("f818", "two-byte simple value below 32"),
        ("ff", "lone break"),
        ("1c", "reserved additional information"),
        ("0000", "trailing byte"),
        ("8201", "array item missing"),
        ("a101", "map value missing"),
        ("43616263" + "", "ok, checked below"),
        ("44616263", "string runs past the end"),
        ("5b" + "ff" * 8, "huge string length"),
        ("9b" + "ff" * 8, "huge array length"),
        ("bb" + "ff" * 8, "huge map length"),
        ("b821" + "0000" * 33, "map of 33 pairs (longer than the C check handles)"),
    ],
)
def test_refuses_everything_else(hex_item: str, why: str) -> None:
    data = bytes.fromhex(hex_item)
    if why.startswith("ok"):
        assert plain(data)
        return
    assert not plain(data), why


def test_nesting_limit() -> None:
    assert plain(b"\x81" * 64 + b"\x00")
    assert not plain(b"\x81" * 65 + b"\x00")
    assert not plain(b"\x81" * 100_000 + b"\x00")  # no recursion past the limit


def test_map_of_32_pairs_is_plain() -> None:
    data = cbor2.dumps({i: i for i in range(32)})
    assert plain(data) and _round_trips(data)


def test_refuses_non_bytes() -> None:
    with pytest.raises(TypeError, match="bytes"):
        plain(bytearray(b"\x00"))  # type: ignore[arg-type]


# Values of every kind the check accepts, encoded by cbor2 (which writes them deterministically).
_KEYS = st.one_of(st.integers(-(1 << 64), (1 << 64) - 1), st.binary(max_size=4), st.text(max_size=4))
_LEAVES = st.one_of(
    st.integers(-(1 << 64), (1 << 64) - 1),
    st.binary(max_size=300),
    st.text(max_size=30),
    st.sampled_from([True, False, None, cbor2.undefined]),
)
_PLAIN_VALUES = st.recursive(
    _LEAVES,
    lambda inner: st.one_of(st.lists(inner, max_size=30), st.dictionaries(_KEYS, inner, max_size=32)),
    max_leaves=60,
)


@SETTINGS
@given(_PLAIN_VALUES)
def test_accepts_every_plain_value(value: Any) -> None:
    data = cbor2.dumps(value)
    assert plain(data), data.hex()


@SETTINGS
@given(
    _PLAIN_VALUES,
    st.lists(st.tuples(st.integers(0, 1000), st.integers(0, 255), st.integers(0, 3)), max_size=4),
)
def test_true_only_for_what_round_trips_after_mutation(value: Any, edits: list[tuple[int, int, int]]) -> None:
    data = _mutants(cbor2.dumps(value), edits)
    if plain(data):
        assert _keeps_promise(data), data.hex()


@SETTINGS
@given(st.binary(max_size=64))
def test_true_only_for_what_round_trips_on_random_bytes(data: bytes) -> None:
    if plain(data):
        assert _keeps_promise(data), data.hex()


def test_c_check_is_memory_safe_under_sanitizers(tmp_path: Path) -> None:
    """`make fuzz-c` in small: the C source built with ASan/UBSan, 100,000 mutated and random inputs."""
    gcc = shutil.which("gcc")
    if gcc is None:
        pytest.skip("gcc is not installed (scripts/setup.sh installs it)")
    libasan = subprocess.run(
        [gcc, "-print-file-name=libasan.so"], capture_output=True, text=True
    ).stdout.strip()
    if not Path(libasan).is_file():
        pytest.skip("libasan is not installed (it comes with Debian's gcc)")
    root = Path(__file__).resolve().parents[2]
    built = tmp_path / "_plaincbor.so"
    include = sysconfig.get_paths()["include"]
    flags = ["-shared", "-fPIC", "-O1", "-g", "-fsanitize=address,undefined", "-fno-omit-frame-pointer"]
    cc = subprocess.run(
        [gcc, *flags, f"-I{include}", str(root / "teep_coap/encoding/_plaincbor.c"), "-o", str(built)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert cc.returncode == 0, cc.stderr
    env = dict(
        os.environ,
        PYTHONMALLOC="malloc",  # so that ASan sees where each bytes object ends
        LD_PRELOAD=libasan,
        ASAN_OPTIONS="detect_leaks=0",
        UBSAN_OPTIONS="halt_on_error=1",
    )
    run = subprocess.run(
        [sys.executable, str(root / "scripts/fuzz_plaincbor.py"), str(built), "100000"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert "no sanitizer report" in run.stdout and "ERROR" not in run.stderr
