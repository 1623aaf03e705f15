"""Fuzz the C determinism check under AddressSanitizer/UBSan (run by `make fuzz-c`).

Builds `_plaincbor.c` with the sanitizers into a temporary folder, then feeds it mutated working-group
examples, edge cases and random bytes. Each input it calls plain must come back unchanged from
cbor2 (or be refused by cbor2 for its UTF-8 only); any memory error aborts the run. The Makefile
runs it with PYTHONMALLOC=malloc: inside pymalloc's arenas ASan would not see where a bytes object
ends (checked: an 8-byte over-read planted in the C code is caught only that way).
"""

from __future__ import annotations

import importlib.util
import os
import random
import sys
from pathlib import Path

import cbor2

SEEDS = [
    "8501a21450a0a1a2a3a4a5a6a7a8a9aaabacadaeaf03810082818212288182123284842f28381c39fffd842f32381c39fffd",
    "8202a41450a0a1a2a3a4a5a6a7a8a9aaabacadaeaf060007400881a200814f0102030405060708090a0b0c0d0e0f",
    "a201020304",
    "9818" + "00" * 24,
    "5b" + "ff" * 8,
    "bb" + "ff" * 8,
    "1b0000000100000000",
    "b820" + "0000" * 32,
    "81" * 70 + "00",
]


def load(path: Path) -> object:
    spec = importlib.util.spec_from_file_location("_plaincbor", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def mutate(rnd: random.Random, data: bytes) -> bytes:
    out = bytearray(data)
    for _ in range(rnd.randint(1, 4)):
        op, pos = rnd.randint(0, 3), rnd.randint(0, len(out))
        if op == 0 and pos < len(out):
            out[pos] = rnd.randint(0, 255)
        elif op == 1:
            out.insert(pos, rnd.randint(0, 255))
        elif op == 2 and pos < len(out):
            del out[pos]
        else:
            del out[pos:]
    return bytes(out)


def main() -> int:
    plain = load(Path(sys.argv[1])).plain  # type: ignore[attr-defined]
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 300_000
    rnd = random.Random(int(os.environ.get("SEED", "1")))
    seeds = [bytes.fromhex(h) for h in SEEDS]
    accepted = 0
    for _ in range(rounds):
        data = mutate(rnd, rnd.choice(seeds)) if rnd.random() < 0.6 else rnd.randbytes(rnd.randint(0, 40))
        if not plain(data):
            continue
        accepted += 1
        try:
            value = cbor2.loads(data)
        except cbor2.CBORDecodeError as exc:
            assert isinstance(exc.__cause__, UnicodeDecodeError), data.hex()
            continue
        assert cbor2.dumps(value) == data, data.hex()
    print(f"fuzz-c: {rounds} inputs, {accepted} plain, all round-trip; no sanitizer report")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
