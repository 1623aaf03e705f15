"""Message model: dataclasses and numbers, no encoding, no I/O."""

from teep_coap.model.codes import (
    CipherSuite,
    DataItem,
    ErrorCode,
    FreshnessMechanism,
    Label,
    MessageType,
    SuitCoseProfile,
)
from teep_coap.model.teep import (
    ComponentId,
    Error,
    QueryRequest,
    QueryResponse,
    RequestedTcInfo,
    Success,
    SystemPropertyClaims,
    TeepMessage,
    Update,
)

__all__ = [
    "CipherSuite",
    "ComponentId",
    "DataItem",
    "Error",
    "ErrorCode",
    "FreshnessMechanism",
    "Label",
    "MessageType",
    "QueryRequest",
    "QueryResponse",
    "RequestedTcInfo",
    "Success",
    "SuitCoseProfile",
    "SystemPropertyClaims",
    "TeepMessage",
    "Update",
]
