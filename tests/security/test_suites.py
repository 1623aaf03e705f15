"""Cipher-suite negotiation and the Error it produces when nothing is common."""

from __future__ import annotations

import cbor2
import pytest
from cddl_verifier import Validator

from teep_coap.encoding.cbor_codec import decode, encode
from teep_coap.model.codes import (
    SUITE_SIGN1_ED25519,
    SUITE_SIGN1_EDDSA_LEGACY,
    SUITE_SIGN1_ES256_LEGACY,
    SUITE_SIGN1_ESP256,
    ErrorCode,
)
from teep_coap.model.teep import Error
from teep_coap.security.cose import sign, sign1, verify
from teep_coap.security.errors import NegotiationError
from teep_coap.security.keys import generate_key
from teep_coap.security.suites import (
    TAM_MANDATORY_SUITES,
    allowed_algs,
    is_supported,
    keys_for_suites,
    normalize_suite,
    select_suite,
    signing_key_for_error,
    suite_for_key,
    suite_from_wire,
    suite_name,
    suite_to_wire,
    unsupported_suites_error,
)
from tests.conftest import CDDL_FILE

ESP, ED = SUITE_SIGN1_ESP256, SUITE_SIGN1_ED25519
ES256_OLD, EDDSA_OLD = SUITE_SIGN1_ES256_LEGACY, SUITE_SIGN1_EDDSA_LEGACY
UNKNOWN = ((18, -35),)  # ES384: nobody here supports it


def test_suite_wire_bytes_match_the_draft() -> None:
    # docs/protocol-facts.md §1.6: [[18, -9]] = 81 82 12 28, [[18, -19]] = 81 82 12 32
    assert cbor2.dumps(suite_to_wire(ESP)).hex() == "81821228"
    assert cbor2.dumps(suite_to_wire(ED)).hex() == "81821232"
    assert suite_from_wire(cbor2.loads(bytes.fromhex("81821228"))) == ESP
    assert suite_name(ESP) == "teep-cipher-suite-sign1-esp256"
    assert suite_name(UNKNOWN) == "[[18, -35]]"


@pytest.mark.parametrize("bad", [[], 5, [[18]], [[18, "x"]], [[18, -9, 1]], [[True, -9]], None])
def test_suite_from_wire_refuses_bad_shapes(bad: object) -> None:
    with pytest.raises(NegotiationError):
        suite_from_wire(bad)


def test_suite_for_key() -> None:
    assert suite_for_key(generate_key("esp256")) == ESP
    assert suite_for_key(generate_key("ed25519").public) == ED
    assert suite_for_key(generate_key(-7)) == ES256_OLD


def test_select_follows_offer_order_and_returns_our_entry() -> None:
    assert select_suite([ESP, ED], [ED, ESP]) == ESP
    assert select_suite([ED, ESP], [ESP, ED]) == ED
    assert select_suite([UNKNOWN, ED], [ESP, ED]) == ED
    # a peer of draft-20 offers ES256: equivalent to our ESP256, and we answer with the new id
    assert select_suite([ES256_OLD], [ESP, ED]) == ESP
    assert select_suite([EDDSA_OLD, ES256_OLD], [ESP, ED]) == ED
    assert normalize_suite(ES256_OLD) == ESP
    assert is_supported(EDDSA_OLD, [ED]) and not is_supported(UNKNOWN, [ESP, ED])


def test_no_common_suite_raises_with_names() -> None:
    with pytest.raises(NegotiationError, match="teep-cipher-suite-sign1-ed25519"):
        select_suite([ED], [ESP])
    with pytest.raises(NegotiationError, match="none"):
        select_suite([], [ESP])


def test_allowed_algs_include_legacy_equivalents() -> None:
    assert allowed_algs([ESP]) == {-9, -7}
    assert allowed_algs([ED, ESP]) == {-19, -8, -9, -7}
    assert allowed_algs([((16, 1),)]) == set()  # COSE_Encrypt0 op carries no signature alg


def test_keys_for_suites_one_per_suite_in_order() -> None:
    esp, ed = generate_key("esp256"), generate_key("ed25519")
    assert keys_for_suites([esp, ed], [ED, ESP]) == [ed, esp]
    assert keys_for_suites([esp], [ED, ESP]) == [esp]
    # a first QueryRequest: COSE_Sign with one signature per suite the TAM supports
    msg = sign(b"qr", keys_for_suites([esp, ed], TAM_MANDATORY_SUITES))
    assert verify(msg, ed.public, allowed_algs=allowed_algs([ED])).alg == -19


def test_unsupported_suites_error_is_a_valid_teep_error() -> None:
    token = bytes(range(16))
    err = unsupported_suites_error(token, [ES256_OLD, ED])
    assert isinstance(err, Error)
    assert err.err_code == ErrorCode.ERR_UNSUPPORTED_CIPHER_SUITES == 5
    assert err.token == token
    assert err.supported_teep_cipher_suites == (ESP, ED)  # legacy ids leave as the new ones
    wire = encode(err)
    item = cbor2.loads(wire)
    assert item[0] == 6 and item[2] == 5
    assert item[1][1] == [[[18, -9]], [[18, -19]]]
    assert item[1][20] == token
    assert decode(wire) == err
    result = Validator(CDDL_FILE).validate(item, "teep-message")
    assert result.valid, result
    with pytest.raises(NegotiationError):
        unsupported_suites_error(token, [])


def test_error_is_signed_with_a_tam_mandatory_suite() -> None:
    legacy, ed = generate_key(-7), generate_key("ed25519")
    # the legacy ES256 key is equivalent to ESP256 and therefore acceptable
    assert signing_key_for_error([legacy, ed]) is legacy
    assert signing_key_for_error([ed]) is ed
    with pytest.raises(NegotiationError):
        signing_key_for_error([])
    err = unsupported_suites_error(None, [ED])
    signed = sign1(encode(err), signing_key_for_error([ed]))
    assert decode(verify(signed, ed.public).payload).err_code == 5
