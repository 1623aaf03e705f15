"""OTrP CBOR/COSE: the local mapping of the JOSE layering (docs/otrp-cbor-mapping.md).

* JWS flattened → COSE_Sign1 (tag 18), signed with python-cwt: protected `{1: alg}` (RS256 -257 or
  ES256 -7, only alg, like the JWS), unprotected `{33: x5chain}` (RFC 9360) for the TAM's chain.
* JWE → COSE_Encrypt (tag 96): content A128GCM (1) — A128CBC-HS256 has no COSE id — and one recipient:
  RSAES-OAEP w/ SHA-1 (-40, RFC 8230) for RSA keys — RSA1_5 has no COSE id — or ECDH-ES + A128KW (-29,
  RFC 9053 §6.4, HKDF-SHA-256) for P-256 keys.
  Hand-built with cbor2 + cryptography: cwt 3.3 has no RSA-OAEP recipient, and doing the ECDH one here
  as well keeps a single, small, readable code path for both (about 60 lines).
* Outer `{"<Cmd>Request": JWS}` → `[type, COSE_Sign1]`; GetDeviceStateResponse → `[2, [COSE_Sign1, ...]]`;
  the unsigned Broker error → `[16, {members}]`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import cbor2
from cryptography import x509
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.keywrap import InvalidUnwrap, aes_key_unwrap, aes_key_wrap
from cwt import COSE, COSEKey

from teep_coap.otrp.encoding import cbor as otrp_cbor
from teep_coap.otrp.encoding.tree import from_tree, to_tree
from teep_coap.otrp.model import (
    BrokerError,
    DsiDocument,
    EncryptedTA,
    GetDeviceStateResponse,
    GetDeviceTEEStateResponse,
    OtrpAlgorithmError,
    OtrpDecodeError,
    OtrpMessage,
    OtrpSecurityError,
    OtrpUntrustedError,
)
from teep_coap.otrp.security.jose import Opened, Sealed, open_ta_parts, seal_ta_parts, ta_envelope
from teep_coap.otrp.security.pki import (
    OtrpIdentity,
    PrivateKey,
    PublicKey,
    cert_public_key,
    signature_alg,
    verify_chain,
)

TAG_SIGN1 = 18
TAG_ENCRYPT = 96
HDR_ALG = 1
HDR_IV = 5
HDR_EPHEMERAL = -1
HDR_X5CHAIN = 33
ALG_A128GCM = 1
ALG_A128KW = -3
ALG_ECDH_ES_A128KW = -29
ALG_RSA_OAEP = -40
COSE_SIG_ALGS = {"RS256": -257, "ES256": -7}
COSE_SIG_NAMES = {v: k for k, v in COSE_SIG_ALGS.items()}


# ---------------------------------------------------------------------------------------------- COSE_Encrypt


def _kdf_context(recipient_protected: bytes) -> bytes:
    """COSE_KDF_Context for ECDH-ES + A128KW (RFC 9053 §5.2): no party info, 128-bit key."""
    return cbor2.dumps([ALG_A128KW, [None, None, None], [None, None, None], [128, recipient_protected]])


def _ec_kek(
    private: ec.EllipticCurvePrivateKey, public: ec.EllipticCurvePublicKey, r_protected: bytes
) -> bytes:
    shared = private.exchange(ec.ECDH(), public)
    return HKDF(hashes.SHA256(), 16, salt=None, info=_kdf_context(r_protected)).derive(shared)


def cose_encrypt(plaintext: bytes, recipient: PublicKey) -> cbor2.CBORTag:
    """COSE_Encrypt with one recipient (the key is wrapped for `recipient`)."""
    cek = AESGCM.generate_key(128)
    if isinstance(recipient, rsa.RSAPublicKey):
        r_protected = cbor2.dumps({HDR_ALG: ALG_RSA_OAEP})
        wrapped = recipient.encrypt(cek, padding.OAEP(padding.MGF1(hashes.SHA1()), hashes.SHA1(), None))
        r_unprotected: dict[int, Any] = {}
    elif isinstance(recipient, ec.EllipticCurvePublicKey):
        r_protected = cbor2.dumps({HDR_ALG: ALG_ECDH_ES_A128KW})
        eph = ec.generate_private_key(recipient.curve)
        nums = eph.public_key().public_numbers()
        r_unprotected = {
            HDR_EPHEMERAL: {1: 2, -1: 1, -2: nums.x.to_bytes(32, "big"), -3: nums.y.to_bytes(32, "big")}
        }
        wrapped = aes_key_wrap(_ec_kek(eph, recipient, r_protected), cek)
    else:
        raise OtrpSecurityError("COSE_Encrypt recipient key must be RSA or P-256")
    protected = cbor2.dumps({HDR_ALG: ALG_A128GCM})
    iv = os.urandom(12)
    aad = cbor2.dumps(["Encrypt", protected, b""])
    ciphertext = AESGCM(cek).encrypt(iv, plaintext, aad)
    return cbor2.CBORTag(
        TAG_ENCRYPT, [protected, {HDR_IV: iv}, ciphertext, [[r_protected, r_unprotected, wrapped]]]
    )


def _header_map(raw: object, what: str) -> dict[Any, Any]:
    if not isinstance(raw, bytes):
        raise OtrpDecodeError(what, "protected header must be a byte string")
    if raw == b"":
        return {}
    value = otrp_cbor.loads(raw, what)
    if not isinstance(value, dict):
        raise OtrpDecodeError(what, "protected header is not a map")
    return value


def cose_decrypt(obj: object, key: PrivateKey | None, what: str) -> bytes:
    """Decrypt a COSE_Encrypt (tag 96) made by `cose_encrypt` (or any peer using the same algorithms)."""
    if key is None:
        raise OtrpSecurityError(f"{what}: no private key to decrypt with")
    if isinstance(obj, bytes):
        obj = otrp_cbor.loads(obj, what)
    if not isinstance(obj, cbor2.CBORTag) or obj.tag != TAG_ENCRYPT:
        raise OtrpDecodeError(what, "expected a COSE_Encrypt (tag 96)")
    body = obj.value
    if not isinstance(body, list) or len(body) != 4 or not isinstance(body[1], dict):
        raise OtrpDecodeError(what, "COSE_Encrypt must be [protected, unprotected, ciphertext, recipients]")
    protected_raw, unprotected, ciphertext, recipients = body
    protected = _header_map(protected_raw, f"{what}.protected")
    if protected.get(HDR_ALG) != ALG_A128GCM:
        raise OtrpAlgorithmError(f"{what}: content algorithm must be A128GCM (1)")
    iv = unprotected.get(HDR_IV)
    if not isinstance(iv, bytes) or len(iv) != 12 or not isinstance(ciphertext, bytes):
        raise OtrpDecodeError(what, "needs a 12-byte iv (label 5) and a byte-string ciphertext")
    if not isinstance(recipients, list) or len(recipients) != 1:
        raise OtrpDecodeError(f"{what}.recipients", "expected exactly one recipient")
    rec = recipients[0]
    if (
        not isinstance(rec, list)
        or len(rec) != 3
        or not isinstance(rec[1], dict)
        or not isinstance(rec[2], bytes)
    ):
        raise OtrpDecodeError(f"{what}.recipients[0]", "expected [protected, unprotected, encrypted_key]")
    r_protected_raw, r_unprotected, wrapped = rec
    r_alg = _header_map(r_protected_raw, f"{what}.recipients[0].protected").get(HDR_ALG)
    try:
        if r_alg == ALG_RSA_OAEP and isinstance(key, rsa.RSAPrivateKey):
            cek = key.decrypt(wrapped, padding.OAEP(padding.MGF1(hashes.SHA1()), hashes.SHA1(), None))
        elif r_alg == ALG_ECDH_ES_A128KW and isinstance(key, ec.EllipticCurvePrivateKey):
            epk = r_unprotected.get(HDR_EPHEMERAL)
            if not isinstance(epk, dict) or epk.get(1) != 2 or epk.get(-1) != 1:
                raise OtrpDecodeError(
                    f"{what}.recipients[0]", "ephemeral key (-1) must be an EC2 P-256 COSE_Key"
                )
            x, y = epk.get(-2), epk.get(-3)
            if not isinstance(x, bytes) or not isinstance(y, bytes) or len(x) != 32 or len(y) != 32:
                raise OtrpDecodeError(f"{what}.recipients[0]", "ephemeral key needs 32-byte x and y")
            try:
                eph = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), b"\x04" + x + y)
            except ValueError:
                raise OtrpSecurityError(f"{what}: ephemeral key is not on P-256") from None
            cek = aes_key_unwrap(_ec_kek(key, eph, r_protected_raw), wrapped)
        else:
            raise OtrpSecurityError(f"{what}: recipient algorithm {r_alg!r:.10} does not fit our key")
        aad = cbor2.dumps(["Encrypt", protected_raw, b""])
        return AESGCM(cek).decrypt(iv, ciphertext, aad)
    except (ValueError, InvalidTag, InvalidUnwrap) as exc:
        raise OtrpSecurityError(f"{what}: COSE_Encrypt does not decrypt ({type(exc).__name__})") from None


# ---------------------------------------------------------------------------------------------- COSE_Sign1


_KEY_CACHE: dict[int, tuple[PrivateKey | PublicKey, Any]] = {}


def _cose_key(key: PrivateKey | PublicKey) -> Any:
    """cwt COSEKey of a key, built once per key object (PEM round trip plus RSA checks are slow)."""
    hit = _KEY_CACHE.get(id(key))
    if hit is not None and hit[0] is key:
        return hit[1]
    alg = signature_alg(key)
    if isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    else:
        pem = key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    if len(_KEY_CACHE) >= 256:
        _KEY_CACHE.pop(next(iter(_KEY_CACHE)))
    made = COSEKey.from_pem(pem, alg=alg)
    _KEY_CACHE[id(key)] = (key, made)
    return made


def sign1(payload: bytes, signer: OtrpIdentity, x5c: Sequence[bytes] | None) -> cbor2.CBORTag:
    unprotected: dict[int, Any] = {}
    if x5c:
        unprotected[HDR_X5CHAIN] = x5c[0] if len(x5c) == 1 else list(x5c)
    ctx = COSE.new(alg_auto_inclusion=False)
    encoded = ctx.encode_and_sign(
        payload,
        key=_cose_key(signer.private_key),
        protected={HDR_ALG: COSE_SIG_ALGS[signer.sig_alg]},
        unprotected=unprotected,
    )
    tag = cbor2.loads(encoded)
    assert isinstance(tag, cbor2.CBORTag)
    return tag


def _sign1_parts(obj: object, what: str) -> tuple[bytes, str, tuple[bytes, ...]]:
    if not isinstance(obj, cbor2.CBORTag) or obj.tag != TAG_SIGN1:
        raise OtrpDecodeError(what, "expected a COSE_Sign1 (tag 18)")
    body = obj.value
    if not isinstance(body, list) or len(body) != 4:
        raise OtrpDecodeError(what, "COSE_Sign1 must have 4 elements")
    protected_raw, unprotected, payload, signature = body
    if (
        not isinstance(unprotected, dict)
        or not isinstance(payload, bytes)
        or not isinstance(signature, bytes)
    ):
        raise OtrpDecodeError(what, "COSE_Sign1 elements have the wrong types")
    protected = _header_map(protected_raw, f"{what}.protected")
    if set(protected) != {HDR_ALG} or protected[HDR_ALG] not in COSE_SIG_NAMES:
        raise OtrpAlgorithmError(f"{what}.protected: must carry only alg RS256 (-257) or ES256 (-7)")
    if HDR_ALG in unprotected:
        raise OtrpSecurityError(f"{what}: alg must be in the protected header")
    unknown = set(unprotected) - {HDR_X5CHAIN}
    if unknown:
        raise OtrpDecodeError(f"{what}.unprotected", f"unknown header {sorted(map(repr, unknown))[0]:.20}")
    x5c: tuple[bytes, ...] = ()
    raw = unprotected.get(HDR_X5CHAIN)
    if raw is not None:
        if isinstance(raw, bytes):
            x5c = (raw,)
        elif isinstance(raw, list) and raw and all(isinstance(c, bytes) for c in raw):
            x5c = tuple(raw)
        else:
            raise OtrpDecodeError(f"{what}.x5chain", "expected a certificate or an array of certificates")
    return payload, COSE_SIG_NAMES[protected[HDR_ALG]], x5c


def verify1(obj: cbor2.CBORTag, alg: str, keys: Sequence[PublicKey], what: str) -> PublicKey:
    if not keys:
        raise OtrpSecurityError(f"{what}: no key to verify the signature with")
    encoded = cbor2.dumps(obj)
    for key in keys:
        if signature_alg(key) != alg:
            continue
        try:
            COSE.new().decode(encoded, keys=[_cose_key(key)])
            return key
        except Exception:
            continue
    raise OtrpSecurityError(f"{what}: signature does not verify ({alg})")


# ---------------------------------------------------------------------------------------------- codec


class CoseCodec:
    """OTrP CBOR/COSE wire format (local mapping; see module doc)."""

    name = "cbor"
    media_type = "application/otrp+cbor"  # not registered: local, non-interoperable profile

    def seal(
        self,
        msg: OtrpMessage | GetDeviceStateResponse,
        signer: OtrpIdentity,
        recipient: PublicKey | None,
        x5c: Sequence[bytes] | None = None,
    ) -> Sealed:
        if isinstance(msg, GetDeviceTEEStateResponse):
            msg = GetDeviceStateResponse(tees=(msg,))
        if isinstance(msg, GetDeviceStateResponse):
            elements = []
            tbs_total = b""
            plaintexts: dict[str, bytes] = {}
            for i, tee in enumerate(msg.tees):
                sign1_obj, tbs, pts = self._sign_one(tee, signer, recipient, x5c)
                elements.append(sign1_obj)
                tbs_total += tbs
                plaintexts.update({(k if i == 0 else f"{k}[{i}]"): v for k, v in pts.items()})
            return Sealed(
                otrp_cbor.dumps([otrp_cbor.TYPE_GET_DEVICE_STATE_RESPONSE, elements]), tbs_total, plaintexts
            )
        sign1_obj, tbs, pts = self._sign_one(msg, signer, recipient, x5c)
        return Sealed(otrp_cbor.dumps([otrp_cbor.MESSAGE_TYPE[type(msg)], sign1_obj]), tbs, pts)

    def _sign_one(
        self, msg: OtrpMessage, signer: OtrpIdentity, recipient: PublicKey | None, x5c: Sequence[bytes] | None
    ) -> tuple[cbor2.CBORTag, bytes, dict[str, bytes]]:
        item = otrp_cbor.tbs_item(msg)
        tbs = otrp_cbor.dumps(item)
        body: dict[int, Any] = item[1]
        plaintexts: dict[str, bytes] = {}
        for member in msg.ENCRYPTED:
            label = otrp_cbor.LABELS[member]
            if label in body:
                if recipient is None:
                    raise OtrpSecurityError(f"{msg.TBS_NAME}.{member}: no recipient key to encrypt to")
                plaintexts[member] = otrp_cbor.dumps(body[label])
                body[label] = cose_encrypt(plaintexts[member], recipient)
        payload = otrp_cbor.dumps([item[0], body])
        return sign1(payload, signer, x5c), tbs, plaintexts

    def open(
        self,
        data: bytes,
        decrypt_key: PrivateKey | None,
        verify_keys: Sequence[PublicKey] = (),
        anchors: Sequence[x509.Certificate] = (),
    ) -> Opened:
        outer = otrp_cbor.loads(data, "message")
        if not isinstance(outer, list) or len(outer) != 2 or not isinstance(outer[0], int):
            raise OtrpDecodeError("message", "expected [type, COSE_Sign1]")
        kind, value = outer
        if kind == otrp_cbor.TYPE_BROKER_ERROR:
            return Opened(
                from_tree(
                    BrokerError, otrp_cbor.labels_in(value, "OTrPBrokerError"), False, "OTrPBrokerError"
                ),
                signed=False,
            )
        if kind == otrp_cbor.TYPE_GET_DEVICE_STATE_RESPONSE:
            if not isinstance(value, list) or not value:
                raise OtrpDecodeError("GetDeviceStateResponse", "expected a non-empty array of COSE_Sign1")
            opened = [
                self._open_one(
                    GetDeviceTEEStateResponse,
                    v,
                    f"GetDeviceStateResponse[{i}]",
                    decrypt_key,
                    verify_keys,
                    anchors,
                )
                for i, v in enumerate(value)
            ]
            first = opened[0]
            return Opened(
                GetDeviceStateResponse(tees=tuple(o.msg for o in opened)),  # type: ignore[misc]
                b"".join(o.tbs for o in opened),
                first.x5c,
                first.signer_cert,
                first.plaintexts,
                signer_key=first.signer_key,
            )
        cls = otrp_cbor.TYPE_TO_CLASS.get(kind)
        if cls is None or cls is GetDeviceTEEStateResponse:
            raise OtrpDecodeError("message", f"unknown OTrP message type {kind!r:.20}")
        return self._open_one(cls, value, cls.OUTER_NAME, decrypt_key, verify_keys, anchors)

    def _open_one(
        self,
        cls: type[OtrpMessage],
        obj: object,
        where: str,
        decrypt_key: PrivateKey | None,
        verify_keys: Sequence[PublicKey],
        anchors: Sequence[x509.Certificate],
    ) -> Opened:
        payload, alg, x5c = _sign1_parts(obj, where)
        item = otrp_cbor.loads(payload, f"{where}.payload")
        if not isinstance(item, list) or len(item) != 2 or not isinstance(item[1], dict):
            raise OtrpDecodeError(f"{where}.payload", "expected [type, {members}]")
        if item[0] != otrp_cbor.MESSAGE_TYPE[cls]:
            raise OtrpSecurityError(f"outer type of {where} does not match payload type {item[0]!r:.20}")
        body: dict[Any, Any] = dict(item[1])
        plaintexts: dict[str, bytes] = {}
        signer_cert: bytes | None = None
        keys: list[PublicKey] = list(verify_keys)
        edsi_label = otrp_cbor.LABELS["edsi"]
        if x5c:
            if anchors:
                keys = [cert_public_key(verify_chain(x5c, anchors))]
                signer_cert = x5c[0]
            elif not keys:
                raise OtrpUntrustedError(f"{where}: x5chain present but no trust anchors to validate it")
        elif not keys and cls is GetDeviceTEEStateResponse and edsi_label in body:
            plaintexts["edsi"] = cose_decrypt(body[edsi_label], decrypt_key, f"{cls.TBS_NAME}.edsi")
            doc_tree = otrp_cbor.labels_in(otrp_cbor.loads(plaintexts["edsi"], "edsi"), "edsi")
            doc = from_tree(DsiDocument, doc_tree, False, f"{cls.TBS_NAME}.edsi")
            if not anchors:
                raise OtrpUntrustedError(f"{where}: no trust anchors to validate the TEE certificate")
            keys = [cert_public_key(verify_chain((doc.dsi.tee.cert, *doc.dsi.tee.cacert), anchors))]
            signer_cert = doc.dsi.tee.cert
        assert isinstance(obj, cbor2.CBORTag)
        used = verify1(obj, alg, keys, where)
        for member in cls.ENCRYPTED:
            label = otrp_cbor.LABELS[member]
            if label in body:
                if member not in plaintexts:
                    plaintexts[member] = cose_decrypt(body[label], decrypt_key, f"{cls.TBS_NAME}.{member}")
                body[label] = otrp_cbor.loads(plaintexts[member], f"{cls.TBS_NAME}.{member}")
        named = otrp_cbor.labels_in(body, cls.TBS_NAME)
        msg = from_tree(cls, named, False, cls.TBS_NAME)
        return Opened(msg, otrp_cbor.dumps([item[0], body]), x5c, signer_cert, plaintexts, signer_key=used)

    def peek(self, data: bytes) -> tuple[type[OtrpMessage] | None, str, str]:
        """Message class, rid and tid read WITHOUT verification: only to address an error response."""
        cls: type[OtrpMessage] | None = None
        try:
            kind, value = otrp_cbor.loads(data, "message")
            if kind == otrp_cbor.TYPE_BROKER_ERROR:  # unsigned: rid/tid in clear
                rid, tid = value.get(otrp_cbor.LABELS["rid"], ""), value.get(otrp_cbor.LABELS["tid"], "")
                return None, rid if isinstance(rid, str) else "", tid if isinstance(tid, str) else ""
            if kind == otrp_cbor.TYPE_GET_DEVICE_STATE_RESPONSE:  # the first TEE's COSE_Sign1
                kind, value = otrp_cbor.MESSAGE_TYPE[GetDeviceTEEStateResponse], value[0]
            cls = otrp_cbor.TYPE_TO_CLASS.get(kind)
            item = otrp_cbor.loads(value.value[2], "payload")
            rid, tid = item[1].get(otrp_cbor.LABELS["rid"], ""), item[1].get(otrp_cbor.LABELS["tid"], "")
            return cls, rid if isinstance(rid, str) else "", tid if isinstance(tid, str) else ""
        except Exception:
            return cls, "", ""

    def encode_unsigned(self, err: BrokerError) -> bytes:
        return otrp_cbor.dumps([otrp_cbor.TYPE_BROKER_ERROR, otrp_cbor.labels_out(to_tree(err, text=False))])

    def seal_ta(
        self, tadata: bytes | None, pdata: bytes | None, spaik: PublicKey, update: bool = False
    ) -> EncryptedTA:
        aes_key, iv, members = seal_ta_parts(tadata, pdata, update)
        return ta_envelope(otrp_cbor.dumps(cose_encrypt(aes_key, spaik)), iv, members)

    def open_ta(self, enc: EncryptedTA, spaik: PrivateKey) -> tuple[bytes | None, bytes | None]:
        if not isinstance(enc.key, bytes):
            raise OtrpSecurityError("encrypted_ta.key must be a COSE_Encrypt byte string")
        return open_ta_parts(enc, cose_decrypt(enc.key, spaik, "encrypted_ta.key"))

    def decode_bare(self, data: bytes) -> OtrpMessage:
        return otrp_cbor.decode_tbs(data)


def describe_unverified(data: bytes) -> dict[str, Any]:
    """Structure of a CBOR OTrP message without keys: COSE_Sign1 payloads decoded and relabelled,
    COSE_Encrypt members shown as such."""

    def show(obj: Any) -> Any:
        if isinstance(obj, cbor2.CBORTag) and obj.tag == TAG_SIGN1:
            payload, alg, x5c = _sign1_parts(obj, "COSE_Sign1")
            item = otrp_cbor.loads(payload, "payload")
            cls_name = "?"
            if isinstance(item, list) and len(item) == 2:
                cls = otrp_cbor.TYPE_TO_CLASS.get(item[0])
                cls_name = cls.TBS_NAME if cls else repr(item[0])
                item = {
                    cls_name: {otrp_cbor.NAMES.get(k, k): show(v) for k, v in item[1].items()}
                    if isinstance(item[1], dict)
                    else item[1]
                }
            return {"COSE_Sign1": {"alg": alg, "x5chain_certs": len(x5c), "payload": item}}
        if isinstance(obj, cbor2.CBORTag) and obj.tag == TAG_ENCRYPT:
            return {"COSE_Encrypt": f"<{len(cbor2.dumps(obj))} bytes, encrypted>"}
        if isinstance(obj, list):
            return [show(v) for v in obj]
        if isinstance(obj, Mapping):
            return {otrp_cbor.NAMES.get(k, k) if isinstance(k, int) else k: show(v) for k, v in obj.items()}
        if isinstance(obj, bytes):
            return f"h'{obj[:24].hex()}{'…' if len(obj) > 24 else ''}' ({len(obj)} bytes)"
        return obj

    outer = otrp_cbor.loads(data, "message")
    return {"unverified": True, "message": show(outer)}
