"""What both OTrP engines share: the codec of an encoding and the bytes `dsihash` is computed over."""

from __future__ import annotations

import hashlib
from typing import Literal, Protocol

from cryptography import x509

from teep_coap.otrp.encoding import cbor as otrp_cbor
from teep_coap.otrp.encoding import json as otrp_json
from teep_coap.otrp.encoding.tree import to_tree
from teep_coap.otrp.model import (
    BrokerError,
    DsiDocument,
    EncryptedTA,
    GetDeviceStateResponse,
    OtrpError,
    OtrpMessage,
)
from teep_coap.otrp.security.cose import CoseCodec
from teep_coap.otrp.security.jose import JoseCodec, Opened, Sealed
from teep_coap.otrp.security.pki import OtrpIdentity, PrivateKey, PublicKey

Encoding = Literal["json", "cbor"]


class OtrpCodec(Protocol):
    """The wire format of one encoding (`JoseCodec` or `CoseCodec`)."""

    name: str
    media_type: str

    def seal(
        self,
        msg: OtrpMessage | GetDeviceStateResponse,
        signer: OtrpIdentity,
        recipient: PublicKey | None,
        x5c: tuple[bytes, ...] | None = None,
    ) -> Sealed: ...

    def open(
        self,
        data: bytes,
        decrypt_key: PrivateKey | None,
        verify_keys: list[PublicKey] | tuple[PublicKey, ...] = (),
        anchors: list[x509.Certificate] | tuple[x509.Certificate, ...] = (),
    ) -> Opened: ...

    def peek(self, data: bytes) -> tuple[type[OtrpMessage] | None, str, str]: ...

    def encode_unsigned(self, err: BrokerError) -> bytes: ...

    def seal_ta(
        self, tadata: bytes | None, pdata: bytes | None, spaik: PublicKey, update: bool = False
    ) -> EncryptedTA: ...

    def open_ta(self, enc: EncryptedTA, spaik: PrivateKey) -> tuple[bytes | None, bytes | None]: ...


def codec_for(encoding: str) -> OtrpCodec:
    if encoding == "json":
        return JoseCodec()
    if encoding == "cbor":
        return CoseCodec()
    raise OtrpError(f"unknown OTrP encoding {encoding!r}; use json or cbor")


def dsi_digest(encoding: str, doc: DsiDocument) -> bytes:
    """`dsihash`: SHA-256 of `{"dsi": ...}` in the session's encoding, written by our deterministic
    encoder. The draft never says which bytes are hashed; both of our roles re-encode the DSI the same
    way, which also covers a DSI that came back inside a response's `content`."""
    if encoding == "json":
        data = otrp_json.dumps(to_tree(doc, text=True))
    else:
        data = otrp_cbor.dumps(otrp_cbor.labels_out(to_tree(doc, text=False)))
    return hashlib.sha256(data).digest()
