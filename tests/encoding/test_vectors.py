"""The working group's example messages: decode->encode byte-identical, and the model built field by
field encodes to exactly those bytes."""

from __future__ import annotations

import pytest

from teep_coap.encoding import decode, encode
from teep_coap.model import Error, QueryRequest, QueryResponse, Success, SystemPropertyClaims, Update
from tests.conftest import read_hex_vector

TOKEN = bytes(range(0xA0, 0xB0))
DIGEST = bytes.fromhex("822F5820A7FD6593EAC32EB4BE578278E6540C5C09CFD7D4D234973054833B2B93030609")
VECTORS = ("query_request", "query_response", "update", "teep_success", "teep_error")
SIZES = {"query_request": 64, "query_response": 85, "update": 360, "teep_success": 21, "teep_error": 33}


def _update_manifest() -> bytes:
    data = read_hex_vector("update")
    # the only manifest: bytes(336) after the 2-byte head 59 014E
    start = data.index(bytes.fromhex("59014E")) + 3
    return data[start : start + 336]


def built(name: str) -> object:
    if name == "query_request":
        return QueryRequest(
            token=TOKEN,
            versions=(0,),
            supported_teep_cipher_suites=(((18, -9),), ((18, -19),)),
            supported_suit_cose_profiles=(
                (-16, -9, -29, -65534),
                (-16, -19, -29, -65534),
                (-16, -9, -29, 1),
                (-16, -19, -29, 24),
            ),
            data_item_requested=3,
        )
    if name == "query_response":
        return QueryResponse(
            token=TOKEN,
            selected_version=0,
            attestation_payload=b"",
            tc_list=(SystemPropertyClaims(component_id=(bytes(range(1, 16)),), parameters={3: DIGEST}),),
        )
    if name == "update":
        return Update(token=TOKEN, manifest_list=(_update_manifest(),))
    if name == "teep_success":
        return Success(token=TOKEN)
    assert name == "teep_error"
    return Error(token=TOKEN, err_msg="disk-full", err_code=17)


@pytest.mark.parametrize("name", VECTORS)
def test_decode_encode_identical(name: str) -> None:
    data = read_hex_vector(name)
    assert len(data) == SIZES[name]
    msg = decode(data)
    assert encode(msg) == data


@pytest.mark.parametrize("name", VECTORS)
def test_model_encodes_to_vector(name: str) -> None:
    msg = built(name)
    data = read_hex_vector(name)
    assert encode(msg) == data  # type: ignore[arg-type]
    assert decode(data) == msg


def test_cddl_order_is_not_core_sorting() -> None:
    """RFC 8949 §4.2.1 sorting would put label 3 (versions) before 20 (token): the WG examples don't."""
    data = read_hex_vector("query_request")
    assert data[3:5] == bytes([0x14, 0x50])  # token first


def test_label_order_is_kept() -> None:
    msg = Error(token=TOKEN, err_msg="disk-full", err_code=17, label_order=(12, 20))
    data = encode(msg)
    assert data[3] == 0x0C  # err-msg first
    again = decode(data)
    assert again.label_order == (12, 20)
    assert encode(again) == data
