"""Our keys as python-cwt `COSEKeyInterface` objects, so cwt builds and checks the COSE structures.

Why not cwt's own EC2Key: it converts r||s <-> DER through pure-Python `i2osp`/`os2ip` byte loops,
which cost more than the ECDSA signature itself (measured: ESP256 COSE_Sign1 signing at 40% of the raw
`cryptography` rate). `COSEKeyInterface` is cwt's documented extension point; this adapter keeps cwt in
charge of headers, Sig_structure and tags and hands only the primitive to `SigningKey.sign` /
`VerifyingKey.verify` (same `cryptography` calls, with `int.to_bytes`).
"""

from __future__ import annotations

from cwt import VerifyError
from cwt.cose_key_interface import COSEKeyInterface

from teep_coap.security.errors import SignatureInvalid
from teep_coap.security.keys import SigningKey, VerifyingKey

_KEY_OPS_SIGN, _KEY_OPS_VERIFY = 1, 2


class CwtKey(COSEKeyInterface):
    """A signing or verifying key seen by cwt (kty/kid/alg from our key; no key material copied)."""

    def __init__(self, key: SigningKey | VerifyingKey, *, private: bool) -> None:
        kty = 2 if key.key_type == "P-256" else 1
        ops = [_KEY_OPS_SIGN, _KEY_OPS_VERIFY] if private else [_KEY_OPS_VERIFY]
        super().__init__({1: kty, 2: key.kid, 3: key.alg, 4: ops})
        self._ours = key
        self._public: VerifyingKey = key.public if isinstance(key, SigningKey) else key

    @property
    def key(self) -> object:
        return self._ours.crypto_key

    def sign(self, msg: bytes) -> bytes:
        sign = getattr(self._ours, "sign", None)
        if sign is None:
            raise ValueError("a public key cannot sign")
        result: bytes = sign(msg)
        return result

    def verify(self, msg: bytes, sig: bytes) -> None:
        try:
            self._public.verify(msg, sig)
        except SignatureInvalid as exc:
            raise VerifyError(str(exc)) from None


def cwt_key(key: SigningKey | VerifyingKey) -> CwtKey:
    """`key` as cwt sees it, built once per key object (kept in its `cwt_cache` slot)."""
    cached = key.cwt_cache
    if cached is None:
        cached = key.cwt_cache = CwtKey(key, private=isinstance(key, SigningKey))
    result: CwtKey = cached
    return result
