"""Codec benchmark: encode/decode rates of our TEEP codec next to raw cbor2 on the same structures.

The raw cbor2 figures are `cbor2.dumps(structure)` and `cbor2.loads(bytes)` of exactly the bytes our
codec produces, in the same process and run, so the ratio (our time / cbor2 time) shows what the model,
the CDDL checks and the determinism check cost on top of plain CBOR.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import cbor2
from rich.console import Console
from rich.table import Table

from teep_coap.encoding.cbor_codec import PLAIN_CHECK_COMPILED, decode, encode
from teep_coap.encoding.hextext import parse_hex_text
from teep_coap.model.teep import TeepMessage, Update

VECTOR_NAMES = ("query_request", "query_response", "update", "teep_success", "teep_error")


@dataclass(frozen=True)
class CodecResult:
    """Rates in operations per second; ratios = our time per op / cbor2's time per op."""

    name: str
    size: int
    encode_ops: float
    cbor2_dumps_ops: float
    decode_ops: float
    cbor2_loads_ops: float
    plain_check_compiled: bool = PLAIN_CHECK_COMPILED

    @property
    def encode_ratio(self) -> float:
        return self.cbor2_dumps_ops / self.encode_ops

    @property
    def decode_ratio(self) -> float:
        return self.cbor2_loads_ops / self.decode_ops

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["encode_ratio"] = round(self.encode_ratio, 3)
        out["decode_ratio"] = round(self.decode_ratio, 3)
        return out


def _spec_vectors_dir() -> Path:
    """The five working-group messages, shipped as package data so `bench codec` runs from a wheel.

    They are byte-identical copies of tests/vectors/ (tests/bench checks it); see tests/vectors/README.md.
    """
    return Path(str(resources.files("teep_coap.bench").joinpath("vectors")))


def load_cases(vectors_dir: Path | None = None) -> list[tuple[str, bytes]]:
    """The five working-group vectors plus a larger Update (8 manifests of 2 KiB)."""
    folder = vectors_dir or _spec_vectors_dir()
    cases = []
    for name in VECTOR_NAMES:
        path = folder / f"{name}.hex.txt"
        cases.append((name, parse_hex_text(path.read_bytes())))
    big = Update(
        token=bytes(range(16)),
        manifest_list=tuple(bytes([i]) * 2048 for i in range(8)),
        unneeded_manifest_list=((b"TEEP-Device", b"SecureFS", bytes(16), b"ta"),),
    )
    cases.append(("update_large", encode(big)))
    return cases


def _batch_size(fn: Callable[[], Any]) -> int:
    """A batch that takes about 5 ms, so timer overhead is negligible."""
    batch = 1
    while batch < 1 << 20:
        start = time.perf_counter()
        for _ in range(batch):
            fn()
        if time.perf_counter() - start > 0.005:
            break
        batch *= 4
    return batch


def paired_rates(ours: Callable[[], Any], ref: Callable[[], Any], seconds: float) -> tuple[float, float]:
    """Operations per second of `ours` and `ref`, measured in alternating batches for `seconds` in
    total, so that load from other processes hits both alike and their ratio stays meaningful."""
    batch_ours, batch_ref = _batch_size(ours), _batch_size(ref)
    spent_ours = spent_ref = 0.0
    done_ours = done_ref = 0
    perf = time.perf_counter
    deadline = perf() + seconds
    while True:
        start = perf()
        for _ in range(batch_ours):
            ours()
        middle = perf()
        for _ in range(batch_ref):
            ref()
        end = perf()
        spent_ours += middle - start
        spent_ref += end - middle
        done_ours += batch_ours
        done_ref += batch_ref
        if end >= deadline:
            return done_ours / spent_ours, done_ref / spent_ref


def run_codec_bench(*, seconds: float = 0.5, vectors_dir: Path | None = None) -> list[CodecResult]:
    """Measure every case: `seconds` for encode vs cbor2.dumps, and as much for decode vs cbor2.loads."""
    results = []
    for name, data in load_cases(vectors_dir):
        msg: TeepMessage = decode(data)
        raw = cbor2.loads(data)
        assert encode(msg) == data and cbor2.dumps(raw) == data
        encode_ops, dumps_ops = paired_rates(lambda m=msg: encode(m), lambda r=raw: cbor2.dumps(r), seconds)  # type: ignore[misc]
        decode_ops, loads_ops = paired_rates(lambda d=data: decode(d), lambda d=data: cbor2.loads(d), seconds)  # type: ignore[misc]
        results.append(CodecResult(name, len(data), encode_ops, dumps_ops, decode_ops, loads_ops))
    return results


def print_table(results: list[CodecResult]) -> None:

    table = Table(title="TEEP codec vs raw cbor2 (ops/s; ratio = our cost / cbor2 cost, target <= 2)")
    for col in (
        "message",
        "bytes",
        "encode",
        "cbor2.dumps",
        "enc ratio",
        "decode",
        "cbor2.loads",
        "dec ratio",
    ):
        table.add_column(col, justify="left" if col == "message" else "right")
    for r in results:
        table.add_row(
            r.name,
            str(r.size),
            f"{r.encode_ops:,.0f}",
            f"{r.cbor2_dumps_ops:,.0f}",
            f"{r.encode_ratio:.2f}",
            f"{r.decode_ops:,.0f}",
            f"{r.cbor2_loads_ops:,.0f}",
            f"{r.decode_ratio:.2f}",
        )
    console = Console(width=max(110, Console().width))
    console.print(table)
    if results and not results[0].plain_check_compiled:
        console.print(
            "[yellow]The C check teep_coap.encoding._plaincbor is not compiled, so every decode took the "
            "slower checked way. Install the package (`pip install -e .`, needs gcc and python3-dev) "
            "to measure the usual path.[/yellow]"
        )
