"""Encrypt-then-sign and verify-then-decrypt, both encodings, RSA (mandated) and P-256 (optional)."""

from __future__ import annotations

import base64
import json

import cbor2
import pytest

from teep_coap.otrp.encoding import cbor as otrp_cbor
from teep_coap.otrp.encoding import json as otrp_json
from teep_coap.otrp.encoding.tree import to_tree
from teep_coap.otrp.model import (
    CreateSDRequest,
    DsiDocument,
    GetDeviceStateResponse,
    GetDeviceTEEStateResponse,
    OtrpDecodeError,
    OtrpError,
    OtrpMessage,
    OtrpSecurityError,
)
from teep_coap.otrp.protocol.wire import codec_for
from teep_coap.otrp.security.cose import cose_decrypt, cose_encrypt
from teep_coap.otrp.security.jose import jwe_decrypt, jwe_encrypt
from teep_coap.otrp.security.pki import OtrpPki

from .conftest import all_messages, sample_dsi

ENCODINGS = ["json", "cbor"]


def _sender_recipient(pki: OtrpPki, msg: OtrpMessage) -> tuple:
    """TAM signs requests for the TEE; the TEE signs responses for the TAM."""
    if msg.IS_REQUEST:
        return pki.tam, pki.tee, pki.tam.chain_der
    return pki.tee, pki.tam, None


@pytest.mark.parametrize("encoding", ENCODINGS)
@pytest.mark.parametrize("key_type", ["RSA", "EC"])
def test_every_message_seals_and_opens(
    encoding: str, key_type: str, rsa_pki: OtrpPki, ec_pki: OtrpPki
) -> None:
    pki = rsa_pki if key_type == "RSA" else ec_pki
    codec = codec_for(encoding)
    for msg in all_messages():
        signer, recipient, x5c = _sender_recipient(pki, msg)
        if isinstance(msg, GetDeviceTEEStateResponse):
            # the TAM verifies with the TEE certificate found in the DSI
            msg = GetDeviceTEEStateResponse(
                rid="r",
                tid="t",
                signerreq=True,
                edsi=DsiDocument(dsi=sample_dsi(pki.tee.cert_der, pki.tee.chain_der[1:])),
            )
            sealed = codec.seal(msg, signer, recipient.public_key)
            opened = codec.open(sealed.wire, recipient.private_key, anchors=[pki.root.cert])
            assert isinstance(opened.msg, GetDeviceStateResponse)
            assert opened.msg.tees == (msg,)
            assert opened.signer_cert == pki.tee.cert_der
            continue
        sealed = codec.seal(msg, signer, recipient.public_key, x5c)
        if x5c:
            opened = codec.open(sealed.wire, recipient.private_key, anchors=[pki.root.cert])
            assert opened.signer_cert == pki.tam.cert_der
        else:
            opened = codec.open(sealed.wire, recipient.private_key, verify_keys=[signer.public_key])
        assert opened.msg == msg
        assert len(sealed.tbs) < len(sealed.wire)
        # the bare size the sender counted is the receiver's decrypted TBS
        assert opened.tbs == sealed.tbs


def test_json_layering_matches_the_draft(rsa_pki: OtrpPki) -> None:
    msg = all_messages()[2]
    sealed = codec_for("json").seal(msg, rsa_pki.tam, rsa_pki.tee.public_key, rsa_pki.tam.chain_der)
    outer = json.loads(sealed.wire)
    jws = outer["CreateSDRequest"]
    assert set(jws) == {"payload", "protected", "header", "signature"}
    assert jws["protected"] == "eyJhbGciOiJSUzI1NiJ9"  # {"alg":"RS256"} only
    assert [base64.b64decode(c) for c in jws["header"]["x5c"]] == list(rsa_pki.tam.chain_der)
    payload = json.loads(base64.urlsafe_b64decode(jws["payload"] + "=="))
    content = payload["CreateSDTBSRequest"]["content"]
    assert content["protected"] == "eyJlbmMiOiJBMTI4Q0JDLUhTMjU2In0"  # {"enc":"A128CBC-HS256"}
    assert content["recipients"][0]["header"] == {"alg": "RSA1_5"}
    assert set(content) == {"protected", "recipients", "iv", "ciphertext", "tag"}
    assert payload["CreateSDTBSRequest"]["tee"] == msg.tee  # routing data stays in clear


def test_ec_options(ec_pki: OtrpPki) -> None:
    jwe = jwe_encrypt(b"secret", ec_pki.tee.public_key)
    assert jwe["recipients"][0]["header"]["alg"] == "ECDH-ES+A128KW"
    assert jwe_decrypt(jwe, ec_pki.tee.private_key, "x") == b"secret"
    sealed = codec_for("json").seal(all_messages()[0], ec_pki.tam, None, ec_pki.tam.chain_der)
    assert json.loads(sealed.wire)["GetDeviceStateRequest"]["protected"] == "eyJhbGciOiJFUzI1NiJ9"


def test_flattened_jwe_is_accepted(rsa_pki: OtrpPki) -> None:
    general = jwe_encrypt(b"hello", rsa_pki.tee.public_key)
    rec = general.pop("recipients")[0]
    flat = {**general, "header": rec["header"], "encrypted_key": rec["encrypted_key"]}
    assert jwe_decrypt(flat, rsa_pki.tee.private_key, "x") == b"hello"


def test_cose_structure(rsa_pki: OtrpPki, ec_pki: OtrpPki) -> None:
    msg = all_messages()[2]
    wire = codec_for("cbor").seal(msg, rsa_pki.tam, rsa_pki.tee.public_key, rsa_pki.tam.chain_der).wire
    kind, sign1 = cbor2.loads(wire)
    assert kind == otrp_cbor.MESSAGE_TYPE[CreateSDRequest]
    assert sign1.tag == 18
    protected, unprotected, payload, _sig = sign1.value
    assert cbor2.loads(protected) == {1: -257}
    assert unprotected[33] == list(rsa_pki.tam.chain_der)
    tbs_kind, body = cbor2.loads(payload)
    enc = body[otrp_cbor.LABELS["content"]]
    assert tbs_kind == kind and enc.tag == 96
    assert cbor2.loads(enc.value[0]) == {1: 1}  # A128GCM
    assert cbor2.loads(enc.value[3][0][0]) == {1: -40}  # RSA-OAEP
    ec = cose_encrypt(b"x", ec_pki.tee.public_key)
    assert cbor2.loads(ec.value[3][0][0]) == {1: -29}
    assert cose_decrypt(ec, ec_pki.tee.private_key, "x") == b"x"


def test_cose_encrypt_cross_checks_with_pycose(rsa_pki: OtrpPki, ec_pki: OtrpPki) -> None:
    """An independent COSE implementation decrypts what we build (RSA-OAEP and ECDH-ES + A128KW)."""
    from cryptography.hazmat.primitives import serialization
    from pycose.keys import EC2Key, RSAKey
    from pycose.messages import EncMessage

    for pki in (rsa_pki, ec_pki):
        obj = cose_encrypt(b"the DSI", pki.tee.public_key)
        pem = pki.tee.private_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        key = (RSAKey if pki is rsa_pki else EC2Key).from_pem_private_key(pem.decode())
        msg = EncMessage.decode(cbor2.dumps(obj))
        msg.recipients[0].key = key
        assert msg.decrypt(msg.recipients[0]) == b"the DSI"


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_wrong_decryption_key_is_typed(encoding: str, rsa_pki: OtrpPki, other_pki: OtrpPki) -> None:
    codec = codec_for(encoding)
    sealed = codec.seal(all_messages()[2], rsa_pki.tam, rsa_pki.tee.public_key, rsa_pki.tam.chain_der)
    with pytest.raises(OtrpSecurityError, match="decrypt"):
        codec.open(sealed.wire, other_pki.tee.private_key, anchors=[rsa_pki.root.cert])


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_untrusted_signer_is_typed(encoding: str, rsa_pki: OtrpPki, other_pki: OtrpPki) -> None:
    codec = codec_for(encoding)
    sealed = codec.seal(all_messages()[2], other_pki.tam, rsa_pki.tee.public_key, other_pki.tam.chain_der)
    with pytest.raises(OtrpSecurityError):
        codec.open(sealed.wire, rsa_pki.tee.private_key, anchors=[rsa_pki.root.cert])


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_wrong_verify_key_is_typed(encoding: str, rsa_pki: OtrpPki) -> None:
    codec = codec_for(encoding)
    sealed = codec.seal(all_messages()[3], rsa_pki.tee, rsa_pki.tam.public_key)
    with pytest.raises(OtrpSecurityError, match="signature does not verify"):
        codec.open(sealed.wire, rsa_pki.tam.private_key, verify_keys=[rsa_pki.sp.public_key])


def test_json_payload_tamper_and_name_swap(rsa_pki: OtrpPki) -> None:
    codec = codec_for("json")
    sealed = codec.seal(all_messages()[2], rsa_pki.tam, rsa_pki.tee.public_key, rsa_pki.tam.chain_der)
    outer = json.loads(sealed.wire)
    jws = outer["CreateSDRequest"]
    payload = json.loads(base64.urlsafe_b64decode(jws["payload"] + "=="))
    payload["CreateSDTBSRequest"]["tee"] = "Other TEE"
    tampered = dict(jws, payload=base64.urlsafe_b64encode(otrp_json.dumps(payload)).rstrip(b"=").decode())
    with pytest.raises(OtrpSecurityError, match="signature does not verify"):
        codec.open(
            otrp_json.dumps({"CreateSDRequest": tampered}),
            rsa_pki.tee.private_key,
            anchors=[rsa_pki.root.cert],
        )
    with pytest.raises(OtrpSecurityError, match="does not match payload"):
        codec.open(
            otrp_json.dumps({"DeleteSDRequest": jws}), rsa_pki.tee.private_key, anchors=[rsa_pki.root.cert]
        )
    # an alg: none style protected header is refused before any key is tried
    none = dict(jws, protected=base64.urlsafe_b64encode(b'{"alg":"none"}').rstrip(b"=").decode())
    with pytest.raises(OtrpSecurityError, match="only alg"):
        codec.open(
            otrp_json.dumps({"CreateSDRequest": none}), rsa_pki.tee.private_key, anchors=[rsa_pki.root.cert]
        )


def test_cbor_payload_tamper_and_type_swap(rsa_pki: OtrpPki) -> None:
    codec = codec_for("cbor")
    sealed = codec.seal(all_messages()[2], rsa_pki.tam, rsa_pki.tee.public_key, rsa_pki.tam.chain_der)
    kind, sign1 = cbor2.loads(sealed.wire)
    protected, unprotected, payload, sig = sign1.value
    flipped = bytearray(payload)
    flipped[-1] ^= 1
    bad = cbor2.dumps([kind, cbor2.CBORTag(18, [protected, unprotected, bytes(flipped), sig])])
    with pytest.raises(OtrpError):
        codec.open(bad, rsa_pki.tee.private_key, anchors=[rsa_pki.root.cert])
    swapped = cbor2.dumps([otrp_cbor.MESSAGE_TYPE[type(all_messages()[6])], sign1])
    with pytest.raises(OtrpSecurityError, match="does not match payload type"):
        codec.open(swapped, rsa_pki.tee.private_key, anchors=[rsa_pki.root.cert])


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_encrypted_ta_round_trip_and_wrong_key(encoding: str, rsa_pki: OtrpPki, ec_pki: OtrpPki) -> None:
    codec = codec_for(encoding)
    for spaik in (rsa_pki.sp, ec_pki.sp):
        enc = codec.seal_ta(b"TA" * 1000, b"perso", spaik.public_key)
        assert codec.open_ta(enc, spaik.private_key) == (b"TA" * 1000, b"perso")
        upd = codec.seal_ta(b"new", None, spaik.public_key, update=True)
        assert upd.ciphernewtadata is not None and upd.ciphertadata is None
        assert codec.open_ta(upd, spaik.private_key) == (b"new", None)
    enc = codec.seal_ta(b"TA", None, rsa_pki.sp.public_key)
    with pytest.raises(OtrpSecurityError):
        codec.open_ta(enc, rsa_pki.tee.private_key)


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_garbage_is_a_decode_error(encoding: str, rsa_pki: OtrpPki) -> None:
    codec = codec_for(encoding)
    for data in (b"", b"\xff\xfe", b"[]", b"{}", b'{"CreateSDRequest": 1}', b"\x82\x04\x01"):
        with pytest.raises(OtrpDecodeError):
            codec.open(data, rsa_pki.tee.private_key, anchors=[rsa_pki.root.cert])


def test_jose_output_checked_by_hand_written_rfc7518_code(rsa_pki: OtrpPki) -> None:
    """Independent of jwcrypto: verify the RS256 JWS and decrypt the RSA1_5 + A128CBC-HS256 JWE with
    `cryptography` primitives following RFC 7515 §5.2 and RFC 7518 §4.2 / §5.2.2."""
    import hashlib
    import hmac

    from cryptography.hazmat.primitives import hashes, padding
    from cryptography.hazmat.primitives.asymmetric import padding as apad
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    def b64u(text: str) -> bytes:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))

    msg = all_messages()[2]
    wire = codec_for("json").seal(msg, rsa_pki.tam, rsa_pki.tee.public_key, rsa_pki.tam.chain_der).wire
    jws = json.loads(wire)["CreateSDRequest"]
    signing_input = f"{jws['protected']}.{jws['payload']}".encode()
    rsa_pki.tam.public_key.verify(b64u(jws["signature"]), signing_input, apad.PKCS1v15(), hashes.SHA256())

    jwe = json.loads(b64u(jws["payload"]))["CreateSDTBSRequest"]["content"]
    cek = rsa_pki.tee.private_key.decrypt(b64u(jwe["recipients"][0]["encrypted_key"]), apad.PKCS1v15())
    assert len(cek) == 32
    mac_key, enc_key = cek[:16], cek[16:]
    aad = jwe["protected"].encode("ascii")
    iv, ciphertext, tag = b64u(jwe["iv"]), b64u(jwe["ciphertext"]), b64u(jwe["tag"])
    al = (len(aad) * 8).to_bytes(8, "big")
    expected = hmac.new(mac_key, aad + iv + ciphertext + al, hashlib.sha256).digest()[:16]
    assert hmac.compare_digest(expected, tag)
    dec = Cipher(algorithms.AES(enc_key), modes.CBC(iv)).decryptor()
    unpad = padding.PKCS7(128).unpadder()
    plaintext = unpad.update(dec.update(ciphertext) + dec.finalize()) + unpad.finalize()
    assert json.loads(plaintext) == to_tree(msg, text=True)["content"]


def test_cose_sign1_verifies_in_pycose(rsa_pki: OtrpPki, ec_pki: OtrpPki) -> None:
    from cryptography.hazmat.primitives import serialization
    from pycose.keys import EC2Key, RSAKey
    from pycose.messages import Sign1Message

    for pki, key_cls in ((rsa_pki, RSAKey), (ec_pki, EC2Key)):
        wire = codec_for("cbor").seal(all_messages()[0], pki.tam, None, pki.tam.chain_der).wire
        _kind, sign1 = cbor2.loads(wire)
        pem = pki.tam.public_key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        msg = Sign1Message.decode(cbor2.dumps(sign1))
        msg.key = key_cls.from_pem_public_key(pem.decode())
        assert msg.verify_signature()


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_get_device_state_response_with_two_tees(encoding: str, rsa_pki: OtrpPki) -> None:
    codec = codec_for(encoding)
    dsi = DsiDocument(dsi=sample_dsi(rsa_pki.tee.cert_der, rsa_pki.tee.chain_der[1:]))
    tees = tuple(GetDeviceTEEStateResponse(rid="r", tid=f"t{i}", signerreq=False, edsi=dsi) for i in range(2))
    sealed = codec.seal(GetDeviceStateResponse(tees=tees), rsa_pki.tee, rsa_pki.tam.public_key)
    opened = codec.open(sealed.wire, rsa_pki.tam.private_key, anchors=[rsa_pki.root.cert])
    assert isinstance(opened.msg, GetDeviceStateResponse) and opened.msg.tees == tees
    assert set(opened.plaintexts) == {"edsi"}  # the first TEE's DSI bytes (what dsihash covers)


def test_mixed_key_types_pick_algorithms_per_key(tmp_path: object) -> None:
    """An RSA TAM and a P-256 TEE: each side signs with its own key's alg and encrypts for the other's."""
    from pathlib import Path

    from teep_coap.otrp.protocol.session import make_engines, reference_policy, run_session
    from teep_coap.otrp.security.pki import OtrpPki as Pki
    from teep_coap.otrp.security.pki import issue, make_ca

    root = make_ca("mixed root", "RSA")
    pki = Pki(root=root, tam=issue(root, "tam.example", "RSA"), tee=issue(root, "Primary TEE", "EC"),
              sp=issue(root, "sp.example", "EC"))  # fmt: skip
    for encoding in ENCODINGS:
        tam, agent = make_engines(encoding, pki, Path(str(tmp_path)) / encoding, reference_policy(pki, 100))  # type: ignore[arg-type]
        records = run_session(tam, agent)
        assert [r.status for r in tam.results()] == ["pass"] * 4
        if encoding == "json":
            request = json.loads(records[2].wire)["CreateSDRequest"]
            content = json.loads(base64.urlsafe_b64decode(request["payload"] + "=="))["CreateSDTBSRequest"][
                "content"
            ]
            assert request["protected"] == "eyJhbGciOiJSUzI1NiJ9"  # the TAM signs RS256
            assert content["recipients"][0]["header"]["alg"] == "ECDH-ES+A128KW"  # for the P-256 TEE
            response = json.loads(records[3].wire)["CreateSDResponse"]
            assert response["protected"] == "eyJhbGciOiJFUzI1NiJ9"  # the TEE signs ES256
        else:
            _k, sign1 = cbor2.loads(records[3].wire)
            assert cbor2.loads(sign1.value[0]) == {1: -7}
