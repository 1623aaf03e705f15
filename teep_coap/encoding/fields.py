"""Which option labels each TEEP message has, in CDDL order, and what kind of value each carries.

Shared by the CBOR codec and the JSON twin so that both agree on names, order and constraints. The
order of each tuple is the order of the message's CDDL (token first); the encoders emit options in
this order unless a message's `label_order` says otherwise. Kinds are short names checked by the
codecs (see `KIND_DESCRIPTIONS`).
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from teep_coap.model.codes import Label, MessageType
from teep_coap.model.teep import Error, QueryRequest, QueryResponse, Success, TeepMessage, Update

# (label, attribute name, kind)
FieldSpec = tuple[int, str, str]

_L = Label

OPTION_FIELDS: Mapping[MessageType, tuple[FieldSpec, ...]] = MappingProxyType(
    {
        MessageType.QUERY_REQUEST: (
            (_L.TOKEN, "token", "token"),
            (_L.SUPPORTED_FRESHNESS_MECHANISMS, "supported_freshness_mechanisms", "uint_list"),
            (_L.CHALLENGE, "challenge", "challenge"),
            (_L.VERSIONS, "versions", "uint32_list"),
            (_L.ATTESTATION_PAYLOAD_FORMAT, "attestation_payload_format", "text"),
            (_L.ATTESTATION_PAYLOAD, "attestation_payload", "bstr"),
            (_L.SUIT_REPORTS, "suit_reports", "bstr_list"),
        ),
        MessageType.QUERY_RESPONSE: (
            (_L.TOKEN, "token", "token"),
            # retired label 5 (drafts 08-12); kept as a decoded CBOR value, emitted only when set
            (_L.SELECTED_TEEP_CIPHER_SUITE, "selected_teep_cipher_suite", "any"),
            (_L.SELECTED_VERSION, "selected_version", "uint32"),
            (_L.ATTESTATION_PAYLOAD_FORMAT, "attestation_payload_format", "text"),
            (_L.ATTESTATION_PAYLOAD, "attestation_payload", "bstr"),
            (_L.SUIT_REPORTS, "suit_reports", "bstr_list"),
            (_L.TC_LIST, "tc_list", "tc_list"),
            (_L.REQUESTED_TC_LIST, "requested_tc_list", "rtc_list"),
            (_L.UNNEEDED_MANIFEST_LIST, "unneeded_manifest_list", "compid_list"),
            (_L.EXT_LIST, "ext_list", "uint32_list"),
        ),
        MessageType.UPDATE: (
            (_L.TOKEN, "token", "token"),
            (_L.UNNEEDED_MANIFEST_LIST, "unneeded_manifest_list", "compid_list"),
            (_L.MANIFEST_LIST, "manifest_list", "bstr_list"),
            (_L.ATTESTATION_PAYLOAD_FORMAT, "attestation_payload_format", "text"),
            (_L.ATTESTATION_PAYLOAD, "attestation_payload", "bstr"),
            (_L.ERR_CODE, "err_code", "uint"),
            (_L.ERR_MSG, "err_msg", "msg"),
            (_L.ERR_LANG, "err_lang", "lang"),
        ),
        MessageType.SUCCESS: (
            (_L.TOKEN, "token", "token"),
            (_L.MSG, "msg", "msg"),
            (_L.SUIT_REPORTS, "suit_reports", "bstr_list"),
        ),
        MessageType.ERROR: (
            (_L.TOKEN, "token", "token"),
            (_L.ERR_MSG, "err_msg", "msg"),
            (_L.ERR_LANG, "err_lang", "lang"),
            (_L.SUPPORTED_TEEP_CIPHER_SUITES, "supported_teep_cipher_suites", "suites"),
            (_L.SUPPORTED_FRESHNESS_MECHANISMS, "supported_freshness_mechanisms", "uint_list"),
            (_L.SUPPORTED_SUIT_COSE_PROFILES, "supported_suit_cose_profiles", "profiles"),
            (_L.CHALLENGE, "challenge", "challenge"),
            (_L.VERSIONS, "versions", "uint32_list"),
            (_L.SUIT_REPORTS, "suit_reports", "bstr_list"),
        ),
    }
)

# Positional members after the options map: (attribute, kind, CDDL name).
POSITIONAL_FIELDS: Mapping[MessageType, tuple[tuple[str, str, str], ...]] = MappingProxyType(
    {
        MessageType.QUERY_REQUEST: (
            ("supported_teep_cipher_suites", "suites", "supported-teep-cipher-suites"),
            ("supported_suit_cose_profiles", "profiles", "supported-suit-cose-profiles"),
            ("data_item_requested", "uint", "data-item-requested"),
        ),
        MessageType.QUERY_RESPONSE: (),
        MessageType.UPDATE: (),
        MessageType.SUCCESS: (),
        MessageType.ERROR: (("err_code", "uint", "err-code"),),
    }
)

# CDDL names of the messages, used in error messages ("query-request options label 20 (token)").
MESSAGE_NAMES: Mapping[MessageType, str] = MappingProxyType(
    {
        MessageType.QUERY_REQUEST: "query-request",
        MessageType.QUERY_RESPONSE: "query-response",
        MessageType.UPDATE: "update",
        MessageType.SUCCESS: "success",
        MessageType.ERROR: "error",
    }
)

MESSAGE_CLASS: Mapping[int, type[TeepMessage]] = MappingProxyType(
    {
        int(MessageType.QUERY_REQUEST): QueryRequest,
        int(MessageType.QUERY_RESPONSE): QueryResponse,
        int(MessageType.UPDATE): Update,
        int(MessageType.SUCCESS): Success,
        int(MessageType.ERROR): Error,
    }
)

# requested-tc-info and system-property-claims members.
RTC_FIELDS: tuple[FieldSpec, ...] = (
    (_L.COMPONENT_ID, "component_id", "compid"),
    (_L.TC_MANIFEST_SEQUENCE_NUMBER, "tc_manifest_sequence_number", "uint"),
    (_L.HAVE_BINARY, "have_binary", "bool"),
)
SYSTEM_COMPONENT_ID = 0

# Name of the legacy label 5 (the enum's cddl_name would say "selected-teep-cipher-suite" too).
LABEL_NAMES: Mapping[int, str] = MappingProxyType({int(lab): lab.cddl_name for lab in Label})

# Limits of the CDDL (bytes for bstr/text, count for lists).
SIZE_LIMITS: Mapping[str, tuple[int, int]] = MappingProxyType(
    {"token": (8, 64), "challenge": (8, 512), "msg": (1, 128), "lang": (1, 35)}
)
UINT32_MAX = 0xFFFFFFFF
UINT64_MAX = 0xFFFFFFFFFFFFFFFF
INT64_MIN = -(1 << 64)  # CBOR major type 1 reaches -2**64

KIND_DESCRIPTIONS: Mapping[str, str] = MappingProxyType(
    {
        "token": "byte string of 8..64 bytes",
        "challenge": "byte string of 8..512 bytes",
        "bstr": "byte string",
        "text": "text string",
        "msg": "text string of 1..128 UTF-8 bytes",
        "lang": "text string of 1..35 UTF-8 bytes",
        "uint": "unsigned integer",
        "uint32": "unsigned integer below 2**32",
        "bool": "true or false",
        "uint_list": "non-empty array of unsigned integers",
        "uint32_list": "non-empty array of unsigned integers below 2**32",
        "bstr_list": "non-empty array of byte strings",
        "suites": "non-empty array of cipher suites [+ [cose-type, alg]]",
        "profiles": "non-empty array of SUIT COSE profiles [digest, auth, key-exchange, encryption]",
        "compid": "array of byte strings (SUIT_Component_Identifier)",
        "compid_list": "non-empty array of SUIT_Component_Identifier",
        "tc_list": "non-empty array of system-property-claims maps",
        "rtc_list": "non-empty array of requested-tc-info maps",
        "any": "any CBOR value",
    }
)


def label_name(label: int) -> str:
    """`20 (token)` for known labels, `24` for others: how errors name a map member."""
    name = LABEL_NAMES.get(label)
    return f"{label} ({name})" if name else str(label)
