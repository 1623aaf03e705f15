"""Every appendix sample of the draft (cleaned copy) parses into our model."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from teep_coap.otrp.encoding.tree import from_tree, parse_tbs
from teep_coap.otrp.model import (
    BY_OUTER_NAME,
    BY_TBS_NAME,
    DsiDocument,
    GetDeviceStateRequest,
    GetDeviceTEEStateResponse,
    OtrpMessage,
)
from teep_coap.otrp.security.jose import check_jwe_shape, parse_flattened_jws

from .conftest import REPO_SAMPLES

SAMPLES = sorted(REPO_SAMPLES.glob("A*.json"))
# which sample shows the plaintext of the encrypted members of another
PLAIN = {
    "A04": "A03", "A05": "A03", "A07": "A06", "A09": "A08", "A13": "A12", "A14": "A12", "A16": "A15",
    "A17": "A15", "A21": "A20", "A23": "A22", "A25": "A24", "A27": "A26",
}  # fmt: skip


def _load(prefix: str) -> Any:
    (path,) = REPO_SAMPLES.glob(f"{prefix}-*.json")
    return json.loads(path.read_text())


def _plaintext(prefix: str, member: str) -> Any:
    source = _load(PLAIN[prefix])
    if member == "edsi":
        return source  # A03 is the decrypted DSI document itself
    ((_, body),) = source.items()
    return body[member]


def _parse_tbs_with_jwe(prefix: str, tbs: dict[str, Any]) -> OtrpMessage:
    ((name, body),) = tbs.items()
    cls = BY_TBS_NAME[name]
    body = dict(body)
    for member in cls.ENCRYPTED:
        if isinstance(body.get(member), dict) and "ciphertext" in body[member]:
            check_jwe_shape(body[member], f"{name}.{member}")
            body[member] = _plaintext(prefix, member)
    return parse_tbs({name: body}, text=True)


def test_all_27_samples_have_a_cleaned_copy() -> None:
    # the draft's appendix "Sample Messages" has 27 samples, A.1 to A.27 (samples/README.md)
    assert [p.name.split("-")[0] for p in SAMPLES] == [f"A{i:02d}" for i in range(1, 28)]


@pytest.mark.parametrize("path", SAMPLES, ids=lambda p: p.name.split("-")[0])
def test_sample_parses(path: Path) -> None:
    prefix = path.name.split("-")[0]
    tree = json.loads(path.read_text())
    if path.name.endswith(".dsi.json"):
        doc = from_tree(DsiDocument, tree, True)
        assert doc.dsi.tee.sdlist is not None and doc.dsi.tee.sdlist.cnt == 1
        return
    ((name, value),) = tree.items()
    if name in BY_TBS_NAME:
        msg = _parse_tbs_with_jwe(prefix, tree)
        assert name == msg.TBS_NAME
        return
    # a signed wrapper: flattened JWS (or the GetDeviceStateResponse array of them)
    if name == "GetDeviceStateResponse":
        assert isinstance(value, list) and len(value) == 1
        ((element_name, value),) = value[0].items()
        assert element_name == "GetDeviceTEEStateResponse"
        cls: type[OtrpMessage] = GetDeviceTEEStateResponse
    else:
        cls = BY_OUTER_NAME[name]
    parts = parse_flattened_jws(value, name)
    assert parts.alg == "RS256"
    payload = json.loads(parts.payload)
    assert list(payload) == [cls.TBS_NAME]  # the outer name matches the signed TBS name
    msg = _parse_tbs_with_jwe(prefix, payload)
    assert type(msg) is cls
    if cls is GetDeviceStateRequest:
        assert len(parts.x5c) == 2


def test_sample_values_survive() -> None:
    a18 = parse_tbs(_load("A18"), text=True)
    assert a18.encrypted_ta.iv == bytes.fromhex("4F5472504973426F726E496E32303135")  # type: ignore[attr-defined]
    assert a18.nextdsi is True  # type: ignore[attr-defined]
    a10 = parse_tbs(_load("A10"), text=True)
    assert a10.content.changes.renewteespaik is False  # type: ignore[attr-defined]
    assert len(a10.content.changes.spcert) == 1  # type: ignore[attr-defined]
    a01 = parse_tbs(_load("A01"), text=True)
    assert a01.supportedsigalgs == ("RS256",) and a01.icaocspdat is not None  # type: ignore[attr-defined]
