"""Errors of the security layer: one type per reason a key, a COSE object or evidence is refused.

Callers branch on the type (an Agent answers `SignatureInvalid` differently from `CoseDecodeError`),
so no exception from cwt, cbor2 or cryptography ever leaves this package.
"""

from __future__ import annotations

from teep_coap.errors import TeepCoapError


class SecurityError(TeepCoapError):
    """Root of every security-layer failure."""


class KeyFileError(SecurityError):
    """A key file or key blob cannot be read, or holds a key type we do not use."""


class CoseError(SecurityError):
    """A COSE object was refused."""


class CoseDecodeError(CoseError):
    """Not a well-formed COSE_Sign1/COSE_Sign: bad CBOR, wrong tag, bad header, payload missing."""


class UnknownKid(CoseError):
    """No trusted key matches the kid (or, without a kid, the algorithm) of the signature."""


class UnsupportedAlgorithm(CoseError):
    """The algorithm is not one we implement or not one the caller allows."""


class SignatureInvalid(CoseError):
    """A trusted key was found but the signature does not verify with it."""


class CriticalHeaderNotUnderstood(CoseError):
    """The `crit` header names a parameter this implementation does not understand (RFC 9052 §3.1)."""


class EvidenceError(SecurityError):
    """EAT evidence or an attestation result was refused."""


class StaleNonce(EvidenceError):
    """The eat_nonce differs from the challenge we sent, or the token is too old."""


class MissingNonce(EvidenceError):
    """The nonce freshness mechanism is in use but the evidence carries no eat_nonce."""


class ClaimMissing(EvidenceError):
    """A claim the TEEP EAT profile requires is absent."""


class ClaimInvalid(EvidenceError):
    """A claim is present but has the wrong type or a value the Verifier's reference values reject."""


class AttestationFailed(EvidenceError):
    """An attestation result says the evidence did not pass appraisal, or names another key."""


class NegotiationError(SecurityError):
    """The peers have no cipher suite (or other negotiated parameter) in common."""
