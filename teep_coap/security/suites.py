"""TEEP cipher-suite negotiation (docs/protocol-facts.md §1.6).

A suite is a tuple of operations `(cose-type, cose-alg)`; TEEP defines two, both COSE_Sign1:
`((18, -9),)` ESP256 and `((18, -19),)` Ed25519. Drafts up to -20 sent ES256 (-7) / EdDSA (-8) in
their place. We accept the old ids as the same suite when comparing and always emit the new ones.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from teep_coap.model.codes import (
    CIPHER_SUITE_NAMES,
    SUITE_SIGN1_ED25519,
    SUITE_SIGN1_ESP256,
    CipherSuite,
    CoseType,
    ErrorCode,
)
from teep_coap.model.teep import Error
from teep_coap.security.errors import NegotiationError
from teep_coap.security.keys import ALG_ED25519, ALG_EDDSA, ALG_ES256, ALG_ESP256, SigningKey, VerifyingKey

# Legacy id -> the fully specified id it is equivalent to for TEEP's curves. The one table: the
# engines, the wire and negotiation all read it through the functions below.
LEGACY_ALGS = {ALG_ES256: ALG_ESP256, ALG_EDDSA: ALG_ED25519}
_LEGACY_OF = {new: old for old, new in LEGACY_ALGS.items()}

# The suites a TAM MUST support (and the only ones an Error 5 may be signed with).
TAM_MANDATORY_SUITES: tuple[CipherSuite, ...] = (SUITE_SIGN1_ESP256, SUITE_SIGN1_ED25519)


def normalize_alg(alg: int) -> int:
    """-7 -> -9, -8 -> -19; everything else unchanged."""
    return LEGACY_ALGS.get(alg, alg)


def legacy_ids(alg: int) -> list[int]:
    """The legacy ids that stand for `alg` (-9 -> [-7]); empty for anything else."""
    return [old for old, new in LEGACY_ALGS.items() if new == alg]


def normalize_suite(suite: Sequence[Sequence[int]]) -> CipherSuite:
    """The suite with legacy algorithm ids replaced by the fully specified ones (docs/design.md §2.2)."""
    return tuple((int(op[0]), normalize_alg(int(op[1]))) for op in suite)


def normalize_suit_profile(profile: Sequence[int]) -> tuple[int, ...]:
    """A SUIT COSE profile with its signature alg (position 1) normalised: draft-20 profiles carry
    -7/-8 where the current ones carry -9/-19."""
    return tuple(normalize_alg(int(v)) if i == 1 else int(v) for i, v in enumerate(profile))


def suite_name(suite: CipherSuite) -> str:
    """Registry name, or the array notation for suites we do not know."""
    key = tuple((int(t), int(a)) for t, a in suite)
    return CIPHER_SUITE_NAMES.get(key, str([list(op) for op in key]))


def suite_from_wire(value: Any) -> CipherSuite:
    """A suite from decoded CBOR (`[[18, -9]]`), checking its shape."""
    if not isinstance(value, list | tuple) or not value:
        raise NegotiationError(f"cipher suite must be a non-empty array of operations, got {value!r}")
    ops = []
    for op in value:
        if (
            not isinstance(op, list | tuple)
            or len(op) != 2
            or not all(isinstance(x, int) and not isinstance(x, bool) for x in op)
        ):
            raise NegotiationError(f"cipher-suite operation must be [cose-type, cose-alg], got {op!r}")
        ops.append((int(op[0]), int(op[1])))
    return tuple(ops)


def suite_to_wire(suite: CipherSuite) -> list[list[int]]:
    return [[int(t), int(a)] for t, a in suite]


def suite_for_key(key: SigningKey | VerifyingKey) -> CipherSuite:
    """The COSE_Sign1 suite a key signs with (legacy keys keep their id, new keys the new one)."""
    return ((int(CoseType.COSE_SIGN1), key.alg),)


def suite_algs(suite: CipherSuite) -> frozenset[int]:
    """Signature algs a suite allows on receipt, including the legacy equivalent."""
    algs = set()
    for cose_type, alg in suite:
        if cose_type in (CoseType.COSE_SIGN1, CoseType.COSE_SIGN):
            algs.add(normalize_alg(alg))
            if normalize_alg(alg) in _LEGACY_OF:
                algs.add(_LEGACY_OF[normalize_alg(alg)])
    return frozenset(algs)


def allowed_algs(suites: Iterable[CipherSuite]) -> frozenset[int]:
    """Union of `suite_algs` over several suites (for `cose.verify(allowed_algs=...)`)."""
    result: frozenset[int] = frozenset()
    for suite in suites:
        result |= suite_algs(suite)
    return result


def is_supported(suite: CipherSuite, supported: Iterable[CipherSuite]) -> bool:
    target = normalize_suite(suite)
    return any(normalize_suite(s) == target for s in supported)


def select_suite(offered: Sequence[CipherSuite], supported: Iterable[CipherSuite]) -> CipherSuite:
    """First suite of `offered` (the sender's order of preference) that we support.

    Returns OUR entry for it, so a peer that offered a legacy id gets an answer with the id we emit.
    Raises `NegotiationError` when nothing is common."""
    ours = list(supported)
    by_norm = {normalize_suite(s): s for s in reversed(ours)}
    for suite in offered:
        match = by_norm.get(normalize_suite(suite))
        if match is not None:
            return match
    raise NegotiationError(
        "no common cipher suite: offered "
        + (", ".join(suite_name(s) for s in offered) or "none")
        + "; supported "
        + (", ".join(suite_name(s) for s in ours) or "none")
    )


def keys_for_suites(keys: Iterable[SigningKey], suites: Iterable[CipherSuite]) -> list[SigningKey]:
    """Our signing keys that serve the given suites, one per suite, in suite order (for the COSE_Sign
    of a first QueryRequest: one signature per supported suite)."""
    pool = list(keys)
    chosen: list[SigningKey] = []
    for suite in suites:
        algs = suite_algs(suite)
        for key in pool:
            if key not in chosen and normalize_alg(key.alg) in algs:
                chosen.append(key)
                break
    return chosen


def unsupported_suites_error(token: bytes | None, supported: Iterable[CipherSuite]) -> Error:
    """The Error an Agent sends when no offered suite is usable: ERR_UNSUPPORTED_CIPHER_SUITES (5),
    which MUST carry supported-teep-cipher-suites (label 1). Sign it with a TAM-mandatory suite."""
    suites = tuple(normalize_suite(s) for s in supported)
    if not suites:
        raise NegotiationError("an Error 5 must list at least one supported cipher suite")
    return Error(
        err_code=int(ErrorCode.ERR_UNSUPPORTED_CIPHER_SUITES),
        token=token,
        supported_teep_cipher_suites=suites,
    )


def signing_key_for_error(keys: Iterable[SigningKey]) -> SigningKey:
    """A key whose suite is TAM-mandatory, to protect an ERR_UNSUPPORTED_CIPHER_SUITES
    (docs/protocol-facts.md §1.6)."""
    for key in keys:
        if is_supported(suite_for_key(key), TAM_MANDATORY_SUITES):
            return key
    raise NegotiationError("no signing key of a TAM-mandatory suite (ESP256 or Ed25519) to sign the Error")
