"""COSE signing cost next to the raw primitive: what does the COSE layer add on top of `cryptography`?

For each algorithm the same run measures
- raw sign / verify: `cryptography` on the exact Sig_structure bytes that COSE_Sign1 signs (so the
  only difference is the COSE layer: headers, Sig_structure, encoding, parsing, key lookup);
- COSE sign: `cose.sign1(payload, key)`; COSE verify: `cose.verify(message, trust store)` (the
  default, hand-concatenated Sig_structure path) and the same through python-cwt (`via_cwt=True`);
- SUIT envelope verify: parse, manifest digest, detached
  COSE_Sign1; compared with the raw verify of the same algorithm.
Rates are best-batch rates of interleaved ~2 ms batches (see `_best`): on a shared, loaded CPU the
fastest batch is the least disturbed one, and raw and COSE batches alternate.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import cbor2
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from teep_coap.encoding.cbor_codec import encode
from teep_coap.model.teep import QueryRequest
from teep_coap.security import cose
from teep_coap.security.keys import ALG_NAMES, SigningKey, generate_key
from teep_coap.security.suit.build import build_envelope, teep_component_id
from teep_coap.security.suit.verify import verify_envelope
from teep_coap.security.truststore import TrustStore

TARGET_RATIO = 0.70
ROUNDS = 5  # minimum number of round-robin passes


@dataclass(frozen=True)
class CryptoRow:
    """One measurement: operations per second through COSE and raw, and their ratio."""

    operation: str
    alg: str
    payload_bytes: int
    cose_per_s: float
    raw_per_s: float

    @property
    def ratio(self) -> float:
        return self.cose_per_s / self.raw_per_s if self.raw_per_s else 0.0

    @property
    def meets_target(self) -> bool:
        return self.ratio >= TARGET_RATIO

    def as_dict(self) -> dict[str, object]:
        out: dict[str, object] = asdict(self)
        out["ratio"] = round(self.ratio, 3)
        out["meets_target"] = self.meets_target
        return out


def default_payload() -> bytes:
    """The working group's example QueryRequest (64 bytes, byte-identical): token, versions, both suites,
    four SUIT profiles, data-item-requested 3."""

    return encode(QueryRequest(token=bytes(range(0xA0, 0xB0)), versions=(0,), data_item_requested=3))


def _batch_size(fn: Callable[[], object], target: float = 0.002) -> int:
    """Calls that take about `target` seconds (one timed batch)."""
    fn()  # warm up caches (key adapters, encoders)
    n = 1
    while True:
        start = time.perf_counter()
        for _ in range(n):
            fn()
        if time.perf_counter() - start >= target or n >= 1 << 16:
            return n
        n *= 2


def _best(ops: dict[str, Callable[[], object]], seconds: float) -> dict[str, float]:
    """Best-batch rate of each operation, batches interleaved round-robin for `seconds` in total.

    The fastest batch is the least disturbed by other processes (the `timeit` practice); as raw and
    COSE batches alternate, both see the same machine, so their ratio is what the COSE layer costs."""
    sizes = {name: _batch_size(fn) for name, fn in ops.items()}
    best = dict.fromkeys(ops, float("inf"))
    deadline = time.perf_counter() + seconds
    rounds = 0
    while rounds < ROUNDS or time.perf_counter() < deadline:
        for name, fn in ops.items():
            n = sizes[name]
            start = time.perf_counter()
            for _ in range(n):
                fn()
            best[name] = min(best[name], (time.perf_counter() - start) / n)
        rounds += 1
    return {name: 1.0 / t for name, t in best.items()}


def _raw_ops(key: SigningKey, tbs: bytes) -> tuple[Callable[[], object], Callable[[], object]]:
    priv = key.crypto_key
    if isinstance(priv, ed25519.Ed25519PrivateKey):
        pub_ed = priv.public_key()
        sig = priv.sign(tbs)
        return (lambda: priv.sign(tbs)), (lambda: pub_ed.verify(sig, tbs))
    assert isinstance(priv, ec.EllipticCurvePrivateKey)
    pub_ec = priv.public_key()
    raw = key.sign(tbs)
    der = encode_dss_signature(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big"))
    algo = ec.ECDSA(hashes.SHA256())
    return (lambda: priv.sign(tbs, algo)), (lambda: pub_ec.verify(der, tbs, algo))


def _suit_verify(key: SigningKey, trust: TrustStore) -> tuple[Callable[[], object], int]:
    """An envelope-verify callable and the envelope's size."""
    envelope = build_envelope(
        b"trusted component" * 64,
        key=key,
        component_id=teep_component_id(bytes(16)),
        sequence_number=1,
        vendor_id=bytes(range(16)),
        class_id=bytes(range(16, 32)),
    )
    verify_envelope(envelope, trust)  # fail loudly here rather than measure an error path
    return (lambda: verify_envelope(envelope, trust)), len(envelope)


def run(
    *, seconds: float = 1.0, payload_size: int | None = None, algs: tuple[str, ...] = ("esp256", "ed25519")
) -> list[CryptoRow]:
    """Measure every row; `seconds` is the time per operation (split into rounds)."""
    payload = default_payload() if payload_size is None else bytes(payload_size)
    rows: list[CryptoRow] = []
    for name in algs:
        key = generate_key(name)
        trust = TrustStore([key.public, generate_key("esp256").public, generate_key("ed25519").public])
        message = cose.sign1(payload, key)
        item = cbor2.loads(message)
        tbs = cbor2.dumps(["Signature1", item.value[0], b"", payload])
        raw_sign, raw_verify = _raw_ops(key, tbs)
        ops: dict[str, Callable[[], object]] = {
            "raw_sign": raw_sign,
            "cose_sign": lambda key=key: cose.sign1(payload, key),  # type: ignore[misc]
            "raw_verify": raw_verify,
            "cose_verify": lambda message=message, trust=trust: cose.verify(message, trust),  # type: ignore[misc]
            "cwt_sign": lambda key=key: cose.sign1(payload, key, via_cwt=True),  # type: ignore[misc]
            "cwt_verify": lambda message=message, trust=trust: cose.verify(message, trust, via_cwt=True),  # type: ignore[misc]
        }
        suit_verify, envelope_size = _suit_verify(key, trust)
        ops["suit_verify"] = suit_verify
        rates = _best(ops, seconds)
        alg = ALG_NAMES[key.alg]
        rows.append(CryptoRow("COSE_Sign1 sign", alg, len(payload), rates["cose_sign"], rates["raw_sign"]))
        rows.append(
            CryptoRow("COSE_Sign1 verify", alg, len(payload), rates["cose_verify"], rates["raw_verify"])
        )
        rows.append(CryptoRow("  sign, cwt path", alg, len(payload), rates["cwt_sign"], rates["raw_sign"]))
        rows.append(
            CryptoRow("  verify, cwt path", alg, len(payload), rates["cwt_verify"], rates["raw_verify"])
        )
        rows.append(
            CryptoRow("SUIT envelope verify", alg, envelope_size, rates["suit_verify"], rates["raw_verify"])
        )
    return rows


def format_table(rows: list[CryptoRow]) -> str:
    """Plain-text table (fixed width, so it pastes into reports)."""
    head = (
        f"{'operation':22} {'alg':8} {'bytes':>6} {'COSE/s':>10} {'raw/s':>10} {'ratio':>6}"
        f"  target {TARGET_RATIO:.0%}"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        mark = "ok" if r.meets_target else "BELOW"
        lines.append(
            f"{r.operation:22} {r.alg:8} {r.payload_bytes:>6} {r.cose_per_s:>10.0f} {r.raw_per_s:>10.0f} "
            f"{r.ratio:>6.0%}  {mark}"
        )
    return "\n".join(lines)
