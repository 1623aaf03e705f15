"""The TAM's answer to an Agent's Error: which new QueryRequest (if any) each error code calls for.

Pure: the engine (`protocol.tam`) stores the negotiated parameters and sends the request.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import Any

from teep_coap.errors import TeepCoapError
from teep_coap.model.codes import ErrorCode
from teep_coap.model.teep import Error
from teep_coap.protocol.tam_config import RequestParams, TamConfig
from teep_coap.security.suites import normalize_suite

log = logging.getLogger("teep_coap.protocol.tam")


@dataclass(frozen=True)
class Renegotiation:
    """A new QueryRequest to send; `negotiated` is the device's new record, None when unchanged."""

    request: RequestParams
    attestation_payload: bytes | None = None
    attestation_format: str | None = None
    negotiated: dict[str, Any] | None = None


def renegotiate(
    cfg: TamConfig, msg: Error, base: RequestParams, negotiated: dict[str, Any]
) -> Renegotiation | None:
    """The draft's reaction to each error code: a new request built from `base`, or None."""
    code = msg.err_code
    neg = dict(negotiated)
    if code == ErrorCode.ERR_ATTESTATION_REQUIRED:
        if cfg.tam_attestation_provider is not None:
            try:
                return Renegotiation(base, cfg.tam_attestation_provider(msg.challenge))
            except TeepCoapError as exc:
                log.warning("no TAM attestation for the Agent's challenge: %s", exc)
                return None
        if cfg.tam_attestation is None:
            return None
        return Renegotiation(base, cfg.tam_attestation, cfg.tam_attestation_format)
    if code == ErrorCode.ERR_UNSUPPORTED_CIPHER_SUITES:
        theirs = {normalize_suite(s) for s in msg.supported_teep_cipher_suites or ()}
        common = tuple(s for s in cfg.suites if s in theirs)
        if not common:
            return None
        neg["suites"] = [[list(op) for op in s] for s in common]
        base = replace(base, suites=common)
    elif code == ErrorCode.ERR_UNSUPPORTED_MSG_VERSION:
        common_v = tuple(v for v in cfg.versions if v in set(msg.versions or (0,)))
        if not common_v:
            return None
        neg["versions"] = list(common_v)
        base = replace(base, versions=common_v)
    elif code == ErrorCode.ERR_UNSUPPORTED_FRESHNESS_MECHANISMS:
        common_f = tuple(
            f for f in cfg.freshness_mechanisms if f in set(msg.supported_freshness_mechanisms or (0,))
        )
        if not common_f:
            return None
        neg["freshness"] = list(common_f)
        base = replace(base, freshness=common_f)
    elif code == ErrorCode.ERR_UNSUPPORTED_SUIT_REPORT:
        theirs_p = {tuple(p) for p in msg.supported_suit_cose_profiles or ()}
        common_p = tuple(p for p in cfg.suit_cose_profiles if p in theirs_p)
        if not common_p:
            return None
        neg["profiles"] = [list(p) for p in common_p]
        base = replace(base, profiles=common_p)
    else:
        return None
    return Renegotiation(base, negotiated=neg)


__all__ = ["Renegotiation", "renegotiate"]
