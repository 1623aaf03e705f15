"""SUIT numbers (draft-ietf-suit-manifest-37, -trust-domains-11, -report-18), kept in one place.

Values come from the CDDL in tests/cddl and docs/protocol-facts.md §6; names follow the CDDL.
"""

from __future__ import annotations

import enum

ENVELOPE_TAG = 107
MANIFEST_TAG = 1070
CBOR_PEN_TAG = 112


class EnvelopeKey(enum.IntEnum):
    DELEGATION = 1  # trust-domains; not supported here
    AUTHENTICATION_WRAPPER = 2
    MANIFEST = 3
    DEPENDENCY_RESOLUTION = 15  # severable (trust-domains)
    PAYLOAD_FETCH = 16
    CANDIDATE_VERIFICATION = 18  # severable (trust-domains)
    INSTALL = 20
    TEXT = 23


class ManifestKey(enum.IntEnum):
    VERSION = 1
    SEQUENCE_NUMBER = 2
    COMMON = 3
    REFERENCE_URI = 4
    MANIFEST_COMPONENT_ID = 5  # trust-domains
    VALIDATE = 7
    LOAD = 8
    INVOKE = 9  # was install before Nov 2024 (NOTES §7 trap 4)
    DEPENDENCY_RESOLUTION = 15
    PAYLOAD_FETCH = 16
    CANDIDATE_VERIFICATION = 18
    INSTALL = 20
    TEXT = 23
    UNINSTALL = 24


# Manifest members that hold a command sequence (bstr .cbor SUIT_Command_Sequence).
SEQUENCE_KEYS: frozenset[int] = frozenset(
    {
        ManifestKey.VALIDATE,
        ManifestKey.LOAD,
        ManifestKey.INVOKE,
        ManifestKey.DEPENDENCY_RESOLUTION,
        ManifestKey.PAYLOAD_FETCH,
        ManifestKey.CANDIDATE_VERIFICATION,
        ManifestKey.INSTALL,
        ManifestKey.UNINSTALL,
    }
)
# Members that may be severed: the manifest then holds their SUIT_Digest and the envelope the bstr.
SEVERABLE_KEYS: frozenset[int] = frozenset(
    {
        ManifestKey.DEPENDENCY_RESOLUTION,
        ManifestKey.PAYLOAD_FETCH,
        ManifestKey.CANDIDATE_VERIFICATION,
        ManifestKey.INSTALL,
        ManifestKey.TEXT,
    }
)


class CommonKey(enum.IntEnum):
    DEPENDENCIES = 1  # trust-domains; not supported here
    COMPONENTS = 2
    SHARED_SEQUENCE = 4


class Command(enum.IntEnum):
    """Conditions and directives (one number space)."""

    CONDITION_VENDOR_IDENTIFIER = 1
    CONDITION_CLASS_IDENTIFIER = 2
    CONDITION_IMAGE_MATCH = 3
    CONDITION_COMPONENT_SLOT = 5
    CONDITION_CHECK_CONTENT = 6
    CONDITION_DEPENDENCY_INTEGRITY = 7
    CONDITION_IS_DEPENDENCY = 8
    DIRECTIVE_PROCESS_DEPENDENCY = 11
    DIRECTIVE_SET_COMPONENT_INDEX = 12
    CONDITION_ABORT = 14
    DIRECTIVE_TRY_EACH = 15
    DIRECTIVE_WRITE = 18
    DIRECTIVE_SET_PARAMETERS = 19
    DIRECTIVE_OVERRIDE_PARAMETERS = 20
    DIRECTIVE_FETCH = 21
    DIRECTIVE_COPY = 22
    DIRECTIVE_INVOKE = 23
    CONDITION_DEVICE_IDENTIFIER = 24
    DIRECTIVE_SWAP = 31
    DIRECTIVE_RUN_SEQUENCE = 32
    DIRECTIVE_UNLINK = 33


class Parameter(enum.IntEnum):
    VENDOR_IDENTIFIER = 1
    CLASS_IDENTIFIER = 2
    IMAGE_DIGEST = 3
    COMPONENT_SLOT = 5
    STRICT_ORDER = 12
    SOFT_FAILURE = 13
    IMAGE_SIZE = 14
    CONTENT = 18
    ENCRYPTION_INFO = 19  # draft-ietf-suit-firmware-encryption; not supported here
    URI = 21
    SOURCE_COMPONENT = 22
    INVOKE_ARGS = 23
    DEVICE_IDENTIFIER = 24
    FETCH_ARGUMENTS = 25


class TextKey(enum.IntEnum):
    MANIFEST_DESCRIPTION = 1
    UPDATE_DESCRIPTION = 2
    MANIFEST_JSON_SOURCE = 3
    MANIFEST_YAML_SOURCE = 4


class TextComponentKey(enum.IntEnum):
    VENDOR_NAME = 1
    MODEL_NAME = 2
    VENDOR_DOMAIN = 3
    MODEL_INFO = 4
    COMPONENT_DESCRIPTION = 5
    COMPONENT_VERSION = 6


class DigestAlg(enum.IntEnum):
    SHA256 = -16
    SHAKE128 = -18
    SHA384 = -43
    SHA512 = -44
    SHAKE256 = -45


class ReportReason(enum.IntEnum):
    """SUIT_Report_Reasons (draft-ietf-suit-report-18)."""

    OK = 0
    CBOR_PARSE = 1
    COSE_UNSUPPORTED = 2
    ALG_UNSUPPORTED = 3
    UNAUTHORISED = 4
    COMMAND_UNSUPPORTED = 5
    COMPONENT_UNSUPPORTED = 6
    COMPONENT_UNAUTHORISED = 7
    PARAMETER_UNSUPPORTED = 8
    SEVERING_UNSUPPORTED = 9
    CONDITION_FAILED = 10
    OPERATION_FAILED = 11
    INVOKE_PENDING = 12


class ReportKey(enum.IntEnum):
    NONCE = 2
    RECORDS = 3
    RESULT = 4
    RESULT_CODE = 5
    RESULT_RECORD = 6
    RESULT_REASON = 7
    CAPABILITY_REPORT = 8
    REFERENCE = 99


# Reporting-policy bits (SUIT_Rep_Policy).
REP_RECORD_ON_SUCCESS = 1 << 0
REP_RECORD_ON_FAILURE = 1 << 1
REP_SYSINFO_SUCCESS = 1 << 2
REP_SYSINFO_FAILURE = 1 << 3
REP_ALL = 15

# The integrated payload key TEEP's examples use.
INTEGRATED_TC_KEY = "#tc"
