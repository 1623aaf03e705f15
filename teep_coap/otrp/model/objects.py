"""OTrP objects below the messages: errors, error codes, member tables, the DSI and the content objects.

The model is the *decrypted* view of a message: `content` and `edsi` hold their plaintext objects, while
`encrypted_ta` stays the draft's envelope (its TA binary is encrypted to the SP AIK, not to the TEE, so
it is part of the to-be-signed object as is). Attribute names are the draft's member names.

Each class's `MEMBERS` table names its members, their wire names and kinds; otrp/encoding/tree.py turns
objects into JSON-like trees and back by that table, and `check` holds the rules across members.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from teep_coap.errors import TeepCoapError

OTRP_VERSION = "1.0"
MEDIA_TYPE_OTRP_JSON = "application/otrp+json"


class OtrpError(TeepCoapError):
    """Root of all deliberate OTrP failures."""


class OtrpDecodeError(OtrpError):
    """A message (or one of its members) is not what the draft defines; `path` names the member."""

    def __init__(self, path: str, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = path
        self.problem = problem


class OtrpSecurityError(OtrpError):
    """Signature, decryption or certificate failure (the TEE answers ERR_REQUEST_INVALID / _NOT_TRUSTED)."""


class OtrpUntrustedError(OtrpSecurityError):
    """A certificate chain that does not reach a trust anchor (or is expired): ERR_TAM_NOT_TRUSTED."""


class OtrpAlgorithmError(OtrpSecurityError):
    """An algorithm outside the profile (JWS/COSE, content or key wrap): ERR_UNSUPPORTED_CRYPTO_ALG."""


class OtrpProtocolError(OtrpError):
    """A well-formed message that does not fit the session (wrong rid, unexpected type, ...)."""


class OtrpIdentityMismatch(OtrpProtocolError):
    """The transport's peer identity (DTLS PSK identity, OSCORE id) does not fit the OTrP device."""


class OtrpErrorCode(enum.StrEnum):
    """Error codes (strings; the draft assigns no numbers): docs/protocol-facts.md §3.5, plus the
    per-message extras."""

    ERR_DEV_STATE_MISMATCH = "ERR_DEV_STATE_MISMATCH"
    ERR_SD_ALREADY_EXISTS = "ERR_SD_ALREADY_EXISTS"
    ERR_SD_NOT_EMPTY = "ERR_SD_NOT_EMPTY"
    ERR_SDNAME_ALREADY_USED = "ERR_SDNAME_ALREADY_USED"
    ERR_REQUEST_INVALID = "ERR_REQUEST_INVALID"
    ERR_SPCERT_INVALID = "ERR_SPCERT_INVALID"
    ERR_TA_ALREADY_INSTALLED = "ERR_TA_ALREADY_INSTALLED"
    ERR_TA_INVALID = "ERR_TA_INVALID"
    ERR_TA_NOT_FOUND = "ERR_TA_NOT_FOUND"
    ERR_TEE_FAIL = "ERR_TEE_FAIL"
    ERR_TEE_RESOURCE_FULL = "ERR_TEE_RESOURCE_FULL"
    ERR_TFW_NOT_TRUSTED = "ERR_TFW_NOT_TRUSTED"
    ERR_TAM_NOT_TRUSTED = "ERR_TAM_NOT_TRUSTED"
    ERR_UNSUPPORTED_CRYPTO_ALG = "ERR_UNSUPPORTED_CRYPTO_ALG"
    ERR_UNSUPPORTED_MSG_VERSION = "ERR_UNSUPPORTED_MSG_VERSION"
    # used in the per-message lists but never defined by the draft
    ERR_SD_NOT_FOUND = "ERR_SD_NOT_FOUND"
    ERR_TAM_NOT_AUTHORIZED = "ERR_TAM_NOT_AUTHORIZED"
    # Broker (Agent) codes, unsigned
    ERR_AGENT_TEE_UNKNOWN = "ERR_AGENT_TEE_UNKNOWN"
    ERR_AGENT_TEE_BUSY = "ERR_AGENT_TEE_BUSY"
    ERR_AGENT_TEE_FAIL = "ERR_AGENT_TEE_FAIL"


SIGNATURE_ALGS = ("RS256", "ES256")
STATUS_VALUES = ("pass", "fail")


class Kind(enum.Enum):
    """How one member is represented and parsed."""

    STR = "string"
    ID = "string (or number)"  # rid/tid: teep-device sends a JSON number
    BOOL = "boolean"
    INT = "integer"
    BYTES = "base64 binary"
    HEX = "hex binary"
    BYTES_LIST = "array of base64 binary"
    HEX_LIST = "array of hex binary"
    STR_LIST = "array of strings"
    SIGALG = "signature algorithm name"
    STATUS = '"pass" or "fail"'
    ERRCODE = "error code"
    REASON = "reason (string or object)"
    ENVELOPE = "key envelope"
    OBJ = "object"
    OBJ_LIST = "array of objects"


@dataclass(frozen=True)
class Member:
    """One member of an OTrP object: attribute name, wire name, kind, optional, nested class."""

    attr: str
    wire: str
    kind: Kind
    optional: bool = False
    cls: type[OtrpObject] | None = None


class OtrpObject:
    """Base of every OTrP object: `MEMBERS` says how each attribute travels (otrp/encoding/tree.py reads
    and writes it); `check` holds the rules that tie members together."""

    MEMBERS: ClassVar[tuple[Member, ...]] = ()

    def check(self, path: str) -> None:
        """Cross-member rules; subclasses override."""


@dataclass(frozen=True, kw_only=True)
class Reason(OtrpObject):
    """`reason`: `{"error-code", "error-message"}`, or a bare string in the SD/TA prose (kept as message)."""

    error_code: OtrpErrorCode | None = None
    error_message: str | None = None
    MEMBERS: ClassVar[tuple[Member, ...]] = (
        Member("error_code", "error-code", Kind.ERRCODE, optional=True),
        Member("error_message", "error-message", Kind.STR, optional=True),
    )


@dataclass(frozen=True, kw_only=True)
class TaInfo(OtrpObject):
    taid: str
    taname: str | None = None
    MEMBERS: ClassVar[tuple[Member, ...]] = (
        Member("taid", "taid", Kind.STR),
        Member("taname", "taname", Kind.STR, optional=True),
    )


@dataclass(frozen=True, kw_only=True)
class SdInfo(OtrpObject):
    name: str
    spid: str
    talist: tuple[TaInfo, ...] = ()
    MEMBERS: ClassVar[tuple[Member, ...]] = (
        Member("name", "name", Kind.STR),
        Member("spid", "spid", Kind.STR),
        Member("talist", "talist", Kind.OBJ_LIST, cls=TaInfo),
    )


@dataclass(frozen=True, kw_only=True)
class SdList(OtrpObject):
    cnt: int
    sd: tuple[SdInfo, ...]
    MEMBERS: ClassVar[tuple[Member, ...]] = (
        Member("cnt", "cnt", Kind.INT),
        Member("sd", "sd", Kind.OBJ_LIST, cls=SdInfo),
    )


@dataclass(frozen=True, kw_only=True)
class TeeAik(OtrpObject):
    """teeaiklist entry: the SP AIK public key (DER SubjectPublicKeyInfo here) of one SP."""

    spaik: bytes
    spaiktype: str
    spid: str
    MEMBERS: ClassVar[tuple[Member, ...]] = (
        Member("spaik", "spaik", Kind.BYTES),
        Member("spaiktype", "spaiktype", Kind.STR),
        Member("spid", "spid", Kind.STR),
    )

    def check(self, path: str) -> None:
        if self.spaiktype not in ("RSA", "ECC"):
            raise OtrpDecodeError(f"{path}.spaiktype", f'expected "RSA" or "ECC", got {self.spaiktype!r:.20}')


@dataclass(frozen=True, kw_only=True)
class TfwData(OtrpObject):
    tbs: bytes
    cert: bytes
    sigalg: str
    sig: bytes
    MEMBERS: ClassVar[tuple[Member, ...]] = (
        Member("tbs", "tbs", Kind.BYTES),
        Member("cert", "cert", Kind.BYTES),
        Member("sigalg", "sigalg", Kind.SIGALG),
        Member("sig", "sig", Kind.BYTES),
    )


@dataclass(frozen=True, kw_only=True)
class TeeInfo(OtrpObject):
    """dsi.tee. `sdlist` is the draft's form; `talist`/`requestedtalist` are dthaler's flat variant."""

    name: str
    ver: str
    cert: bytes
    cacert: tuple[bytes, ...] = ()
    sdlist: SdList | None = None
    teeaiklist: tuple[TeeAik, ...] | None = None
    talist: tuple[TaInfo, ...] | None = None
    requestedtalist: tuple[TaInfo, ...] | None = None
    MEMBERS: ClassVar[tuple[Member, ...]] = (
        Member("name", "name", Kind.STR),
        Member("ver", "ver", Kind.STR),
        Member("cert", "cert", Kind.BYTES),
        Member("cacert", "cacert", Kind.BYTES_LIST),
        Member("sdlist", "sdlist", Kind.OBJ, optional=True, cls=SdList),
        Member("teeaiklist", "teeaiklist", Kind.OBJ_LIST, optional=True, cls=TeeAik),
        Member("talist", "talist", Kind.OBJ_LIST, optional=True, cls=TaInfo),
        Member("requestedtalist", "requestedtalist", Kind.OBJ_LIST, optional=True, cls=TaInfo),
    )


@dataclass(frozen=True, kw_only=True)
class Dsi(OtrpObject):
    """Device State Information: `tfwdata` is optional (a TEE that cannot get firmware data omits it)."""

    tee: TeeInfo
    tfwdata: TfwData | None = None
    MEMBERS: ClassVar[tuple[Member, ...]] = (
        Member("tfwdata", "tfwdata", Kind.OBJ, optional=True, cls=TfwData),
        Member("tee", "tee", Kind.OBJ, cls=TeeInfo),
    )


@dataclass(frozen=True, kw_only=True)
class DsiDocument(OtrpObject):
    """The plaintext of `edsi`: `{"dsi": {...}}`."""

    dsi: Dsi
    MEMBERS: ClassVar[tuple[Member, ...]] = (Member("dsi", "dsi", Kind.OBJ, cls=Dsi),)


@dataclass(frozen=True, kw_only=True)
class EncryptedTA(OtrpObject):
    """The draft's `encrypted_ta` envelope: the TA (and personalization data) AES-CBC encrypted with a
    256-bit key that `key` wraps for the SP AIK. `key` is a JWE object (JSON), a COSE_Encrypt byte
    string (CBOR mapping), or opaque bytes (sample A18 shows plain base64)."""

    key: Mapping[str, Any] | bytes
    iv: bytes
    alg: str = "AESCBC"
    ciphertadata: bytes | None = None
    cipherpdata: bytes | None = None
    ciphernewtadata: bytes | None = None
    ciphernewpdata: bytes | None = None
    MEMBERS: ClassVar[tuple[Member, ...]] = (
        Member("key", "key", Kind.ENVELOPE),
        Member("iv", "iv", Kind.HEX),
        Member("alg", "alg", Kind.STR),
        Member("ciphertadata", "ciphertadata", Kind.BYTES, optional=True),
        Member("cipherpdata", "cipherpdata", Kind.BYTES, optional=True),
        Member("ciphernewtadata", "ciphernewtadata", Kind.BYTES, optional=True),
        Member("ciphernewpdata", "ciphernewpdata", Kind.BYTES, optional=True),
    )

    def check(self, path: str) -> None:
        if self.alg != "AESCBC":
            raise OtrpDecodeError(f"{path}.alg", f'only "AESCBC" is defined, got {self.alg!r:.20}')
        if len(self.iv) != 16:
            raise OtrpDecodeError(f"{path}.iv", f"AES-CBC needs a 16-byte iv, got {len(self.iv)}")
        install = self.ciphertadata is not None or self.cipherpdata is not None
        update = self.ciphernewtadata is not None or self.ciphernewpdata is not None
        if install == update:
            raise OtrpDecodeError(
                path, "needs ciphertadata (InstallTA) or ciphernewtadata/ciphernewpdata (UpdateTA), not both"
            )
        if install and self.ciphertadata is None:
            raise OtrpDecodeError(f"{path}.ciphertadata", "mandatory member is missing")


# --------------------------------------------------------------------------------------------------
# content objects (the plaintext of the `content` JWE)


@dataclass(frozen=True, kw_only=True)
class CreateSDContent(OtrpObject):
    spid: str
    sdname: str
    spcert: bytes
    tamid: str
    did: bytes
    MEMBERS: ClassVar[tuple[Member, ...]] = (
        Member("spid", "spid", Kind.STR),
        Member("sdname", "sdname", Kind.STR),
        Member("spcert", "spcert", Kind.BYTES),
        Member("tamid", "tamid", Kind.STR),
        Member("did", "did", Kind.BYTES),
    )


@dataclass(frozen=True, kw_only=True)
class SDChanges(OtrpObject):
    renewteespaik: bool = False
    newsdname: str | None = None
    newspid: str | None = None
    spcert: tuple[bytes, ...] | None = None
    deloldspcert: tuple[bytes, ...] | None = None  # SHA-256 fingerprints, hex in JSON
    MEMBERS: ClassVar[tuple[Member, ...]] = (
        Member("newsdname", "newsdname", Kind.STR, optional=True),
        Member("newspid", "newspid", Kind.STR, optional=True),
        Member("spcert", "spcert", Kind.BYTES_LIST, optional=True),
        Member("deloldspcert", "deloldspcert", Kind.HEX_LIST, optional=True),
        Member("renewteespaik", "renewteespaik", Kind.BOOL),
    )


@dataclass(frozen=True, kw_only=True)
class UpdateSDContent(OtrpObject):
    tamid: str
    spid: str
    sdname: str
    changes: SDChanges
    MEMBERS: ClassVar[tuple[Member, ...]] = (
        Member("tamid", "tamid", Kind.STR),
        Member("spid", "spid", Kind.STR),
        Member("sdname", "sdname", Kind.STR),
        Member("changes", "changes", Kind.OBJ, cls=SDChanges),
    )


@dataclass(frozen=True, kw_only=True)
class DeleteSDContent(OtrpObject):
    tamid: str
    sdname: str
    deleteta: bool = False
    MEMBERS: ClassVar[tuple[Member, ...]] = (
        Member("tamid", "tamid", Kind.STR),
        Member("sdname", "sdname", Kind.STR),
        Member("deleteta", "deleteta", Kind.BOOL),
    )


@dataclass(frozen=True, kw_only=True)
class TAContent(OtrpObject):
    """InstallTA and UpdateTA content: `spcert` only when the SP is new to the SD."""

    tamid: str
    spid: str
    sdname: str
    taid: str
    spcert: bytes | None = None
    MEMBERS: ClassVar[tuple[Member, ...]] = (
        Member("tamid", "tamid", Kind.STR),
        Member("spid", "spid", Kind.STR),
        Member("sdname", "sdname", Kind.STR),
        Member("spcert", "spcert", Kind.BYTES, optional=True),
        Member("taid", "taid", Kind.STR),
    )


@dataclass(frozen=True, kw_only=True)
class DeleteTAContent(OtrpObject):
    tamid: str
    sdname: str
    taid: str
    MEMBERS: ClassVar[tuple[Member, ...]] = (
        Member("tamid", "tamid", Kind.STR),
        Member("sdname", "sdname", Kind.STR),
        Member("taid", "taid", Kind.STR),
    )


_RESULT_TAIL = (
    Member("reason", "reason", Kind.REASON, optional=True),
    Member("did", "did", Kind.BYTES),
)


@dataclass(frozen=True, kw_only=True)
class CreateSDResultContent(OtrpObject):
    did: bytes
    reason: Reason | None = None
    sdname: str | None = None
    teespaik: bytes | None = None
    dsi: Dsi | None = None
    MEMBERS: ClassVar[tuple[Member, ...]] = (
        *_RESULT_TAIL,
        Member("sdname", "sdname", Kind.STR, optional=True),
        Member("teespaik", "teespaik", Kind.BYTES, optional=True),
        Member("dsi", "dsi", Kind.OBJ, optional=True, cls=Dsi),
    )


@dataclass(frozen=True, kw_only=True)
class UpdateSDResultContent(OtrpObject):
    did: bytes
    reason: Reason | None = None
    cert: bytes | None = None
    teespaik: bytes | None = None
    teespaiktype: str | None = None
    dsi: Dsi | None = None
    MEMBERS: ClassVar[tuple[Member, ...]] = (
        *_RESULT_TAIL,
        Member("cert", "cert", Kind.BYTES, optional=True),
        Member("teespaik", "teespaik", Kind.BYTES, optional=True),
        Member("teespaiktype", "teespaiktype", Kind.STR, optional=True),
        Member("dsi", "dsi", Kind.OBJ, optional=True, cls=Dsi),
    )


@dataclass(frozen=True, kw_only=True)
class ResultContent(OtrpObject):
    """DeleteSD / InstallTA / UpdateTA / DeleteTA response content."""

    did: bytes
    reason: Reason | None = None
    dsi: Dsi | None = None
    MEMBERS: ClassVar[tuple[Member, ...]] = (
        *_RESULT_TAIL,
        Member("dsi", "dsi", Kind.OBJ, optional=True, cls=Dsi),
    )
