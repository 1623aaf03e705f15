"""OTrP JSON/JOSE: encrypt-then-sign with jwcrypto, exactly as the draft layers it
(docs/protocol-facts.md §3.1-§3.4).

Sending: the to-be-signed tree gets its `content` / `edsi` members replaced by a JWE (General JSON
serialization, `enc` A128CBC-HS256 in `protected`, `alg` RSA1_5 — or ECDH-ES+A128KW for an EC
recipient — in the recipient's `header`); its JSON text becomes the payload of a flattened JWS whose
`protected` carries only `alg` (RS256 or ES256) and whose unprotected `header` carries the TAM's `x5c`.
Receiving: the outer name is cross-checked with the payload's TBS name, the signature is verified
(with the x5c chain against the trust anchors, or a known key), then the JWEs are decrypted. The one
exception is GetDeviceTEEStateResponse: the TEE's certificate is inside its encrypted DSI, so the TAM
decrypts `edsi` first and verifies with that certificate.

`encrypted_ta` (InstallTA / UpdateTA) is the draft's own envelope: AES-256-CBC over the TA binary with a
key that a JWE wraps for the SP AIK. AES-CBC has no integrity of its own here; the outer JWS covers it.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import padding as sym_padding
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from jwcrypto import jwe, jwk, jws
from jwcrypto.common import JWException

from teep_coap.otrp.encoding import json as otrp_json
from teep_coap.otrp.encoding.tree import b64decode_any, from_tree, parse_broker_error, to_tree
from teep_coap.otrp.model import (
    BY_OUTER_NAME,
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
from teep_coap.otrp.security.pki import (
    OtrpIdentity,
    PrivateKey,
    PublicKey,
    cert_public_key,
    signature_alg,
    verify_chain,
)

JWE_ENC = "A128CBC-HS256"
JWE_ALG_RSA = "RSA1_5"
JWE_ALG_EC = "ECDH-ES+A128KW"
# jwcrypto leaves RSA1_5 out of its default allowed algorithms (RFC 8725 advises against it). OTrP
# mandates it (draft §"Cryptographic algorithms"), so it is allowed here, for OTrP JWEs only.
OTRP_JWE_ALGS = [JWE_ALG_RSA, JWE_ALG_EC, "ECDH-ES+A256KW", JWE_ENC, "A256CBC-HS512"]
JWS_ALGS = ("RS256", "ES256")
TA_KEY_BYTES = 32  # "a 256-bit AES key" [draft]


@dataclass(frozen=True)
class Sealed:
    """A protected message: `wire` bytes, the bare TBS size, and the plaintexts that were encrypted."""

    wire: bytes
    tbs: bytes
    plaintexts: Mapping[str, bytes] = field(default_factory=dict)


@dataclass(frozen=True)
class Opened:
    """A verified and decrypted message.

    `x5c` is the chain the signer sent (empty if none), `signer_cert` the DER certificate whose key
    verified the signature (None when a pre-known key did), `plaintexts` the decrypted member bytes
    (`edsi` is what the TAM hashes into `dsihash`)."""

    msg: OtrpMessage | GetDeviceStateResponse | BrokerError
    tbs: bytes = b""
    x5c: tuple[bytes, ...] = ()
    signer_cert: bytes | None = None
    plaintexts: Mapping[str, bytes] = field(default_factory=dict)
    signed: bool = True
    signer_key: PublicKey | None = None


def _b64url(data: bytes) -> str:

    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


_JWK_CACHE: dict[int, tuple[PrivateKey | PublicKey, jwk.JWK]] = {}


def _jwk(key: PrivateKey | PublicKey) -> jwk.JWK:
    """The jwcrypto JWK of a key, built once: a JWK caches the key object it rebuilds from its
    parameters, and rebuilding an RSA private key (with its consistency check) costs ~50 ms."""
    hit = _JWK_CACHE.get(id(key))
    if hit is not None and hit[0] is key:
        return hit[1]
    if len(_JWK_CACHE) >= 256:
        _JWK_CACHE.pop(next(iter(_JWK_CACHE)))
    made = jwk.JWK.from_pyca(key)
    _JWK_CACHE[id(key)] = (key, made)  # holding `key` keeps its id from being reused
    return made


def jwe_alg_for(key: PublicKey | PrivateKey) -> str:
    """RSA1_5 for RSA recipients (the draft's MUST), ECDH-ES+A128KW for P-256 ones (its option)."""
    if isinstance(key, rsa.RSAPublicKey | rsa.RSAPrivateKey):
        return JWE_ALG_RSA
    if isinstance(key, ec.EllipticCurvePublicKey | ec.EllipticCurvePrivateKey):
        return JWE_ALG_EC
    raise OtrpSecurityError("JWE recipient key must be RSA or EC")


def jwe_encrypt(plaintext: bytes, recipient: PublicKey) -> dict[str, Any]:
    """General JSON serialization with one recipient, as the draft prints it."""
    alg = jwe_alg_for(recipient)
    token = jwe.JWE(
        plaintext, protected=json.dumps({"enc": JWE_ENC}, separators=(",", ":")), algs=OTRP_JWE_ALGS
    )
    token.add_recipient(_jwk(recipient), header=json.dumps({"alg": alg}, separators=(",", ":")))
    flat = json.loads(token.serialize())
    recipient_entry = {"header": flat.pop("header"), "encrypted_key": flat.pop("encrypted_key")}
    return {
        "protected": flat["protected"],
        "recipients": [recipient_entry],
        "iv": flat["iv"],
        "ciphertext": flat["ciphertext"],
        "tag": flat["tag"],
    }


_JWE_GENERAL = {"protected", "recipients", "iv", "ciphertext", "tag", "unprotected", "aad"}
_JWE_FLAT = {"protected", "header", "encrypted_key", "iv", "ciphertext", "tag", "unprotected", "aad"}


def check_jwe_shape(obj: object, what: str) -> None:
    """A General or flattened JWE JSON serialization without AAD; members are base64url text and the
    protected header names an `enc` (no key needed: also used on the draft's placeholder samples)."""
    if not isinstance(obj, Mapping) or not obj:
        raise OtrpDecodeError(what, "expected a JWE object")
    keys = set(obj)
    if not (keys <= _JWE_GENERAL or keys <= _JWE_FLAT) or "ciphertext" not in keys:
        raise OtrpDecodeError(what, f"not a JWE JSON serialization (members {sorted(map(str, keys))[:6]})")
    if "aad" in keys:
        raise OtrpDecodeError(f"{what}.aad", "OTrP does not use JWE AAD")
    for member in ("protected", "iv", "ciphertext", "tag", "encrypted_key"):
        if member in obj:
            if not isinstance(obj[member], str):
                raise OtrpDecodeError(f"{what}.{member}", "expected a base64url string")
            b64decode_any(obj[member], f"{what}.{member}")
    if "protected" not in obj:
        raise OtrpDecodeError(f"{what}.protected", "mandatory member is missing")
    protected = otrp_json.loads(b64decode_any(obj["protected"], f"{what}.protected"), f"{what}.protected")
    if not isinstance(protected, Mapping) or not isinstance(protected.get("enc"), str):
        raise OtrpDecodeError(f"{what}.protected", "must name the content encryption (enc)")
    recipients = obj.get(
        "recipients", [{"header": obj.get("header"), "encrypted_key": obj.get("encrypted_key")}]
    )
    if not isinstance(recipients, list) or len(recipients) != 1 or not isinstance(recipients[0], Mapping):
        raise OtrpDecodeError(f"{what}.recipients", "expected exactly one recipient")
    header = recipients[0].get("header")
    if not isinstance(header, Mapping) or not isinstance(header.get("alg"), str):
        raise OtrpDecodeError(f"{what}.recipients[0].header", "must name the key management alg")
    if not isinstance(recipients[0].get("encrypted_key"), str):
        raise OtrpDecodeError(f"{what}.recipients[0].encrypted_key", "expected a base64url string")


def jwe_decrypt(obj: object, key: PrivateKey | None, what: str) -> bytes:
    """Decrypt a General or flattened JWE (implementations use flattened) with our private key."""
    if key is None:
        raise OtrpSecurityError(f"{what}: no private key to decrypt with")
    check_jwe_shape(obj, what)
    try:
        token = jwe.JWE(algs=OTRP_JWE_ALGS)
        token.deserialize(json.dumps(obj), key=_jwk(key))
        payload = token.payload
    except (JWException, ValueError, TypeError, KeyError) as exc:
        raise OtrpSecurityError(
            f"{what}: JWE does not decrypt: {str(exc)[:100] or type(exc).__name__}"
        ) from None
    if not isinstance(payload, bytes):
        raise OtrpSecurityError(f"{what}: JWE gave no payload")
    return payload


def jws_sign(payload: bytes, signer: OtrpIdentity, x5c: Sequence[bytes] | None) -> dict[str, Any]:
    """Flattened JWS; `protected` = only `alg` [draft]; `header.x5c` = standard base64 DER certs."""

    alg = signer.sig_alg
    token = jws.JWS(payload)
    header = None
    if x5c:
        header = json.dumps(
            {"x5c": [base64.b64encode(c).decode("ascii") for c in x5c]}, separators=(",", ":")
        )
    token.add_signature(
        _jwk(signer.private_key),
        None,
        protected=json.dumps({"alg": alg}, separators=(",", ":")),
        header=header,
    )
    flat: dict[str, Any] = json.loads(token.serialize())
    out = {"payload": flat["payload"], "protected": flat["protected"]}
    if "header" in flat:
        out["header"] = flat["header"]
    out["signature"] = flat["signature"]
    return out


@dataclass(frozen=True)
class JwsParts:
    obj: Mapping[str, Any]
    payload: bytes
    alg: str
    x5c: tuple[bytes, ...]


def parse_flattened_jws(obj: object, what: str) -> JwsParts:
    if not isinstance(obj, Mapping):
        raise OtrpDecodeError(what, "expected a flattened JWS object")
    keys = set(obj)
    if "signatures" in keys:
        raise OtrpDecodeError(what, "OTrP uses the flattened JWS serialization, not the general one")
    if not {"payload", "protected", "signature"} <= keys or not keys <= {
        "payload",
        "protected",
        "header",
        "signature",
    }:
        raise OtrpDecodeError(what, f"not a flattened JWS (members {sorted(map(str, keys))[:6]})")
    for member in ("payload", "protected", "signature"):
        if not isinstance(obj[member], str):
            raise OtrpDecodeError(f"{what}.{member}", "expected a base64url string")
    payload = b64decode_any(obj["payload"], f"{what}.payload")
    protected = otrp_json.loads(b64decode_any(obj["protected"], f"{what}.protected"), f"{what}.protected")
    if not isinstance(protected, Mapping) or set(protected) != {"alg"} or protected["alg"] not in JWS_ALGS:
        raise OtrpAlgorithmError(
            f"{what}.protected: must carry only alg RS256 or ES256, got {protected!r:.60}"
        )
    x5c: tuple[bytes, ...] = ()
    header = obj.get("header")
    if header is not None:
        if not isinstance(header, Mapping):
            raise OtrpDecodeError(f"{what}.header", "expected an object")
        if "alg" in header:
            raise OtrpSecurityError(f"{what}.header: alg must be in the protected header")
        raw = header.get("x5c")
        if raw is not None:
            if isinstance(raw, str):  # GetDeviceStateRequest prose says a string
                raw = [raw]
            if not isinstance(raw, list) or not raw or not all(isinstance(c, str) for c in raw):
                raise OtrpDecodeError(f"{what}.header.x5c", "expected an array of base64 certificates")
            x5c = tuple(b64decode_any(c, f"{what}.header.x5c[{i}]") for i, c in enumerate(raw))
    return JwsParts(obj, payload, str(protected["alg"]), x5c)


def jws_verify(parts: JwsParts, keys: Sequence[PublicKey], what: str) -> PublicKey:
    """The key (of `keys`) that verifies the JWS; `OtrpSecurityError` if none does."""
    if not keys:
        raise OtrpSecurityError(f"{what}: no key to verify the signature with")
    text = json.dumps(dict(parts.obj))
    for key in keys:
        if signature_alg(key) != parts.alg:
            continue
        try:
            token = jws.JWS()
            token.deserialize(text, key=_jwk(key), alg=parts.alg)
            return key
        except (JWException, ValueError, TypeError):
            continue
    raise OtrpSecurityError(f"{what}: signature does not verify ({parts.alg})")


def ta_encrypt(data: bytes, key: bytes, iv: bytes) -> bytes:
    """AES-CBC with PKCS#7 padding ("AESCBC", the draft's default `encrypted_ta.alg`)."""
    padder = sym_padding.PKCS7(128).padder()
    padded = padder.update(data) + padder.finalize()
    enc = Cipher(algorithms.AES(key), modes.CBC(iv)).encryptor()
    return enc.update(padded) + enc.finalize()


def ta_decrypt(data: bytes, key: bytes, iv: bytes) -> bytes:
    if len(data) % 16 or not data:
        raise OtrpSecurityError("encrypted TA is not a whole number of AES blocks")
    dec = Cipher(algorithms.AES(key), modes.CBC(iv)).decryptor()
    padded = dec.update(data) + dec.finalize()
    try:
        unpadder = sym_padding.PKCS7(128).unpadder()
        return unpadder.update(padded) + unpadder.finalize()
    except ValueError:
        raise OtrpSecurityError("encrypted TA has bad padding (wrong key?)") from None


def seal_ta_parts(
    tadata: bytes | None, pdata: bytes | None, update: bool
) -> tuple[bytes, bytes, dict[str, bytes]]:
    """Random AES key and iv, and the encrypted members (shared by the JOSE and COSE codecs)."""
    aes_key = os.urandom(TA_KEY_BYTES)
    iv = os.urandom(16)
    names = ("ciphernewtadata", "ciphernewpdata") if update else ("ciphertadata", "cipherpdata")
    members: dict[str, bytes] = {}
    if tadata is not None:
        members[names[0]] = ta_encrypt(tadata, aes_key, iv)
    if pdata is not None:
        # one iv per envelope in the draft; the personalization data uses the iv with its last byte
        # flipped so the two CBC streams never share an iv under the same key
        members[names[1]] = ta_encrypt(pdata, aes_key, iv[:15] + bytes([iv[15] ^ 0x01]))
    return aes_key, iv, members


def ta_envelope(key: Mapping[str, Any] | bytes, iv: bytes, members: Mapping[str, bytes]) -> EncryptedTA:
    return EncryptedTA(
        key=key,
        iv=iv,
        ciphertadata=members.get("ciphertadata"),
        cipherpdata=members.get("cipherpdata"),
        ciphernewtadata=members.get("ciphernewtadata"),
        ciphernewpdata=members.get("ciphernewpdata"),
    )


def open_ta_parts(enc: EncryptedTA, aes_key: bytes) -> tuple[bytes | None, bytes | None]:
    if len(aes_key) != TA_KEY_BYTES:
        raise OtrpSecurityError(f"encrypted_ta.key must wrap a {TA_KEY_BYTES}-byte AES key")
    ta = enc.ciphertadata if enc.ciphertadata is not None else enc.ciphernewtadata
    pd = enc.cipherpdata if enc.cipherpdata is not None else enc.ciphernewpdata
    piv = enc.iv[:15] + bytes([enc.iv[15] ^ 0x01])
    return (
        ta_decrypt(ta, aes_key, enc.iv) if ta is not None else None,
        ta_decrypt(pd, aes_key, piv) if pd is not None else None,
    )


def dsi_hash(dsi_plaintext: bytes) -> bytes:
    """`dsihash`: SHA-256 of the decrypted DSI bytes as the TEE sent them (the draft leaves the exact
    input open; the plaintext of `edsi`/`content.dsi` is the only thing both sides hold identically)."""
    return hashlib.sha256(dsi_plaintext).digest()


class JoseCodec:
    """OTrP JSON/JOSE wire format (media type application/otrp+json)."""

    name = "json"
    media_type = "application/otrp+json"

    def seal(
        self,
        msg: OtrpMessage | GetDeviceStateResponse,
        signer: OtrpIdentity,
        recipient: PublicKey | None,
        x5c: Sequence[bytes] | None = None,
    ) -> Sealed:
        """Encrypt `content`/`edsi` to `recipient`, sign with `signer`, wrap in the outer name."""
        if isinstance(msg, GetDeviceStateResponse):
            elements = []
            tbs_total = b""
            plaintexts: dict[str, bytes] = {}
            for i, tee in enumerate(msg.tees):
                jws_obj, tbs, pts = self._sign_one(tee, signer, recipient, x5c)
                elements.append({tee.OUTER_NAME: jws_obj})
                tbs_total += tbs
                plaintexts.update({(k if i == 0 else f"{k}[{i}]"): v for k, v in pts.items()})
            return Sealed(otrp_json.dumps({msg.OUTER_NAME: elements}), tbs_total, plaintexts)
        if isinstance(msg, GetDeviceTEEStateResponse):
            return self.seal(GetDeviceStateResponse(tees=(msg,)), signer, recipient, x5c)
        jws_obj, tbs, pts = self._sign_one(msg, signer, recipient, x5c)
        return Sealed(otrp_json.dumps({msg.OUTER_NAME: jws_obj}), tbs, pts)

    def _sign_one(
        self, msg: OtrpMessage, signer: OtrpIdentity, recipient: PublicKey | None, x5c: Sequence[bytes] | None
    ) -> tuple[dict[str, Any], bytes, dict[str, bytes]]:
        body = to_tree(msg, text=True)
        tbs = otrp_json.dumps({msg.TBS_NAME: body})
        plaintexts: dict[str, bytes] = {}
        for member in msg.ENCRYPTED:
            if member in body:
                if recipient is None:
                    raise OtrpSecurityError(f"{msg.TBS_NAME}.{member}: no recipient key to encrypt to")
                plaintexts[member] = otrp_json.dumps(body[member])
                body[member] = jwe_encrypt(plaintexts[member], recipient)
        payload = otrp_json.dumps({msg.TBS_NAME: body})
        return jws_sign(payload, signer, x5c), tbs, plaintexts

    def open(
        self,
        data: bytes,
        decrypt_key: PrivateKey | None,
        verify_keys: Sequence[PublicKey] = (),
        anchors: Sequence[x509.Certificate] = (),
    ) -> Opened:
        """Parse, cross-check names, verify, decrypt. Unsigned Broker errors come back with signed=False."""
        tree = otrp_json.loads(data, "message")
        if not isinstance(tree, Mapping) or len(tree) != 1:
            raise OtrpDecodeError("message", "expected an object with exactly one member naming the message")
        ((outer, value),) = tree.items()
        if outer in ("OTrPBrokerError", "status"):
            return Opened(parse_broker_error(tree, text=True), signed=False)
        if outer == GetDeviceStateResponse.OUTER_NAME:
            if not isinstance(value, list) or not value:
                raise OtrpDecodeError(outer, "expected a non-empty array of per-TEE responses")
            opened = []
            for i, element in enumerate(value):
                where = f"{outer}[{i}]"
                if not isinstance(element, Mapping) or set(element) != {GetDeviceTEEStateResponse.OUTER_NAME}:
                    raise OtrpDecodeError(
                        where, f"expected {{{GetDeviceTEEStateResponse.OUTER_NAME!r}: JWS}}"
                    )
                opened.append(
                    self._open_one(
                        GetDeviceTEEStateResponse,
                        element[GetDeviceTEEStateResponse.OUTER_NAME],
                        where,
                        decrypt_key,
                        verify_keys,
                        anchors,
                    )
                )
            tees = tuple(o.msg for o in opened if isinstance(o.msg, GetDeviceTEEStateResponse))
            first = opened[0]
            return Opened(
                GetDeviceStateResponse(tees=tees),
                b"".join(o.tbs for o in opened),
                first.x5c,
                first.signer_cert,
                first.plaintexts,
                signer_key=first.signer_key,
            )
        cls = BY_OUTER_NAME.get(outer) if isinstance(outer, str) else None
        if cls is None or cls is GetDeviceTEEStateResponse:
            raise OtrpDecodeError(str(outer)[:60], "unknown OTrP message name")
        return self._open_one(cls, value, outer, decrypt_key, verify_keys, anchors)

    def _open_one(
        self,
        cls: type[OtrpMessage],
        jws_obj: object,
        where: str,
        decrypt_key: PrivateKey | None,
        verify_keys: Sequence[PublicKey],
        anchors: Sequence[x509.Certificate],
    ) -> Opened:
        parts = parse_flattened_jws(jws_obj, where)
        payload = otrp_json.loads(parts.payload, f"{where}.payload")
        if not isinstance(payload, Mapping) or len(payload) != 1:
            raise OtrpDecodeError(f"{where}.payload", "expected one member naming the TBS object")
        ((tbs_name, body),) = payload.items()
        if tbs_name != cls.TBS_NAME:
            raise OtrpSecurityError(f"outer name {where!r} does not match payload {str(tbs_name)[:60]!r}")
        if not isinstance(body, Mapping):
            raise OtrpDecodeError(tbs_name, "expected an object")
        body = dict(body)
        plaintexts: dict[str, bytes] = {}
        signer_cert: bytes | None = None
        keys: list[PublicKey] = list(verify_keys)
        if parts.x5c:
            if anchors:
                keys = [cert_public_key(verify_chain(parts.x5c, anchors))]
                signer_cert = parts.x5c[0]
            elif not keys:
                raise OtrpUntrustedError(f"{where}: x5c present but no trust anchors to validate it")
        elif not keys and cls is GetDeviceTEEStateResponse and "edsi" in body:
            # the TEE's certificate travels inside its encrypted DSI: decrypt first, then verify
            plaintexts["edsi"] = jwe_decrypt(body["edsi"], decrypt_key, f"{tbs_name}.edsi")
            doc = from_tree(
                DsiDocument, otrp_json.loads(plaintexts["edsi"], "edsi"), True, f"{tbs_name}.edsi"
            )
            chain = (doc.dsi.tee.cert, *doc.dsi.tee.cacert)
            if not anchors:
                raise OtrpUntrustedError(f"{where}: no trust anchors to validate the TEE certificate")
            keys = [cert_public_key(verify_chain(chain, anchors))]
            signer_cert = doc.dsi.tee.cert
        used = jws_verify(parts, keys, where)
        for member in cls.ENCRYPTED:
            if member in body:
                if member not in plaintexts:
                    plaintexts[member] = jwe_decrypt(body[member], decrypt_key, f"{tbs_name}.{member}")
                body[member] = otrp_json.loads(plaintexts[member], f"{tbs_name}.{member}")
        msg = from_tree(cls, body, True, tbs_name)
        return Opened(
            msg, otrp_json.dumps({tbs_name: body}), parts.x5c, signer_cert, plaintexts, signer_key=used
        )

    def peek(self, data: bytes) -> tuple[type[OtrpMessage] | None, str, str]:
        """Message class, rid and tid read WITHOUT verification: only to address an error response."""
        cls: type[OtrpMessage] | None = None
        try:
            tree = otrp_json.loads(data, "message")
            ((outer, value),) = tree.items()
            if outer == BrokerError.OUTER_NAME:  # unsigned: rid/tid in clear
                rid, tid = value.get("rid", ""), value.get("tid", "")
                return None, rid if isinstance(rid, str) else "", tid if isinstance(tid, str) else ""
            if outer == GetDeviceStateResponse.OUTER_NAME:  # the first TEE's JWS
                outer, value = (
                    GetDeviceTEEStateResponse.OUTER_NAME,
                    value[0][GetDeviceTEEStateResponse.OUTER_NAME],
                )
            cls = BY_OUTER_NAME.get(outer)
            assert cls is not None
            body = otrp_json.loads(b64decode_any(value["payload"], "payload"))[cls.TBS_NAME]
            rid, tid = body.get("rid", ""), body.get("tid", "")
            return cls, rid if isinstance(rid, str) else "", tid if isinstance(tid, str) else ""
        except Exception:
            return cls, "", ""

    def encode_unsigned(self, err: BrokerError) -> bytes:
        return otrp_json.dumps({err.OUTER_NAME: to_tree(err, text=True)})

    def seal_ta(
        self, tadata: bytes | None, pdata: bytes | None, spaik: PublicKey, update: bool = False
    ) -> EncryptedTA:
        aes_key, iv, members = seal_ta_parts(tadata, pdata, update)
        return ta_envelope(jwe_encrypt(aes_key, spaik), iv, members)

    def open_ta(self, enc: EncryptedTA, spaik: PrivateKey) -> tuple[bytes | None, bytes | None]:
        if isinstance(enc.key, bytes):
            raise OtrpSecurityError("encrypted_ta.key is not a JWE (plain key material is refused)")
        return open_ta_parts(enc, jwe_decrypt(enc.key, spaik, "encrypted_ta.key"))

    def decode_bare(self, data: bytes) -> OtrpMessage:
        return otrp_json.decode_tbs(data)


def describe_unverified(data: bytes) -> dict[str, Any]:
    """Structure of a JSON OTrP message without any key: JWS payloads decoded (NOT verified), JWEs
    summarized (they stay encrypted)."""
    tree = otrp_json.loads(data, "message")
    known = {*BY_OUTER_NAME, GetDeviceStateResponse.OUTER_NAME, "OTrPBrokerError", "status"}
    if not isinstance(tree, Mapping) or len(tree) != 1 or next(iter(tree)) not in known:
        raise OtrpDecodeError("message", "not an OTrP message (one member naming a known message expected)")

    def unwrap(obj: Any) -> Any:
        if isinstance(obj, Mapping) and "payload" in obj and "signature" in obj:
            parts = parse_flattened_jws(obj, "JWS")
            return {
                "alg": parts.alg,
                "x5c_certs": len(parts.x5c),
                "payload": unwrap(otrp_json.loads(parts.payload)),
            }
        if isinstance(obj, Mapping) and "ciphertext" in obj:
            check_jwe_shape(obj, "JWE")
            prot = otrp_json.loads(b64decode_any(obj["protected"], "protected"))
            rec = obj.get("recipients", [obj])[0]
            return {
                "JWE": {
                    "enc": prot.get("enc"),
                    "alg": (rec.get("header") or {}).get("alg"),
                    "ciphertext_bytes": len(b64decode_any(obj["ciphertext"], "ciphertext")),
                }
            }
        if isinstance(obj, list):
            return [unwrap(v) for v in obj]
        if isinstance(obj, Mapping):
            return {k: unwrap(v) for k, v in obj.items()}
        return obj

    return {"unverified": True, "message": unwrap(tree)}


__all__ = ["JoseCodec", "Opened", "Sealed", "_b64url", "dsi_hash", "jwe_decrypt", "jwe_encrypt", "jws_sign"]
