"""SUIT envelope rates for `teep-coap bench crypto` (which the COSE side owns and calls these from).

`measure_envelope_verify` is the number the issue asks for: full `verify_envelope` (CBOR parse of the
envelope, manifest and sequences, SHA-256 of the manifest, COSE_Sign1 verification of the detached
digest) per second on one core.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from teep_coap.security.keys import generate_key
from teep_coap.security.suit import build_envelope, parse_envelope, teep_component_id, verify_envelope
from teep_coap.security.truststore import TrustStore

_VENDOR = bytes.fromhex("C0DDD5F15243566087DB4F5B0AA26C2F")
_CLASS = bytes.fromhex("DB42F7093D8C55BAA8C5265FC5820F4E")
_TC = bytes.fromhex("8D82573A926D4754935332DC29997F74")
PAYLOAD = b"Hello, Secure World!"


def _rate(fn: Callable[[], object], seconds: float) -> float:
    """Calls per second of `fn`, run for about `seconds` (at least 10 calls)."""
    fn()  # warm-up (imports, key caches)
    n, start = 0, time.perf_counter()
    deadline = start + max(seconds, 0.0)
    while True:
        fn()
        n += 1
        now = time.perf_counter()
        if now >= deadline and n >= 10:
            return n / (now - start)


def sample_envelope(alg: str = "esp256", payload: bytes = PAYLOAD) -> tuple[bytes, TrustStore]:
    """An envelope shaped like suit_integrated, and a trust store holding its signer."""
    key = generate_key(alg)
    env = build_envelope(
        payload,
        key=key,
        component_id=teep_component_id(_TC),
        sequence_number=1,
        vendor_id=_VENDOR,
        class_id=_CLASS,
    )
    return env, TrustStore([key.public])


def measure_envelope_verify(seconds: float = 1.0, *, alg: str = "esp256") -> float:
    """Envelope verifications per second (parse + manifest digest + COSE_Sign1 verify)."""
    env, trust = sample_envelope(alg)
    return _rate(lambda: verify_envelope(env, trust), seconds)


def measure_envelope_parse(seconds: float = 1.0) -> float:
    """Envelope parses per second (no crypto), to separate CBOR cost from signature cost."""
    env, _ = sample_envelope()
    return _rate(lambda: parse_envelope(env), seconds)


def measure_envelope_build(seconds: float = 1.0, *, alg: str = "esp256") -> float:
    """Signed envelopes built per second."""
    key = generate_key(alg)
    cid = teep_component_id(_TC)
    return _rate(
        lambda: build_envelope(
            PAYLOAD, key=key, component_id=cid, sequence_number=1, vendor_id=_VENDOR, class_id=_CLASS
        ),
        seconds,
    )
