"""Shared OTrP fixtures: a demo PKI per key type (made once) and one sample of every message."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from teep_coap.otrp.model import (
    CreateSDContent,
    CreateSDRequest,
    CreateSDResponse,
    CreateSDResultContent,
    DeleteSDContent,
    DeleteSDRequest,
    DeleteSDResponse,
    DeleteTAContent,
    DeleteTARequest,
    DeleteTAResponse,
    Dsi,
    DsiDocument,
    EncryptedTA,
    GetDeviceStateRequest,
    GetDeviceTEEStateResponse,
    InstallTARequest,
    InstallTAResponse,
    OtrpErrorCode,
    OtrpMessage,
    Reason,
    ResultContent,
    SDChanges,
    SdInfo,
    SdList,
    TAContent,
    TaInfo,
    TeeAik,
    TeeInfo,
    TfwData,
    UpdateSDContent,
    UpdateSDRequest,
    UpdateSDResponse,
    UpdateSDResultContent,
    UpdateTARequest,
    UpdateTAResponse,
)
from teep_coap.otrp.security.pki import OtrpPki, make_pki

REPO_SAMPLES = Path(__file__).resolve().parent / "samples"


@pytest.fixture(scope="session")
def rsa_pki() -> OtrpPki:
    return make_pki("RSA")


@pytest.fixture(scope="session")
def ec_pki() -> OtrpPki:
    return make_pki("EC")


@pytest.fixture(scope="session")
def other_pki() -> OtrpPki:
    """An unrelated PKI: its root trusts nothing of `rsa_pki`."""
    return make_pki("RSA")


def sample_dsi(tee_cert: bytes = b"\x30\x03tee", cacert: tuple[bytes, ...] = (b"\x30\x02ca",)) -> Dsi:
    return Dsi(
        tfwdata=TfwData(tbs=b"tid-1", cert=b"\x30\x02fw", sigalg="RS256", sig=b"\x01" * 32),
        tee=TeeInfo(
            name="Primary TEE",
            ver="1.0",
            cert=tee_cert,
            cacert=cacert,
            sdlist=SdList(
                cnt=1,
                sd=(
                    SdInfo(
                        name="sd.bank.com",
                        spid="bank.com",
                        talist=(TaInfo(taid="bank.ta", taname="Bank app"), TaInfo(taid="bank.ta2")),
                    ),
                ),
            ),
            teeaiklist=(TeeAik(spaik=b"\x30\x10aik", spaiktype="RSA", spid="bank.com"),),
        ),
    )


DID = hashlib.sha256(b"tee cert").digest()
HEAD = {"rid": "req-01", "tid": "tran-01", "tee": "Primary TEE", "nextdsi": False, "dsihash": b"\x22" * 32}
RHEAD = {"rid": "req-01", "tid": "tran-01"}
ENC_TA = EncryptedTA(key=b"\x01" * 40, iv=b"\x02" * 16, ciphertadata=b"\x03" * 64, cipherpdata=b"\x04" * 16)
ENC_NEW_TA = EncryptedTA(key=b"\x01" * 40, iv=b"\x02" * 16, ciphernewtadata=b"\x03" * 64)


def all_messages() -> list[OtrpMessage]:
    """One populated instance of each of the 14 TBS objects (requests and responses of 7 commands)."""
    fail = Reason(error_code=OtrpErrorCode.ERR_SD_NOT_FOUND, error_message="no such SD")
    ta_content = TAContent(tamid="tam.example", spid="bank.com", sdname="sd.bank.com", taid="bank.ta")
    return [
        GetDeviceStateRequest(
            rid="r", tid="t", ocspdat=(b"ocsp1", b"ocsp2"), supportedsigalgs=("RS256", "ES256")
        ),
        GetDeviceTEEStateResponse(rid="r", tid="t", signerreq=False, edsi=DsiDocument(dsi=sample_dsi())),
        CreateSDRequest(
            **HEAD,
            content=CreateSDContent(
                spid="bank.com", sdname="sd.bank.com", spcert=b"\x30cert", tamid="tam", did=DID
            ),
        ),
        CreateSDResponse(
            **RHEAD,
            content=CreateSDResultContent(
                did=DID, sdname="sd.bank.com", teespaik=b"\x30aik", dsi=sample_dsi()
            ),
        ),
        UpdateSDRequest(
            **HEAD,
            content=UpdateSDContent(
                tamid="tam",
                spid="bank.com",
                sdname="sd.bank.com",
                changes=SDChanges(
                    newsdname="sd2",
                    newspid="bank2.com",
                    spcert=(b"\x30c1",),
                    deloldspcert=(b"\xaa" * 32,),
                    renewteespaik=True,
                ),
            ),
        ),
        UpdateSDResponse(
            **RHEAD,
            content=UpdateSDResultContent(did=DID, cert=b"\x30c", teespaik=b"\x30k", teespaiktype="ECC"),
        ),
        DeleteSDRequest(**HEAD, content=DeleteSDContent(tamid="tam", sdname="sd.bank.com", deleteta=True)),
        DeleteSDResponse(**RHEAD, status="fail", content=ResultContent(did=DID, reason=fail)),
        InstallTARequest(**HEAD, content=ta_content, encrypted_ta=ENC_TA),
        InstallTAResponse(**RHEAD, content=ResultContent(did=DID, dsi=sample_dsi())),
        UpdateTARequest(**HEAD, content=ta_content, encrypted_ta=ENC_NEW_TA),
        UpdateTAResponse(**RHEAD, content=ResultContent(did=DID)),
        DeleteTARequest(**HEAD, content=DeleteTAContent(tamid="tam", sdname="sd.bank.com", taid="bank.ta")),
        DeleteTAResponse(**RHEAD, content=ResultContent(did=DID)),
    ]
