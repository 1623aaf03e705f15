"""The OTrP model and its two bare encodings: round trips, documented variants, strict errors."""

from __future__ import annotations

import json

import pytest

from teep_coap.otrp.encoding import cbor as otrp_cbor
from teep_coap.otrp.encoding import json as otrp_json
from teep_coap.otrp.encoding.tree import from_tree, parse_broker_error, parse_reason, parse_tbs
from teep_coap.otrp.model import (
    MESSAGE_TYPES,
    BrokerError,
    CreateSDRequest,
    DeleteSDRequest,
    EncryptedTA,
    GetDeviceStateRequest,
    GetDeviceTEEStateResponse,
    OtrpDecodeError,
    OtrpErrorCode,
    Reason,
)

from .conftest import all_messages


@pytest.mark.parametrize("msg", all_messages(), ids=lambda m: type(m).__name__)
def test_json_round_trip(msg: object) -> None:
    data = otrp_json.encode_tbs(msg)  # type: ignore[arg-type]
    assert otrp_json.decode_tbs(data) == msg
    tree = json.loads(data)
    assert list(tree) == [type(msg).TBS_NAME]  # type: ignore[attr-defined]


@pytest.mark.parametrize("msg", all_messages(), ids=lambda m: type(m).__name__)
def test_cbor_round_trip(msg: object) -> None:
    data = otrp_cbor.encode_tbs(msg)  # type: ignore[arg-type]
    assert otrp_cbor.decode_tbs(data) == msg
    kind, body = otrp_cbor.loads(data)
    assert kind == otrp_cbor.MESSAGE_TYPE[type(msg)]  # type: ignore[index]
    assert all(isinstance(k, int) for k in body)


def test_cbor_is_smaller_and_binary_is_bstr() -> None:
    for msg in all_messages():
        assert len(otrp_cbor.encode_tbs(msg)) < len(otrp_json.encode_tbs(msg))
    gds = all_messages()[1]
    _, body = otrp_cbor.loads(otrp_cbor.encode_tbs(gds))
    dsi = body[otrp_cbor.LABELS["edsi"]][otrp_cbor.LABELS["dsi"]]
    assert isinstance(dsi[otrp_cbor.LABELS["tee"]][otrp_cbor.LABELS["cert"]], bytes)
    assert body[otrp_cbor.LABELS["status"]] == 0


def test_all_fourteen_message_types_covered() -> None:
    assert {type(m) for m in all_messages()} == set(MESSAGE_TYPES)
    assert len(MESSAGE_TYPES) == 14


def test_label_table_is_one_to_one() -> None:
    assert len(set(otrp_cbor.LABELS.values())) == len(otrp_cbor.LABELS)
    assert len(set(otrp_cbor.MESSAGE_TYPE.values())) == len(otrp_cbor.MESSAGE_TYPE)


def test_binary_members_are_standard_base64_with_padding() -> None:
    msg = all_messages()[2]
    tree = json.loads(otrp_json.encode_tbs(msg))
    assert tree["CreateSDTBSRequest"]["content"]["spcert"] == "MGNlcnQ="


def test_documented_variants_are_accepted() -> None:
    # string booleans, lone-string arrays, base64url, hex iv, number rid, "cnt" as string
    tree = {
        "GetDeviceStateTBSRequest": {
            "ver": "1.0",
            "rid": 7,
            "tid": "1",
            "ocspdat": "c2FtcGxl",
            "supportedsigalgs": "RS256",
        }
    }
    msg = parse_tbs(tree, text=True)
    assert isinstance(msg, GetDeviceStateRequest)
    assert msg.rid == "7" and msg.ocspdat == (b"sample",) and msg.supportedsigalgs == ("RS256",)
    sd = {
        "DeleteSDTBSRequest": {
            "ver": "1.0",
            "rid": "r",
            "tid": "t",
            "tee": "x",
            "nextdsi": " false",
            "dsihash": "Iu-c0-fGrpMmzbbtiWI1U8u7wMJE7IK8wkJpsVuf2js",
            "content": {"tamid": "t", "sdname": "s", "deleteta": "1"},
        }
    }
    msg2 = parse_tbs(sd, text=True)
    assert isinstance(msg2, DeleteSDRequest)
    assert msg2.nextdsi is False and msg2.content.deleteta is True and len(msg2.dsihash or b"") == 32


def test_reason_string_or_object() -> None:
    assert parse_reason("ERR_SD_ALREADY_EXIST", True, "r").error_code is OtrpErrorCode.ERR_SD_ALREADY_EXISTS
    assert parse_reason("TEE exploded", True, "r") == Reason(error_message="TEE exploded")
    obj = parse_reason({"error-code": "ERR_TA_NOT_FOUND", "error-message": "x"}, True, "r")
    assert obj.error_code is OtrpErrorCode.ERR_TA_NOT_FOUND


def test_sigalg_base64_variant() -> None:
    from teep_coap.otrp.model import TfwData

    t = from_tree(TfwData, {"tbs": "AA==", "cert": "AA==", "sigalg": "UlMyNTY=", "sig": "AA=="}, True)
    assert t.sigalg == "RS256"


@pytest.mark.parametrize(
    ("mutate", "where"),
    [
        (lambda b: b.pop("rid"), "CreateSDTBSRequest.rid: mandatory member is missing"),
        (lambda b: b.update(extra=1), "CreateSDTBSRequest.extra: unknown member"),
        (lambda b: b.update(nextdsi="maybe"), "CreateSDTBSRequest.nextdsi: expected a boolean"),
        (lambda b: b["content"].pop("did"), "CreateSDTBSRequest.content.did: mandatory member is missing"),
        (lambda b: b["content"].update(spcert="***"), "CreateSDTBSRequest.content.spcert: not base64"),
        (lambda b: b.update(ver=1), "CreateSDTBSRequest.ver: expected a string"),
    ],
)
def test_strict_errors_name_message_and_member(mutate: object, where: str) -> None:
    tree = json.loads(otrp_json.encode_tbs(all_messages()[2]))
    mutate(tree["CreateSDTBSRequest"])  # type: ignore[operator]
    with pytest.raises(OtrpDecodeError) as info:
        parse_tbs(tree, text=True)
    assert str(info.value).startswith(where)


def test_cbor_mode_is_strict_about_types() -> None:
    msg = all_messages()[2]
    assert isinstance(msg, CreateSDRequest)
    kind, body = otrp_cbor.loads(otrp_cbor.encode_tbs(msg))
    body[otrp_cbor.LABELS["nextdsi"]] = "false"  # a string boolean is a JSON-only variant
    with pytest.raises(OtrpDecodeError, match="nextdsi"):
        otrp_cbor.decode_tbs(otrp_cbor.dumps([kind, body]))
    body[otrp_cbor.LABELS["nextdsi"]] = False
    body[99] = 1
    with pytest.raises(OtrpDecodeError, match="unknown label"):
        otrp_cbor.decode_tbs(otrp_cbor.dumps([kind, body]))
    with pytest.raises(OtrpDecodeError, match="after the CBOR item"):
        otrp_cbor.decode_tbs(otrp_cbor.encode_tbs(msg) + b"\x00")


def test_encrypted_ta_rules() -> None:
    with pytest.raises(OtrpDecodeError, match="iv"):
        from_tree(EncryptedTA, {"key": "AA==", "iv": "00", "alg": "AESCBC", "ciphertadata": "AA=="}, True)
    with pytest.raises(OtrpDecodeError, match="not both"):
        from_tree(
            EncryptedTA,
            {
                "key": "AA==",
                "iv": "00" * 16,
                "alg": "AESCBC",
                "ciphertadata": "AA==",
                "ciphernewtadata": "AA==",
            },
            True,
        )
    ok = from_tree(
        EncryptedTA,
        {"key": "AA==", "iv": "AxY8DCtDaGlsbGljb3RoZQ", "alg": "AESCBC", "ciphertadata": "AA=="},
        True,
    )
    assert len(ok.iv) == 16  # A20's base64url iv is read too


def test_gds_response_pass_needs_edsi() -> None:
    with pytest.raises(OtrpDecodeError, match="needs signerreq and edsi"):
        from_tree(GetDeviceTEEStateResponse, {"ver": "1.0", "status": "pass", "rid": "r", "tid": "t"}, True)
    fail = from_tree(
        GetDeviceTEEStateResponse,
        {
            "ver": "1.0",
            "status": "fail",
            "rid": "r",
            "tid": "t",
            "reason": {"error-code": "ERR_TAM_NOT_TRUSTED"},
            "supportedsigalgs": ["RS256"],
        },
        True,
    )
    assert fail.reason == Reason(error_code=OtrpErrorCode.ERR_TAM_NOT_TRUSTED)


def test_broker_error_forms() -> None:
    a = parse_broker_error(
        {"OTrPBrokerError": {"ver": "1.0", "rid": "", "tid": "", "errcode": "ERR_AGENT_TEE_BUSY"}}, True
    )
    b = parse_broker_error(
        {
            "status": {
                "result": "fail",
                "error-code": "ERR_AGENT_TEE_FAIL",
                "error-message": "TEE fails to respond",
            }
        },
        True,
    )
    assert a == BrokerError(errcode=OtrpErrorCode.ERR_AGENT_TEE_BUSY)
    assert b.errcode is OtrpErrorCode.ERR_AGENT_TEE_FAIL


def test_json_reader_rejects_duplicates_and_constants() -> None:
    with pytest.raises(OtrpDecodeError, match="duplicate"):
        otrp_json.loads(b'{"a":1,"a":2}')
    with pytest.raises(OtrpDecodeError):
        otrp_json.loads(b'{"a":NaN}')
    with pytest.raises(OtrpDecodeError, match="deeper"):
        otrp_json.loads(b"[" * 40 + b"]" * 40)


def test_cbor_tables_match_the_mapping_document() -> None:
    """docs/otrp-cbor-mapping.md is the specification of the local mapping: the code must agree."""
    import re
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[2] / "docs" / "otrp-cbor-mapping.md").read_text()
    labels = {m.group(2): int(m.group(1)) for m in re.finditer(r"\| (\d+) \| `([a-z_-]+)` ", doc)}
    assert labels == otrp_cbor.LABELS
    codes = {m.group(2): int(m.group(1)) for m in re.finditer(r"\| (\d+) \| (ERR_[A-Z_]+) ", doc)}
    assert codes == otrp_cbor.ERROR_CODES
    assert otrp_cbor.STATUS_CODES == {"pass": 0, "fail": 1}
