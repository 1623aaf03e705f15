"""SUIT envelope rates for `teep-coap bench crypto` (which the COSE side owns and calls these from).

`measure_envelope_verify` is the number the issue asks for: full `verify_envelope` (CBOR decode of
the envelope's top-level map and authentication wrapper, SHA-256 of the manifest bstr, COSE_Sign1
verification of the detached digest) per second on one core. The manifest is not decoded there:
SUIT authenticates before it interprets, and `Envelope.manifest` decodes on first access.
`measure_envelope_verify_and_read` adds that decode, `measure_envelope_parse` is the decode alone.
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
    """Envelope verifications per second (top-level decode + manifest digest + COSE_Sign1 verify)."""
    env, trust = sample_envelope(alg)
    return _rate(lambda: verify_envelope(env, trust), seconds)


def measure_envelope_verify_and_read(seconds: float = 1.0, *, alg: str = "esp256") -> float:
    """Verify, then decode the authenticated manifest (what `process_envelope` does before running it)."""
    env, trust = sample_envelope(alg)
    return _rate(lambda: verify_envelope(env, trust).manifest, seconds)


def measure_envelope_parse(seconds: float = 1.0) -> float:
    """Full envelope parses per second (manifest and sequences, no crypto): the CBOR side alone."""
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
