"""Hypothesis: whatever bytes come in, the OTrP parsers raise only OtrpError (never a library error)."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import cbor2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from teep_coap.otrp.encoding import cbor as otrp_cbor
from teep_coap.otrp.encoding import json as otrp_json
from teep_coap.otrp.encoding.tree import parse_tbs
from teep_coap.otrp.model import OtrpError
from teep_coap.otrp.protocol.agent import OtrpAgentConfig, OtrpAgentEngine
from teep_coap.otrp.protocol.wire import codec_for
from teep_coap.otrp.security.pki import OtrpPki, make_pki

from .conftest import all_messages

FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
PKI: OtrpPki = make_pki("RSA")


def _wire(encoding: str) -> list[bytes]:
    codec = codec_for(encoding)
    out = []
    for msg in all_messages()[:4]:
        if msg.IS_REQUEST:
            out.append(codec.seal(msg, PKI.tam, PKI.tee.public_key, PKI.tam.chain_der).wire)
        elif msg.ENCRYPTED == ("content",):
            out.append(codec.seal(msg, PKI.tee, PKI.tam.public_key).wire)
    return out


WIRE = {enc: _wire(enc) for enc in ("json", "cbor")}
TBS = {
    "json": [otrp_json.encode_tbs(m) for m in all_messages()],
    "cbor": [otrp_cbor.encode_tbs(m) for m in all_messages()],
}

json_leaf = st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.text(max_size=20) | st.floats()
json_tree = st.recursive(
    json_leaf,
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=12), kids, max_size=5),
    max_leaves=30,
)
names = st.sampled_from([m.TBS_NAME for m in all_messages()] + ["x"])
members = st.sampled_from(list(otrp_cbor.LABELS))


def _only_otrp_errors(fn, *args) -> None:  # type: ignore[no-untyped-def]
    with contextlib.suppress(OtrpError):
        fn(*args)


@FUZZ
@given(st.binary(max_size=300))
def test_json_tbs_random_bytes(data: bytes) -> None:
    _only_otrp_errors(otrp_json.decode_tbs, data)


@FUZZ
@given(st.binary(max_size=300))
def test_cbor_tbs_random_bytes(data: bytes) -> None:
    _only_otrp_errors(otrp_cbor.decode_tbs, data)


@FUZZ
@given(names, st.dictionaries(members, json_tree, max_size=8))
def test_parse_tbs_random_trees(name: str, body: dict) -> None:  # type: ignore[type-arg]
    _only_otrp_errors(parse_tbs, {name: body}, True)
    _only_otrp_errors(parse_tbs, {name: body}, False)


@FUZZ
@given(st.sampled_from(["json", "cbor"]), st.data())
def test_mutated_tbs(encoding: str, data: st.DataObject) -> None:
    original = data.draw(st.sampled_from(TBS[encoding]))
    pos = data.draw(st.integers(0, len(original) - 1))
    value = data.draw(st.integers(0, 255))
    mutated = original[:pos] + bytes([value]) + original[pos + 1 :]
    decode = otrp_json.decode_tbs if encoding == "json" else otrp_cbor.decode_tbs
    _only_otrp_errors(decode, mutated)


@FUZZ
@given(st.sampled_from(["json", "cbor"]), st.data())
def test_mutated_wire_messages(encoding: str, data: st.DataObject) -> None:
    codec = codec_for(encoding)
    original = data.draw(st.sampled_from(WIRE[encoding]))
    pos = data.draw(st.integers(0, len(original) - 1))
    value = data.draw(st.integers(0, 255))
    mutated = original[:pos] + bytes([value]) + original[pos + 1 :]
    _only_otrp_errors(codec.open, mutated, PKI.tee.private_key, (PKI.tam.public_key,), (PKI.root.cert,))
    _only_otrp_errors(codec.open, mutated, PKI.tam.private_key, (PKI.tee.public_key,), ())


@FUZZ
@given(st.sampled_from(["json", "cbor"]), json_tree)
def test_random_structures_through_codecs(encoding: str, tree: object) -> None:
    codec = codec_for(encoding)
    if encoding == "json":
        try:
            data = json.dumps({"CreateSDRequest": tree}).encode()
        except ValueError:
            return
    else:
        data = cbor2.dumps([4, cbor2.CBORTag(18, tree)])
    _only_otrp_errors(codec.open, data, PKI.tee.private_key, (), (PKI.root.cert,))


@pytest.fixture(scope="module")
def agents(tmp_path_factory: pytest.TempPathFactory) -> dict[str, OtrpAgentEngine]:
    return {
        enc: OtrpAgentEngine(
            OtrpAgentConfig(identity=PKI.tee, tam_anchors=(PKI.root.cert,), encoding=enc),  # type: ignore[arg-type]
            Path(tmp_path_factory.mktemp(f"agent-{enc}")),
        )
        for enc in ("json", "cbor")
    }


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.sampled_from(["json", "cbor"]), st.data())
def test_agent_answers_or_raises_otrp_error(
    agents: dict[str, OtrpAgentEngine], encoding: str, data: st.DataObject
) -> None:
    original = data.draw(st.sampled_from(WIRE[encoding]))
    pos = data.draw(st.integers(0, len(original) - 1))
    mutated = original[:pos] + bytes([data.draw(st.integers(0, 255))]) + original[pos + 1 :]
    _only_otrp_errors(agents[encoding].receive, mutated)
