"""Numbers of the TEEP protocol (draft-ietf-teep-protocol, editor's copy ~ -26), kept in one place.

See docs/protocol-facts.md §1.2-1.9. Where the draft and the IANA page disagree (message types), the
wire truth of the draft's CDDL, its examples and every implementation is used.
"""

from __future__ import annotations

import enum


class MessageType(enum.IntEnum):
    """TEEP message type (first array element). IANA's page lists Success=4/Error=5; the wire uses 5/6."""

    QUERY_REQUEST = 1
    QUERY_RESPONSE = 2
    UPDATE = 3
    SUCCESS = 5
    ERROR = 6


class Label(enum.IntEnum):
    """Option labels (map keys) of TEEP messages, 0..23."""

    SUPPORTED_TEEP_CIPHER_SUITES = 1
    CHALLENGE = 2
    VERSIONS = 3
    SUPPORTED_SUIT_COSE_PROFILES = 4
    SELECTED_TEEP_CIPHER_SUITE = 5  # retired; drafts 08-12 (and libteep vectors) still send it
    SELECTED_VERSION = 6
    ATTESTATION_PAYLOAD = 7
    TC_LIST = 8
    EXT_LIST = 9
    MANIFEST_LIST = 10
    MSG = 11
    ERR_MSG = 12
    ATTESTATION_PAYLOAD_FORMAT = 13
    REQUESTED_TC_LIST = 14
    UNNEEDED_MANIFEST_LIST = 15
    COMPONENT_ID = 16
    TC_MANIFEST_SEQUENCE_NUMBER = 17
    HAVE_BINARY = 18
    SUIT_REPORTS = 19
    TOKEN = 20
    SUPPORTED_FRESHNESS_MECHANISMS = 21
    ERR_LANG = 22
    ERR_CODE = 23

    @property
    def cddl_name(self) -> str:
        """The CDDL name, used as the JSON member name (e.g. ``supported-teep-cipher-suites``)."""
        return self.name.lower().replace("_", "-")


class ErrorCode(enum.IntEnum):
    """err-code values."""

    ERR_PERMANENT_ERROR = 1
    ERR_UNSUPPORTED_EXTENSION = 2
    ERR_UNSUPPORTED_FRESHNESS_MECHANISMS = 3
    ERR_UNSUPPORTED_MSG_VERSION = 4
    ERR_UNSUPPORTED_CIPHER_SUITES = 5
    ERR_BAD_CERTIFICATE = 6
    ERR_ATTESTATION_REQUIRED = 7
    ERR_UNSUPPORTED_SUIT_REPORT = 8
    ERR_CERTIFICATE_EXPIRED = 9
    ERR_TEMPORARY_ERROR = 10
    ERR_MANIFEST_PROCESSING_FAILED = 17


class DataItem(enum.IntFlag):
    """data-item-requested bits of a QueryRequest."""

    ATTESTATION = 1
    TRUSTED_COMPONENTS = 2
    EXTENSIONS = 4
    SUIT_REPORTS = 8


class FreshnessMechanism(enum.IntEnum):
    NONCE = 0
    TIMESTAMP = 1


class CoseType(enum.IntEnum):
    """COSE structure numbers used inside cipher-suite operations (CoAP Content-Format = CBOR tag)."""

    COSE_ENCRYPT0 = 16
    COSE_MAC0 = 17
    COSE_SIGN1 = 18
    COSE_SIGN = 98


class CoseAlg(enum.IntEnum):
    """COSE algorithm ids used by TEEP and SUIT."""

    ES256 = -7  # accepted from older peers (<= draft-20)
    EDDSA = -8  # accepted from older peers (<= draft-20)
    ESP256 = -9
    ED25519 = -19
    SHA256 = -16
    ECDH_ES_A128KW = -29
    A128CTR = -65534
    A128GCM = 1
    CHACHA20_POLY1305 = 24


# A cipher suite is a tuple of operations, each operation (cose-type, cose-alg).
CipherSuite = tuple[tuple[int, int], ...]

SUITE_SIGN1_ESP256: CipherSuite = ((CoseType.COSE_SIGN1, CoseAlg.ESP256),)
SUITE_SIGN1_ED25519: CipherSuite = ((CoseType.COSE_SIGN1, CoseAlg.ED25519),)
SUITE_SIGN1_ES256_LEGACY: CipherSuite = ((CoseType.COSE_SIGN1, CoseAlg.ES256),)
SUITE_SIGN1_EDDSA_LEGACY: CipherSuite = ((CoseType.COSE_SIGN1, CoseAlg.EDDSA),)

CIPHER_SUITE_NAMES: dict[CipherSuite, str] = {
    SUITE_SIGN1_ESP256: "teep-cipher-suite-sign1-esp256",
    SUITE_SIGN1_ED25519: "teep-cipher-suite-sign1-ed25519",
    SUITE_SIGN1_ES256_LEGACY: "teep-cipher-suite-sign1-es256 (draft-20)",
    SUITE_SIGN1_EDDSA_LEGACY: "teep-cipher-suite-sign1-eddsa (draft-20)",
}

# A SUIT COSE profile is [digest, auth, key-exchange, encryption].
SuitCoseProfile = tuple[int, int, int, int]

PROFILE_ESP256_A128CTR: SuitCoseProfile = (-16, -9, -29, -65534)
PROFILE_ED25519_A128CTR: SuitCoseProfile = (-16, -19, -29, -65534)
PROFILE_ESP256_A128GCM: SuitCoseProfile = (-16, -9, -29, 1)
PROFILE_ED25519_CHACHA_POLY: SuitCoseProfile = (-16, -19, -29, 24)

SUIT_COSE_PROFILE_NAMES: dict[SuitCoseProfile, str] = {
    PROFILE_ESP256_A128CTR: "suit-sha256-esp256-ecdh-a128ctr",
    PROFILE_ED25519_A128CTR: "suit-sha256-ed25519-ecdh-a128ctr",
    PROFILE_ESP256_A128GCM: "suit-sha256-esp256-ecdh-a128gcm",
    PROFILE_ED25519_CHACHA_POLY: "suit-sha256-ed25519-ecdh-chacha-poly",
}

# Limits from the CDDL.
TOKEN_SIZE = (8, 64)
CHALLENGE_SIZE = (8, 512)
ERR_MSG_SIZE = (1, 128)
MSG_SIZE = (1, 128)
ERR_LANG_SIZE = (1, 35)

# Default attestation-payload-format when absent (docs/protocol-facts.md §1.10); RFC number still TBD.
EAT_PROFILE_TEEP = "urn:ietf:rfc:rfcXXXX"
DEFAULT_ATTESTATION_PAYLOAD_FORMAT = f"application/eat+cwt; eat_profile={EAT_PROFILE_TEEP}"

MEDIA_TYPE_TEEP_CBOR = "application/teep+cbor"
MEDIA_TYPE_TEEP_JSON = "application/teep+json"
