"""The 14 OTrP messages (7 requests, 7 responses), the Broker error and the tables that look them up.

A message's `MEMBERS` table (otrp/model/objects.py) drives otrp/encoding/tree.py; `ENCRYPTED` names the
members that travel encrypted, `check` the rules across members.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from teep_coap.otrp.model.objects import (
    OTRP_VERSION,
    CreateSDContent,
    CreateSDResultContent,
    DeleteSDContent,
    DeleteTAContent,
    DsiDocument,
    EncryptedTA,
    Kind,
    Member,
    OtrpDecodeError,
    OtrpErrorCode,
    OtrpObject,
    Reason,
    ResultContent,
    TAContent,
    UpdateSDContent,
    UpdateSDResultContent,
)

# --------------------------------------------------------------------------------------------------
# messages (to-be-signed objects)


class OtrpMessage(OtrpObject):
    """A to-be-signed message. `TBS_NAME` is the member name inside the JWS payload, `OUTER_NAME` the
    name of the signed wrapper; `ENCRYPTED` lists the members that travel as JWE / COSE_Encrypt."""

    TBS_NAME: ClassVar[str] = ""
    OUTER_NAME: ClassVar[str] = ""
    ENCRYPTED: ClassVar[tuple[str, ...]] = ("content",)
    IS_REQUEST: ClassVar[bool] = True

    rid: str
    tid: str
    ver: str


_REQUEST_HEAD = (
    Member("ver", "ver", Kind.STR),
    Member("rid", "rid", Kind.ID),
    Member("tid", "tid", Kind.ID),
    Member("tee", "tee", Kind.STR),
    Member("nextdsi", "nextdsi", Kind.BOOL),
    # mandatory in the draft; teep-device's tiny-tam omits it, so it is read as optional
    Member("dsihash", "dsihash", Kind.BYTES, optional=True),
)
_RESPONSE_HEAD = (
    Member("ver", "ver", Kind.STR),
    Member("status", "status", Kind.STATUS),
    Member("rid", "rid", Kind.ID),
    Member("tid", "tid", Kind.ID),
    # a TEE that cannot encrypt (no TAM key) reports at TBS level, like GetDeviceState does
    Member("reason", "reason", Kind.REASON, optional=True),
)


@dataclass(frozen=True, kw_only=True)
class GetDeviceStateRequest(OtrpMessage):
    TBS_NAME: ClassVar[str] = "GetDeviceStateTBSRequest"
    OUTER_NAME: ClassVar[str] = "GetDeviceStateRequest"
    ENCRYPTED: ClassVar[tuple[str, ...]] = ()

    rid: str
    tid: str
    ocspdat: tuple[bytes, ...] = ()
    supportedsigalgs: tuple[str, ...] | None = None
    icaocspdat: bytes | None = None  # sample A01 only
    ver: str = OTRP_VERSION
    MEMBERS: ClassVar[tuple[Member, ...]] = (
        Member("ver", "ver", Kind.STR),
        Member("rid", "rid", Kind.ID),
        Member("tid", "tid", Kind.ID),
        Member("ocspdat", "ocspdat", Kind.BYTES_LIST),
        Member("icaocspdat", "icaocspdat", Kind.BYTES, optional=True),
        Member("supportedsigalgs", "supportedsigalgs", Kind.STR_LIST, optional=True),
    )


@dataclass(frozen=True, kw_only=True)
class GetDeviceTEEStateResponse(OtrpMessage):
    TBS_NAME: ClassVar[str] = "GetDeviceTEEStateTBSResponse"
    OUTER_NAME: ClassVar[str] = "GetDeviceTEEStateResponse"
    ENCRYPTED: ClassVar[tuple[str, ...]] = ("edsi",)
    IS_REQUEST: ClassVar[bool] = False

    rid: str
    tid: str
    status: str = "pass"
    signerreq: bool | None = None
    edsi: DsiDocument | None = None
    reason: Reason | None = None
    supportedsigalgs: tuple[str, ...] | None = None
    ver: str = OTRP_VERSION
    MEMBERS: ClassVar[tuple[Member, ...]] = (
        *_RESPONSE_HEAD,
        Member("signerreq", "signerreq", Kind.BOOL, optional=True),
        Member("edsi", "edsi", Kind.OBJ, optional=True, cls=DsiDocument),
        Member("supportedsigalgs", "supportedsigalgs", Kind.STR_LIST, optional=True),
    )

    def check(self, path: str) -> None:
        if self.status == "pass" and (self.edsi is None or self.signerreq is None):
            raise OtrpDecodeError(path, 'status "pass" needs signerreq and edsi')


@dataclass(frozen=True, kw_only=True)
class GetDeviceStateResponse:
    """`{"GetDeviceStateResponse": [ {"GetDeviceTEEStateResponse": JWS}, ... ]}`: one entry per TEE."""

    OUTER_NAME: ClassVar[str] = "GetDeviceStateResponse"
    tees: tuple[GetDeviceTEEStateResponse, ...]


def _request(content_cls: type[OtrpObject], with_ta: bool = False) -> tuple[Member, ...]:
    members: tuple[Member, ...] = (*_REQUEST_HEAD, Member("content", "content", Kind.OBJ, cls=content_cls))
    if with_ta:
        members = (*members, Member("encrypted_ta", "encrypted_ta", Kind.OBJ, cls=EncryptedTA))
    return members


def _response(content_cls: type[OtrpObject]) -> tuple[Member, ...]:
    # content optional: absent only when the TEE could not encrypt its failure (reason at TBS level)
    return (*_RESPONSE_HEAD, Member("content", "content", Kind.OBJ, optional=True, cls=content_cls))


@dataclass(frozen=True, kw_only=True)
class _SdTaRequest(OtrpMessage):
    rid: str
    tid: str
    tee: str
    nextdsi: bool = False
    dsihash: bytes | None = None
    ver: str = OTRP_VERSION


@dataclass(frozen=True, kw_only=True)
class CreateSDRequest(_SdTaRequest):
    TBS_NAME: ClassVar[str] = "CreateSDTBSRequest"
    OUTER_NAME: ClassVar[str] = "CreateSDRequest"
    content: CreateSDContent
    MEMBERS: ClassVar[tuple[Member, ...]] = _request(CreateSDContent)


@dataclass(frozen=True, kw_only=True)
class UpdateSDRequest(_SdTaRequest):
    TBS_NAME: ClassVar[str] = "UpdateSDTBSRequest"
    OUTER_NAME: ClassVar[str] = "UpdateSDRequest"
    content: UpdateSDContent
    MEMBERS: ClassVar[tuple[Member, ...]] = _request(UpdateSDContent)


@dataclass(frozen=True, kw_only=True)
class DeleteSDRequest(_SdTaRequest):
    TBS_NAME: ClassVar[str] = "DeleteSDTBSRequest"
    OUTER_NAME: ClassVar[str] = "DeleteSDRequest"
    content: DeleteSDContent
    MEMBERS: ClassVar[tuple[Member, ...]] = _request(DeleteSDContent)


@dataclass(frozen=True, kw_only=True)
class InstallTARequest(_SdTaRequest):
    TBS_NAME: ClassVar[str] = "InstallTATBSRequest"
    OUTER_NAME: ClassVar[str] = "InstallTARequest"
    content: TAContent
    encrypted_ta: EncryptedTA
    MEMBERS: ClassVar[tuple[Member, ...]] = _request(TAContent, with_ta=True)

    def check(self, path: str) -> None:
        if self.encrypted_ta.ciphertadata is None:
            raise OtrpDecodeError(f"{path}.encrypted_ta.ciphertadata", "mandatory member is missing")


@dataclass(frozen=True, kw_only=True)
class UpdateTARequest(_SdTaRequest):
    TBS_NAME: ClassVar[str] = "UpdateTATBSRequest"
    OUTER_NAME: ClassVar[str] = "UpdateTARequest"
    content: TAContent
    encrypted_ta: EncryptedTA
    MEMBERS: ClassVar[tuple[Member, ...]] = _request(TAContent, with_ta=True)

    def check(self, path: str) -> None:
        if self.encrypted_ta.ciphernewtadata is None and self.encrypted_ta.ciphernewpdata is None:
            raise OtrpDecodeError(f"{path}.encrypted_ta", "needs ciphernewtadata or ciphernewpdata")


@dataclass(frozen=True, kw_only=True)
class DeleteTARequest(_SdTaRequest):
    TBS_NAME: ClassVar[str] = "DeleteTATBSRequest"
    OUTER_NAME: ClassVar[str] = "DeleteTARequest"
    content: DeleteTAContent
    MEMBERS: ClassVar[tuple[Member, ...]] = _request(DeleteTAContent)


@dataclass(frozen=True, kw_only=True)
class _Response(OtrpMessage):
    IS_REQUEST: ClassVar[bool] = False
    rid: str
    tid: str
    status: str = "pass"
    reason: Reason | None = None
    ver: str = OTRP_VERSION


@dataclass(frozen=True, kw_only=True)
class CreateSDResponse(_Response):
    TBS_NAME: ClassVar[str] = "CreateSDTBSResponse"
    OUTER_NAME: ClassVar[str] = "CreateSDResponse"
    content: CreateSDResultContent | None = None
    MEMBERS: ClassVar[tuple[Member, ...]] = _response(CreateSDResultContent)


@dataclass(frozen=True, kw_only=True)
class UpdateSDResponse(_Response):
    TBS_NAME: ClassVar[str] = "UpdateSDTBSResponse"
    OUTER_NAME: ClassVar[str] = "UpdateSDResponse"
    content: UpdateSDResultContent | None = None
    MEMBERS: ClassVar[tuple[Member, ...]] = _response(UpdateSDResultContent)


@dataclass(frozen=True, kw_only=True)
class DeleteSDResponse(_Response):
    TBS_NAME: ClassVar[str] = "DeleteSDTBSResponse"
    OUTER_NAME: ClassVar[str] = "DeleteSDResponse"
    content: ResultContent | None = None
    MEMBERS: ClassVar[tuple[Member, ...]] = _response(ResultContent)


@dataclass(frozen=True, kw_only=True)
class InstallTAResponse(_Response):
    TBS_NAME: ClassVar[str] = "InstallTATBSResponse"
    OUTER_NAME: ClassVar[str] = "InstallTAResponse"
    content: ResultContent | None = None
    MEMBERS: ClassVar[tuple[Member, ...]] = _response(ResultContent)


@dataclass(frozen=True, kw_only=True)
class UpdateTAResponse(_Response):
    TBS_NAME: ClassVar[str] = "UpdateTATBSResponse"
    OUTER_NAME: ClassVar[str] = "UpdateTAResponse"
    content: ResultContent | None = None
    MEMBERS: ClassVar[tuple[Member, ...]] = _response(ResultContent)


@dataclass(frozen=True, kw_only=True)
class DeleteTAResponse(_Response):
    TBS_NAME: ClassVar[str] = "DeleteTATBSResponse"
    OUTER_NAME: ClassVar[str] = "DeleteTAResponse"
    content: ResultContent | None = None
    MEMBERS: ClassVar[tuple[Member, ...]] = _response(ResultContent)


@dataclass(frozen=True, kw_only=True)
class BrokerError(OtrpObject):
    """Unsigned Broker-generated error (ietf-02 "Type 2"; removed in -03):
    `{"OTrPBrokerError": {"ver", "rid", "tid", "errcode"}}`."""

    OUTER_NAME: ClassVar[str] = "OTrPBrokerError"
    errcode: OtrpErrorCode
    rid: str = ""
    tid: str = ""
    ver: str = OTRP_VERSION
    MEMBERS: ClassVar[tuple[Member, ...]] = (
        Member("ver", "ver", Kind.STR),
        Member("rid", "rid", Kind.ID),
        Member("tid", "tid", Kind.ID),
        Member("errcode", "errcode", Kind.ERRCODE),
    )


REQUEST_TYPES: tuple[type[OtrpMessage], ...] = (
    GetDeviceStateRequest,
    CreateSDRequest,
    UpdateSDRequest,
    DeleteSDRequest,
    InstallTARequest,
    UpdateTARequest,
    DeleteTARequest,
)
RESPONSE_TYPES: tuple[type[OtrpMessage], ...] = (
    GetDeviceTEEStateResponse,
    CreateSDResponse,
    UpdateSDResponse,
    DeleteSDResponse,
    InstallTAResponse,
    UpdateTAResponse,
    DeleteTAResponse,
)
MESSAGE_TYPES: tuple[type[OtrpMessage], ...] = REQUEST_TYPES + RESPONSE_TYPES
BY_TBS_NAME: dict[str, type[OtrpMessage]] = {c.TBS_NAME: c for c in MESSAGE_TYPES}
BY_OUTER_NAME: dict[str, type[OtrpMessage]] = {c.OUTER_NAME: c for c in MESSAGE_TYPES}
RESPONSE_FOR: dict[type[OtrpMessage], type[OtrpMessage]] = dict(
    zip(REQUEST_TYPES, RESPONSE_TYPES, strict=True)
)

AnyOtrpMessage = OtrpMessage | GetDeviceStateResponse | BrokerError
