"""Issue 10's interop cases at engine level: messages of older or other implementations, written here
byte by byte with cbor2 (no code of another project), and the exact answers our engines give.

Each COSE_Sign1 is assembled by hand (`_sign1`) so the headers are exactly what the other
implementation sent: an empty kid, a kid in the protected bucket, a legacy alg label.
"""

from __future__ import annotations

from typing import Any

import cbor2
import pytest

from teep_coap.encoding.errors import TeepDecodeError
from teep_coap.encoding.liberal import DRAFT_15, decode_liberal
from teep_coap.model.codes import ErrorCode
from teep_coap.model.teep import Error, QueryRequest, QueryResponse, Success, Update
from teep_coap.protocol.agent import AgentEngine
from teep_coap.protocol.errors import InvalidMessage
from teep_coap.protocol.wire import CoseWire, wire_for
from teep_coap.security import cose
from teep_coap.security.keys import SigningKey, VerifyingKey

from .conftest import MakeWorld, World, cid, key, payload_of

TOKEN = bytes.fromhex("a0a1a2a3a4a5a6a7")
ES256, ESP256, EDDSA, ED25519 = -7, -9, -8, -19
TRUSTED_COMPONENTS = 2  # data-item-requested bit


def _sign1(
    payload: bytes, signer: SigningKey, alg: int, protected: dict[int, Any], unprotected: dict[int, Any]
) -> bytes:
    """COSE_Sign1_Tagged with exactly these headers (alg is put into the protected map first)."""
    prot = cbor2.dumps({1: alg, **protected})
    to_sign = cbor2.dumps(["Signature1", prot, b"", payload])
    return cbor2.dumps(cbor2.CBORTag(18, [prot, unprotected, payload, signer.sign(to_sign)]))


def _public_as(signer: SigningKey, alg: int) -> VerifyingKey:
    """The public key of `signer`, labelled with `alg` (to check an answer signed with that label)."""
    return VerifyingKey(signer.public.crypto_key, alg=alg, kid=signer.kid)


def _query_request(suites: list[Any], profiles: list[Any], data_items: int = TRUSTED_COMPONENTS) -> bytes:
    # [1, {20: token}, supported-teep-cipher-suites, supported-suit-cose-profiles, data-item-requested]
    return cbor2.dumps([1, {20: TOKEN}, suites, profiles, data_items])


def _answer(agent: AgentEngine, data: bytes) -> tuple[Any, dict[int, Any]]:
    """The Agent's answer: its TEEP message and its protected header."""
    out = agent.receive(data)
    assert out is not None
    info = cose.inspect(out)
    return payload_of(out), info.protected


def _agent(world: World, compat: str = "") -> AgentEngine:
    return AgentEngine(world.state, clock=world.clock, rng=world.rng, wire=wire_for("cbor", compat))


ESP256_PROFILE = [-16, ESP256, -29, -65534]


# ------------------------------------------------------------------ case 1: empty kid h''


def test_query_request_with_empty_kid_is_checked_against_every_trusted_tam_key(world: World) -> None:
    qr = _sign1(_query_request([[[18, ESP256]]], [ESP256_PROFILE]), world.tam_es, ESP256, {}, {4: b""})
    assert qr.hex().startswith("d28443a10128a10440")  # protected {1: -9}, unprotected {4: h''}
    msg, protected = _answer(world.agent, qr)
    assert isinstance(msg, QueryResponse) and msg.token == TOKEN
    assert protected == {1: ESP256}


def test_empty_kid_from_an_untrusted_signer_is_still_refused(world: World) -> None:
    stranger = key("stranger-es")
    qr = _sign1(_query_request([[[18, ESP256]]], [ESP256_PROFILE]), stranger, ESP256, {}, {4: b""})
    msg, _ = _answer(world.agent, qr)
    assert isinstance(msg, Error) and msg.err_code == ErrorCode.ERR_PERMANENT_ERROR
    assert "signature" in (msg.err_msg or "")


def test_kid_in_the_protected_header_is_read(world: World) -> None:
    qr = _sign1(
        _query_request([[[18, ESP256]]], [ESP256_PROFILE]), world.tam_es, ESP256, {4: world.tam_es.kid}, {}
    )
    msg, _ = _answer(world.agent, qr)
    assert isinstance(msg, QueryResponse) and msg.token == TOKEN


def _resign(
    data: bytes, signer: SigningKey, alg: int, protected: dict[int, Any], unprotected: dict[int, Any]
) -> bytes:
    payload = cose.inspect(data).payload
    assert payload is not None
    return _sign1(payload, signer, alg, protected, unprotected)


@pytest.mark.parametrize(
    ("protected", "unprotected"),
    [({}, {4: b""}), ({}, {}), ("kid", {})],
    ids=["empty-kid", "no-kid", "kid-protected"],
)
def test_tam_finds_the_device_without_a_usable_unprotected_kid(
    world: World, protected: Any, unprotected: dict[int, Any]
) -> None:
    world.publish(1, seq=1)
    qresp = world.agent.receive(world.tam.connect())
    assert qresp is not None
    agent_key = world.state.key
    prot = {4: agent_key.kid} if protected == "kid" else protected
    answer = world.tam.receive(_resign(qresp, agent_key, ESP256, prot, unprotected))
    assert answer is not None
    update = payload_of(answer)
    assert isinstance(update, Update) and len(update.manifest_list or ()) == 1


# ------------------------------------------------------------------ case 2, and Ed25519: the offered label


def test_tam_offering_only_es256_gets_an_answer_labelled_es256(world: World) -> None:
    qr = _sign1(_query_request([[[18, ES256]]], [ESP256_PROFILE]), world.tam_es, ES256, {}, {4: b""})
    out = world.agent.receive(qr)
    assert out is not None
    assert out[:6].hex() == "d28443a10126"  # COSE_Sign1, protected h'a10126' = {1: -7}
    verified = cose.verify(out, _public_as(world.state.key, ES256), allowed_algs=[ES256])
    assert verified.alg == ES256
    assert isinstance(payload_of(out), QueryResponse)


def test_update_signed_es256_is_answered_es256(world: World) -> None:
    env = world.envelope(1, seq=1)
    upd = _sign1(cbor2.dumps([3, {20: TOKEN, 10: [env]}]), world.tam_es, ES256, {}, {4: world.tam_es.kid})
    out = world.agent.receive(upd)
    assert out is not None and cose.inspect(out).protected == {1: ES256}
    assert isinstance(payload_of(out), Success)
    assert world.installed() == {cid(1): 1}


def test_tam_offering_only_eddsa_gets_an_answer_labelled_eddsa(make_world: MakeWorld) -> None:
    world = make_world(agent_alg="ed25519")
    profile = [-16, ED25519, -29, -65534]
    qr = _sign1(_query_request([[[18, EDDSA]]], [profile]), world.tam_ed, EDDSA, {}, {4: world.tam_ed.kid})
    out = world.agent.receive(qr)
    assert out is not None and cose.inspect(out).protected == {1: EDDSA}
    cose.verify(out, _public_as(world.state.key, EDDSA), allowed_algs=[EDDSA])
    assert isinstance(payload_of(out), QueryResponse)


def test_current_labels_are_unchanged(world: World) -> None:
    qr = _sign1(
        _query_request([[[18, ESP256]]], [ESP256_PROFILE]), world.tam_es, ESP256, {}, {4: world.tam_es.kid}
    )
    out = world.agent.receive(qr)
    assert out is not None and cose.inspect(out).protected == {1: ESP256}


def test_tam_accepts_a_query_response_labelled_es256(world: World) -> None:
    world.publish(1, seq=1)
    qresp = world.agent.receive(world.tam.connect())
    assert qresp is not None
    agent_key = world.state.key
    answer = world.tam.receive(_resign(qresp, agent_key, ES256, {}, {4: agent_key.kid}))
    assert answer is not None and isinstance(payload_of(answer), Update)


# ------------------------------------------------------------------ case 3: tc-list: []


def _query_response_with(world: World, **members: Any) -> bytes:
    """The Agent's real QueryResponse to our TAM, with option members replaced, re-signed."""
    qresp = world.agent.receive(world.tam.connect())
    assert qresp is not None
    obj = cbor2.loads(cose.inspect(qresp).payload or b"")
    for label, value in members.items():
        obj[1][int(label.lstrip("_"))] = value
    return _sign1(cbor2.dumps(obj), world.state.key, ESP256, {}, {4: world.state.key.kid})


def test_empty_tc_list_means_none_installed(world: World) -> None:
    world.publish(1, seq=1)
    data = _query_response_with(world, _8=[])
    assert "08" + "80" in cose.inspect(data).payload.hex()  # type: ignore[union-attr]  # 8: []
    answer = world.tam.receive(data)
    assert answer is not None
    update = payload_of(answer)
    assert isinstance(update, Update) and len(update.manifest_list or ()) == 1


def test_other_empty_optional_lists_mean_none(world: World) -> None:
    world.publish(1, seq=1)
    data = _query_response_with(world, _8=[], _14=[], _15=[], _9=[], _19=[])
    answer = world.tam.receive(data)
    assert answer is not None and isinstance(payload_of(answer), Update)


def test_empty_list_is_read_as_absent_and_said_so() -> None:
    raw = bytes.fromhex("8202a2140108" + "80")  # [2, {20: 1, 8: []}] -- token 1 is not a bstr
    with pytest.raises(TeepDecodeError):
        decode_liberal(raw)  # a real error beside the empty list still fails
    raw = cbor2.dumps([2, {20: TOKEN, 8: []}])
    msg, notes = decode_liberal(raw)
    assert isinstance(msg, QueryResponse) and msg.tc_list is None and msg.token == TOKEN
    assert notes == ("empty tc-list read as absent",)


def test_empty_mandatory_list_is_still_refused(world: World) -> None:
    qr = _sign1(_query_request([], [ESP256_PROFILE]), world.tam_es, ESP256, {}, {4: world.tam_es.kid})
    msg, _ = _answer(world.agent, qr)
    assert isinstance(msg, Error) and msg.err_code == ErrorCode.ERR_PERMANENT_ERROR


def test_tam_still_refuses_a_broken_query_response(world: World) -> None:
    data = _query_response_with(world, _8="not a list")
    with pytest.raises(InvalidMessage, match="malformed"):
        world.tam.receive(data)


# ------------------------------------------------------------------ case 5: draft-15 SUIT COSE profiles


def test_two_element_profile_is_accepted_only_with_compat(world: World) -> None:
    raw = _query_request([[[18, ES256]]], [[-7, 1]])
    qr = _sign1(raw, world.tam_es, ES256, {}, {4: b""})
    strict, _ = _answer(_agent(world), qr)
    assert isinstance(strict, Error) and strict.err_code == ErrorCode.ERR_PERMANENT_ERROR
    assert "malformed" in (strict.err_msg or "")
    liberal, protected = _answer(_agent(world, DRAFT_15), qr)
    assert isinstance(liberal, QueryResponse) and liberal.token == TOKEN and protected == {1: ES256}
    msg, notes = decode_liberal(raw, compat=DRAFT_15)
    assert isinstance(msg, QueryRequest)
    assert msg.supported_suit_cose_profiles == ((-16, -7, -29, 1),)
    assert notes == ("draft-15 two-element SUIT COSE profiles read as four-element ones",)


def test_two_element_profile_of_no_supported_kind_is_error_8(world: World) -> None:
    qr = _sign1(_query_request([[[18, ES256]]], [[-7, 3]]), world.tam_es, ES256, {}, {4: b""})  # A256GCM
    msg, _ = _answer(_agent(world, DRAFT_15), qr)
    assert isinstance(msg, Error) and msg.err_code == ErrorCode.ERR_UNSUPPORTED_SUIT_REPORT


def test_compat_error_with_two_element_profiles_decodes() -> None:
    raw = cbor2.dumps([6, {20: TOKEN, 4: [[-8, 24]]}, 8])
    with pytest.raises(TeepDecodeError):
        decode_liberal(raw)
    msg, _ = decode_liberal(raw, compat=DRAFT_15)
    assert isinstance(msg, Error) and msg.supported_suit_cose_profiles == ((-16, -8, -29, 24),)


def test_unknown_compat_setting_is_refused() -> None:
    from teep_coap.protocol.errors import ConfigError

    with pytest.raises(ConfigError, match="draft-15"):
        wire_for("cbor", "draft-12")
    with pytest.raises(ConfigError, match="CBOR"):
        wire_for("json", DRAFT_15)
    assert wire_for("cbor", DRAFT_15) == CoseWire(compat=DRAFT_15)
