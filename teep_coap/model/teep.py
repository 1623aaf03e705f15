"""Dataclasses for the five TEEP messages, with every field of the draft's CDDL.

Field names are the CDDL names with `_` for `-`. `None` means "absent on the wire" (which is not the
same as an empty list). Values are immutable tuples so messages compare and hash by value.

Two fields exist only for lossless round trips and never change meaning:
- `extensions`: option labels this version does not know, kept with their decoded CBOR values.
- `label_order`: the order the option labels had on the wire when the message was decoded (or in the
  JSON object it came from); the encoder follows it, so decode-then-encode gives the same bytes.
  `None` means the encoder's canonical order (the CDDL order, which the working group's examples use).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, ClassVar, TypeAlias

from teep_coap.model.codes import (
    PROFILE_ED25519_A128CTR,
    PROFILE_ED25519_CHACHA_POLY,
    PROFILE_ESP256_A128CTR,
    PROFILE_ESP256_A128GCM,
    SUITE_SIGN1_ED25519,
    SUITE_SIGN1_ESP256,
    CipherSuite,
    ErrorCode,
    MessageType,
    SuitCoseProfile,
)

# SUIT_Component_Identifier = [* bstr]
ComponentId: TypeAlias = tuple[bytes, ...]


DEFAULT_CIPHER_SUITES: tuple[CipherSuite, ...] = (SUITE_SIGN1_ESP256, SUITE_SIGN1_ED25519)
DEFAULT_SUIT_COSE_PROFILES: tuple[SuitCoseProfile, ...] = (
    PROFILE_ESP256_A128CTR,
    PROFILE_ED25519_A128CTR,
    PROFILE_ESP256_A128GCM,
    PROFILE_ED25519_CHACHA_POLY,
)


@dataclass(frozen=True, kw_only=True)
class RequestedTcInfo:
    """requested-tc-info: a component the Agent asks for (label 16, ?17, ?18)."""

    component_id: ComponentId
    tc_manifest_sequence_number: int | None = None
    have_binary: bool | None = None
    extensions: Mapping[int, Any] = field(default_factory=dict)
    label_order: tuple[int, ...] | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True, kw_only=True)
class SystemPropertyClaims:
    """system-property-claims of a tc-list entry: `{0: component-id, + SUIT parameters}`.

    `parameters` keeps the SUIT parameter values as decoded CBOR (e.g. 3 = bstr-wrapped digest).
    """

    component_id: ComponentId
    parameters: Mapping[int, Any] = field(default_factory=dict)
    label_order: tuple[int, ...] | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True, kw_only=True)
class QueryRequest:
    """TAM -> Agent: `[1, {options}, supported-teep-cipher-suites, supported-suit-cose-profiles,
    data-item-requested]`."""

    type: ClassVar[MessageType] = MessageType.QUERY_REQUEST

    token: bytes | None = None
    supported_freshness_mechanisms: tuple[int, ...] | None = None
    challenge: bytes | None = None
    versions: tuple[int, ...] | None = None
    attestation_payload_format: str | None = None
    attestation_payload: bytes | None = None
    suit_reports: tuple[bytes, ...] | None = None
    # positional members
    supported_teep_cipher_suites: tuple[CipherSuite, ...] = DEFAULT_CIPHER_SUITES
    supported_suit_cose_profiles: tuple[SuitCoseProfile, ...] = DEFAULT_SUIT_COSE_PROFILES
    data_item_requested: int = 0
    # array elements after data-item-requested (the framework allows `* any`)
    extra_positional: tuple[Any, ...] = ()
    extensions: Mapping[int, Any] = field(default_factory=dict)
    label_order: tuple[int, ...] | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True, kw_only=True)
class QueryResponse:
    """Agent -> TAM: `[2, {options}]`."""

    type: ClassVar[MessageType] = MessageType.QUERY_RESPONSE

    token: bytes | None = None
    selected_version: int | None = None
    attestation_payload_format: str | None = None
    attestation_payload: bytes | None = None
    suit_reports: tuple[bytes, ...] | None = None
    tc_list: tuple[SystemPropertyClaims, ...] | None = None
    requested_tc_list: tuple[RequestedTcInfo, ...] | None = None
    unneeded_manifest_list: tuple[ComponentId, ...] | None = None
    ext_list: tuple[int, ...] | None = None
    # label 5 of drafts 08-12 (selected-teep-cipher-suite); never emitted unless set
    selected_teep_cipher_suite: Any = None
    # array elements after the options map (the framework allows `* any`; the CDDL of this message none)
    extra_positional: tuple[Any, ...] = ()
    extensions: Mapping[int, Any] = field(default_factory=dict)
    label_order: tuple[int, ...] | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True, kw_only=True)
class Update:
    """TAM -> Agent: `[3, {options}]`; manifest-list items are bstr-wrapped SUIT envelopes."""

    type: ClassVar[MessageType] = MessageType.UPDATE

    token: bytes | None = None
    unneeded_manifest_list: tuple[ComponentId, ...] | None = None
    manifest_list: tuple[bytes, ...] | None = None
    attestation_payload_format: str | None = None
    attestation_payload: bytes | None = None
    err_code: int | None = None
    err_msg: str | None = None
    err_lang: str | None = None
    extra_positional: tuple[Any, ...] = ()  # see QueryResponse
    extensions: Mapping[int, Any] = field(default_factory=dict)
    label_order: tuple[int, ...] | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True, kw_only=True)
class Success:
    """Agent -> TAM: `[5, {options}]`."""

    type: ClassVar[MessageType] = MessageType.SUCCESS

    token: bytes | None = None
    msg: str | None = None
    suit_reports: tuple[bytes, ...] | None = None
    extra_positional: tuple[Any, ...] = ()  # see QueryResponse
    extensions: Mapping[int, Any] = field(default_factory=dict)
    label_order: tuple[int, ...] | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True, kw_only=True)
class Error:
    """Agent -> TAM: `[6, {options}, err-code]`."""

    type: ClassVar[MessageType] = MessageType.ERROR

    err_code: int
    token: bytes | None = None
    err_msg: str | None = None
    err_lang: str | None = None
    supported_teep_cipher_suites: tuple[CipherSuite, ...] | None = None
    supported_freshness_mechanisms: tuple[int, ...] | None = None
    supported_suit_cose_profiles: tuple[SuitCoseProfile, ...] | None = None
    challenge: bytes | None = None
    versions: tuple[int, ...] | None = None
    suit_reports: tuple[bytes, ...] | None = None
    extra_positional: tuple[Any, ...] = ()
    extensions: Mapping[int, Any] = field(default_factory=dict)
    label_order: tuple[int, ...] | None = field(default=None, compare=False, repr=False)

    @property
    def err_code_name(self) -> str:
        """Name of the error code, or `unknown(N)` (codes above 23 are treated as unknown errors)."""
        try:
            return ErrorCode(self.err_code).name
        except ValueError:
            return f"unknown({self.err_code})"


TeepMessage: TypeAlias = QueryRequest | QueryResponse | Update | Success | Error

MESSAGE_CLASSES: Mapping[MessageType, type[TeepMessage]] = MappingProxyType(
    {cls.type: cls for cls in (QueryRequest, QueryResponse, Update, Success, Error)}
)
