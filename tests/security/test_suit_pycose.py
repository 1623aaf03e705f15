"""Independent cross-check: pycose verifies the detached COSE_Sign1 of our SUIT envelopes.

pycose 1.1 does not know the fully specified ids (-9, -19), so the envelopes are signed with the
legacy ES256 (-7) / EdDSA (-8) keys; the Sig_structure with a detached payload is the same.
"""

from __future__ import annotations

import pytest
from pycose.keys import EC2Key, OKPKey
from pycose.messages import Sign1Message

from teep_coap.security.keys import generate_key
from teep_coap.security.suit import parse_envelope
from tests.security.test_suit_support import envelope


@pytest.mark.parametrize("alg", [-7, -8])
def test_pycose_verifies_our_authentication_block(alg: int) -> None:
    key = generate_key(alg)
    env = parse_envelope(envelope(1, key=key))
    msg = Sign1Message.decode(env.auth_blocks[0])
    params = key.public.cose_params()
    msg.key = (
        EC2Key(crv="P_256", x=params[-2], y=params[-3]) if alg == -7 else OKPKey(crv="ED25519", x=params[-2])
    )
    assert msg.payload is None  # detached
    assert msg.verify_signature(detached_payload=env.digest_raw)
    tampered = env.digest_raw[:-1] + bytes([env.digest_raw[-1] ^ 1])
    assert not msg.verify_signature(detached_payload=tampered)
