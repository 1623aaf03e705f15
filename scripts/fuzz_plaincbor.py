"""Fuzz the C determinism check under AddressSanitizer/UBSan (run by `make fuzz-c`).

Builds `_plaincbor.c` with the sanitizers into a temporary folder, then feeds it mutated working-group
examples, edge cases and random bytes. Each input it calls plain must come back unchanged from
cbor2 (or be refused by cbor2 for its UTF-8 only), and its pre-authentication walk `untrusted_ok`
must say what the Python walker of `encoding.untrusted` says; any memory error aborts the run. The Makefile
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

from teep_coap.encoding import untrusted
from teep_coap.encoding.errors import TeepDecodeError

untrusted._untrusted_ok = None  # the Python walker alone, to compare the C walk with


def python_walk_accepts(data: bytes) -> bool:
    try:
        untrusted.check_untrusted_cbor(data)
    except TeepDecodeError:
        return False
    return True


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
    "d28443a10126a10442abcd4a8202a1140102030405584000" + "11" * 63,  # COSE_Sign1 (tag 18)
    "d8628440a0f6818343a10126a05840" + "22" * 64,  # COSE_Sign (tag 98), one signature
    "c249010000000000000000f93c00",  # bignum tag, half float
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
    module = load(Path(sys.argv[1]))
    plain = module.plain  # type: ignore[attr-defined]
    untrusted_ok = module.untrusted_ok  # type: ignore[attr-defined]
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 300_000
    rnd = random.Random(int(os.environ.get("SEED", "1")))
    seeds = [bytes.fromhex(h) for h in SEEDS]
    accepted = 0
    for _ in range(rounds):
        data = mutate(rnd, rnd.choice(seeds)) if rnd.random() < 0.6 else rnd.randbytes(rnd.randint(0, 40))
        walked = untrusted_ok(data, untrusted.COSE_TAGS, untrusted.DEFAULT_MAX_DEPTH)
        assert walked == python_walk_accepts(data), data.hex()
        if not plain(data):
            continue
        accepted += 1
        try:
            value = cbor2.loads(data)
        except cbor2.CBORDecodeError as exc:
            assert isinstance(exc.__cause__, UnicodeDecodeError), data.hex()
            continue
        assert cbor2.dumps(value) == data, data.hex()
    print(f"fuzz-c: {rounds} inputs, {accepted} plain, all round-trip; walks agree; no sanitizer report")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
