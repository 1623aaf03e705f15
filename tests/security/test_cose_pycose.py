"""Cross-check with pycose 1.1 (an independent COSE implementation): what we sign verifies there, and
what pycose signs verifies here.

pycose 1.1 knows ES256 (-7) and EdDSA (-8) only. Those are tested as they are. For ESP256 (-9) and
Ed25519 (-19) the test registers two pycose algorithm classes that reuse pycose's own ES256 / EdDSA code
under the new ids: RFC 9864 defines ESP256 as ECDSA P-256 + SHA-256 and Ed25519 as EdDSA on Ed25519,
i.e. the same computation. The Sig_structure, header and tag encoding are still pycose's, so the check
stays independent of cwt and of our own encoder.
"""

from __future__ import annotations

from typing import Any

import cbor2
import pytest
from pycose.algorithms import CoseAlgorithm, EdDSA, Es256
from pycose.keys import CoseKey
from pycose.messages import CoseMessage, Sign1Message, SignMessage
from pycose.messages.signer import CoseSignature

from teep_coap.security.cose import sign, sign1, verify
from teep_coap.security.errors import SignatureInvalid
from teep_coap.security.keys import SigningKey, generate_key
from teep_coap.security.truststore import TrustStore


def _register_fully_specified() -> None:
    if -9 in {cls.identifier for cls in CoseAlgorithm.get_registered_classes().values()}:
        return

    @CoseAlgorithm.register_attribute()
    class Esp256(Es256):  # type: ignore[misc,valid-type]
        identifier = -9
        fullname = "ESP256"

    @CoseAlgorithm.register_attribute()
    class Ed25519Alg(EdDSA):  # type: ignore[misc,valid-type]
        identifier = -19
        fullname = "Ed25519"


_register_fully_specified()


def _pycose_key(key: SigningKey, *, private: bool) -> Any:
    params = key.cose_params() if private else key.public.cose_params()
    params.pop(3, None)  # pycose checks alg against its own table; the message header carries it
    return CoseKey.from_dict(params)


KEYS = {
    "ES256(-7)": generate_key(-7),
    "EdDSA(-8)": generate_key(-8),
    "ESP256(-9)": generate_key(-9),
    "Ed25519(-19)": generate_key(-19),
}


@pytest.mark.parametrize("name", list(KEYS))
def test_pycose_verifies_our_sign1(name: str) -> None:
    key = KEYS[name]
    data = sign1(b"\x82\x05\xa0", key, external_aad=b"aad")
    msg = CoseMessage.decode(data)
    assert isinstance(msg, Sign1Message)
    msg.key = _pycose_key(key, private=False)
    msg.external_aad = b"aad"
    assert msg.verify_signature()
    assert msg.payload == b"\x82\x05\xa0"
    # pycose notices a tampered payload
    msg.payload = b"\x82\x05\xa1"
    assert not msg.verify_signature()


@pytest.mark.parametrize("name", list(KEYS))
def test_we_verify_pycose_sign1(name: str) -> None:
    key = KEYS[name]
    alg_cls = CoseAlgorithm.from_id(key.alg)
    msg = Sign1Message(
        phdr={1: alg_cls}, uhdr={4: key.kid}, payload=b"teep", key=_pycose_key(key, private=True)
    )
    data = msg.encode(tag=True)
    assert data[0] == 0xD2
    result = verify(data, key.public)
    assert result.payload == b"teep" and result.alg == key.alg and result.kid == key.kid
    other = generate_key(key.alg)
    with pytest.raises(SignatureInvalid):
        verify(data, SigningKey(other.crypto_key, alg=key.alg, kid=key.kid).public)


def test_pycose_verifies_our_detached_sign1() -> None:
    key = KEYS["ESP256(-9)"]
    data = sign1(None, key, detached_payload=b"suit-digest")
    msg = CoseMessage.decode(data)
    assert msg.payload is None
    msg.key = _pycose_key(key, private=False)
    msg.payload = b"suit-digest"
    assert msg.verify_signature()


def test_pycose_verifies_both_signatures_of_our_cose_sign() -> None:
    esp, ed = KEYS["ESP256(-9)"], KEYS["Ed25519(-19)"]
    data = sign(b"query-request", [esp, ed])
    msg = CoseMessage.decode(data)
    assert isinstance(msg, SignMessage) and len(msg.signers) == 2
    for signer, key in zip(msg.signers, (esp, ed), strict=True):
        signer.key = _pycose_key(key, private=False)
        assert signer.verify_signature()


def test_we_verify_pycose_cose_sign_with_one_known_signer() -> None:
    esp, ed = KEYS["ES256(-7)"], KEYS["Ed25519(-19)"]
    signers = [
        CoseSignature(
            phdr={1: CoseAlgorithm.from_id(k.alg)}, uhdr={4: k.kid}, key=_pycose_key(k, private=True)
        )
        for k in (esp, ed)
    ]
    data = SignMessage(phdr={}, uhdr={}, payload=b"qr", signers=signers).encode(tag=True)
    assert cbor2.loads(data).tag == 98
    assert verify(data, TrustStore([esp.public])).alg == -7
    assert verify(data, TrustStore([ed.public]), allowed_algs={-19}).alg == -19
