"""Unhappy paths: each asserts the exact answer and that stored state did not change where it must not."""

from __future__ import annotations

import cbor2
import pytest

from teep_coap.encoding.cbor_codec import encode
from teep_coap.model.codes import (
    PROFILE_ED25519_CHACHA_POLY,
    PROFILE_ESP256_A128CTR,
    PROFILE_ESP256_A128GCM,
    SUITE_SIGN1_ED25519,
    SUITE_SIGN1_ESP256,
    DataItem,
    ErrorCode,
)
from teep_coap.model.teep import Error, QueryRequest, QueryResponse, Success, Update
from teep_coap.protocol.errors import IdentityMismatch, InvalidMessage
from teep_coap.protocol.wire import seal
from teep_coap.security.keys import generate_key
from teep_coap.store.agentdir import load_agent_state

from .conftest import MakeWorld, World, cid, key, payload_of

OUR_SUITES = (SUITE_SIGN1_ESP256,)
OUR_PROFILES = (PROFILE_ESP256_A128CTR, PROFILE_ESP256_A128GCM)


def _agent_answer(world: World, msg: QueryRequest | Update, signer: object = None) -> object:
    data = seal(msg, signer or world.tam_es)  # type: ignore[arg-type]
    before = world.agent_state()
    out = world.agent.receive(data)
    assert out is not None
    return payload_of(out), before


# ------------------------------------------------------------------ TAM side


def test_replayed_query_response_is_ignored(world: World) -> None:
    world.publish(1, seq=1)
    qr = world.tam.connect()
    qresp = world.agent.receive(qr)
    assert qresp is not None
    assert world.tam.receive(qresp) is not None
    before = world.tam_state()
    assert world.tam.receive(qresp) is None  # duplicate after the first valid answer
    assert world.tam_state() == before


def test_duplicated_success_is_ignored(world: World) -> None:
    world.publish(1, seq=1)
    s = world.session()
    success = s.sent[-1]
    before = world.tam_state()
    assert world.tam.receive(success) is None
    assert world.tam_state() == before
    assert world.outcomes() == ["success"]


def test_expired_token(make_world: MakeWorld) -> None:
    w = make_world(tam_attestation="none", token_lifetime=60.0)
    w.publish(1, seq=1)
    qresp = w.agent.receive(w.tam.connect())
    assert qresp is not None
    w.clock.advance(61)
    before = w.tam_state()
    with pytest.raises(InvalidMessage, match="expired"):
        w.tam.receive(qresp)
    assert w.tam_state() == before


def test_expired_challenge(world: World) -> None:
    qresp = world.agent.receive(world.tam.connect())
    assert qresp is not None
    world.clock.advance(world.tam.config.token_lifetime + 1)
    with pytest.raises(InvalidMessage, match="expired"):
        world.tam.receive(qresp)


def test_wrong_signer_at_tam(world: World) -> None:
    world.tam.connect()
    stranger = generate_key("esp256")
    forged = seal(QueryResponse(token=b"t" * 16, selected_version=0), stranger)
    before = world.tam_state()
    with pytest.raises(InvalidMessage, match="unknown signer"):
        world.tam.receive(forged)
    assert world.tam_state() == before


def test_tampered_message_at_tam(world: World) -> None:
    qresp = world.agent.receive(world.tam.connect())
    assert qresp is not None
    tampered = bytearray(qresp)
    tampered[-5] ^= 0x01  # inside the signature
    before = world.tam_state()
    with pytest.raises(InvalidMessage, match="signature"):
        world.tam.receive(bytes(tampered))
    payload_flip = bytearray(qresp)
    payload_flip[60] ^= 0x01  # inside the payload
    with pytest.raises(InvalidMessage):
        world.tam.receive(bytes(payload_flip))
    assert world.tam_state() == before


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x00",
        b"garbage",
        b"\xd2\x84",
        cbor2.dumps(cbor2.CBORTag(18, [b"", {}, b"x", b"s"])),
        b"\xd8\x62\x80",
    ],
)
def test_malformed_input_at_tam(world: World, data: bytes) -> None:
    before = world.tam_state()
    with pytest.raises(InvalidMessage):
        world.tam.receive(data)
    assert world.tam_state() == before


def test_unsigned_message_at_tam(world: World) -> None:
    with pytest.raises(InvalidMessage, match="not a signed"):
        world.tam.receive(encode(QueryResponse(token=b"t" * 16)))


def test_transport_identity_mismatch(make_world: MakeWorld) -> None:
    w = make_world(psk_identity="device-1")
    other = key("agent-other")
    w.store.add_device(
        kid=other.kid, alg=other.alg, public_key=other.public.to_pem(), now=0.0, psk_identity="device-2"
    )
    qresp = w.agent.receive(w.tam.connect("device-1"))
    assert qresp is not None
    before = w.tam_state()
    with pytest.raises(IdentityMismatch, match="device-2"):
        w.tam.receive(qresp, "device-2")
    with pytest.raises(IdentityMismatch):
        w.tam.receive(qresp, "unregistered-identity")  # the device has its own registered identity
    assert w.tam_state() == before
    assert w.tam.receive(qresp, "device-1") is None  # the right identity is accepted


def test_query_response_answers_superseded_request(make_world: MakeWorld) -> None:
    w = make_world(psk_identity="d1", max_outstanding_per_device=2)
    first = w.tam.connect("d1")
    w.tam.connect("d1")
    w.tam.connect("d1")  # the cap of 2 supersedes the first request
    qresp = w.agent.receive(first)
    assert qresp is not None
    with pytest.raises(InvalidMessage, match="superseded"):
        w.tam.receive(qresp)


def test_restart_with_memory_store_gives_clear_error_then_next_session_works(make_world: MakeWorld) -> None:
    from teep_coap.protocol.tam import TamEngine
    from teep_coap.store.tam_db import TamStore

    w = make_world()
    qresp = w.agent.receive(w.tam.connect())
    assert qresp is not None

    def fresh() -> TamEngine:  # a TAM that keeps its state in memory and just restarted
        store = TamStore("sqlite://")
        k = w.state.key
        store.add_device(kid=k.kid, alg=k.alg, public_key=k.public.to_pem(), now=0.0)
        return TamEngine(w.tam.config, store, clock=w.clock, rng=w.rng)

    restarted = fresh()
    with pytest.raises(InvalidMessage, match="no outstanding request"):
        restarted.receive(qresp)
    from teep_coap.protocol.broker import in_memory_post, run_in_memory

    s = run_in_memory(w.agent, "coap://tam", in_memory_post(restarted))
    assert s.result is not None and s.result.ok and s.rounds == 2


def test_suit_report_nonce_mismatch_drops_success(world: World) -> None:
    from teep_coap.security.suit.model import SuitDigest
    from teep_coap.security.suit.report import build_report, sign_report

    world.publish(1, seq=1)
    qresp = world.agent.receive(world.tam.connect())
    upd = payload_of(world.tam.receive(qresp))  # type: ignore[arg-type]
    assert isinstance(upd, Update) and upd.token is not None
    report = build_report(manifest_uri="#x", manifest_digest=SuitDigest.of(b"m"), nonce=b"not-the-token")
    signed = sign_report(report, world.state.report_key, teep_key=world.state.key)
    bad = seal(Success(token=upd.token, suit_reports=(signed,)), world.state.key)
    before = world.tam_state()
    with pytest.raises(InvalidMessage, match="suit-report-nonce"):
        world.tam.receive(bad)
    assert world.tam_state() == before
    good_report = build_report(manifest_uri="#x", manifest_digest=SuitDigest.of(b"m"), nonce=upd.token)
    good = seal(
        Success(token=upd.token, suit_reports=(sign_report(good_report, world.state.report_key),)),
        world.state.key,
    )
    assert world.tam.receive(good) is None
    assert world.outcomes() == ["success"]


def test_tam_refuses_messages_a_tam_never_receives(world: World) -> None:
    bogus = seal(QueryRequest(token=b"t" * 16, data_item_requested=2), world.state.key)
    with pytest.raises(InvalidMessage, match="does not accept QueryRequest"):
        world.tam.receive(bogus)


# ------------------------------------------------------------------ Agent side


def _qr(**kw: object) -> QueryRequest:
    base: dict[str, object] = dict(
        token=b"\xa0" * 16, versions=(0,), data_item_requested=int(DataItem.TRUSTED_COMPONENTS)
    )
    base.update(kw)
    return QueryRequest(**base)  # type: ignore[arg-type]


def test_wrong_signer_at_agent(world: World) -> None:
    resp, before = _agent_answer(world, _qr(), signer=generate_key("esp256"))
    assert isinstance(resp, Error) and resp.err_code == ErrorCode.ERR_PERMANENT_ERROR and resp.token is None
    assert resp.err_msg is not None and resp.err_msg.startswith("signer not trusted")
    assert world.agent_state() == before


def test_tampered_message_at_agent(world: World) -> None:
    data = bytearray(seal(_qr(), world.tam_es))
    data[-3] ^= 0x40
    before = world.agent_state()
    resp = payload_of(world.agent.receive(bytes(data)))  # type: ignore[arg-type]
    assert isinstance(resp, Error) and resp.err_code == 1 and resp.token is None
    assert "signature" in (resp.err_msg or "")
    assert world.agent_state() == before


def test_unsupported_version(world: World) -> None:
    resp, before = _agent_answer(world, _qr(versions=(3, 7)))
    assert resp == Error(
        err_code=ErrorCode.ERR_UNSUPPORTED_MSG_VERSION,
        token=b"\xa0" * 16,
        err_msg="none of versions [3, 7] is supported",
        versions=(0,),
    )
    assert world.agent_state() == before


def test_unsupported_cipher_suites(world: World) -> None:
    resp, _ = _agent_answer(world, _qr(supported_teep_cipher_suites=(SUITE_SIGN1_ED25519,)))
    assert resp == Error(
        err_code=ErrorCode.ERR_UNSUPPORTED_CIPHER_SUITES,
        token=b"\xa0" * 16,
        err_msg="no offered cipher suite is supported",
        supported_teep_cipher_suites=OUR_SUITES,
    )


def test_unsupported_signature_algorithm_gives_error_5(make_world: MakeWorld) -> None:
    """A TAM that can only sign Ed25519 talking to a P-256-only Agent."""
    w = make_world(tam_keys=("ed25519",))
    out = w.agent.receive(w.tam.connect())
    resp = payload_of(out)  # type: ignore[arg-type]
    assert isinstance(resp, Error) and resp.err_code == ErrorCode.ERR_UNSUPPORTED_CIPHER_SUITES
    assert resp.supported_teep_cipher_suites == OUR_SUITES and resp.token is None
    # the TAM has no suite in common: it ends the session
    assert w.tam.receive(out) is None  # type: ignore[arg-type]
    assert w.outcomes() == ["error:ERR_UNSUPPORTED_CIPHER_SUITES"]


def test_unsupported_freshness(world: World) -> None:
    resp, before = _agent_answer(world, _qr(supported_freshness_mechanisms=(1,)))
    assert resp == Error(
        err_code=ErrorCode.ERR_UNSUPPORTED_FRESHNESS_MECHANISMS,
        token=b"\xa0" * 16,
        err_msg="none of freshness mechanisms [1] is supported",
        supported_freshness_mechanisms=(0,),
    )
    assert world.agent_state() == before


def test_unsupported_suit_profiles(world: World) -> None:
    resp, _ = _agent_answer(world, _qr(supported_suit_cose_profiles=(PROFILE_ED25519_CHACHA_POLY,)))
    assert resp == Error(
        err_code=ErrorCode.ERR_UNSUPPORTED_SUIT_REPORT,
        token=b"\xa0" * 16,
        err_msg="no offered SUIT COSE profile is supported",
        supported_suit_cose_profiles=OUR_PROFILES,
    )


def test_tam_renegotiates_suit_profiles(make_world: MakeWorld) -> None:
    """Error 8 → the TAM sends a new QueryRequest with the common profiles; the session completes."""
    w = make_world(suit_cose_profiles=(PROFILE_ED25519_CHACHA_POLY, PROFILE_ESP256_A128GCM))
    w.state.config.suit_cose_profiles = (PROFILE_ESP256_A128GCM,)
    w.publish(1, seq=1)
    w.tam.config.suit_cose_profiles = (PROFILE_ED25519_CHACHA_POLY,)  # first offer: nothing in common
    err = w.agent.receive(w.tam.connect())
    assert payload_of(err).err_code == ErrorCode.ERR_UNSUPPORTED_SUIT_REPORT  # type: ignore[arg-type,union-attr]
    w.tam.config.suit_cose_profiles = (PROFILE_ED25519_CHACHA_POLY, PROFILE_ESP256_A128GCM)
    qr2 = w.tam.receive(err)  # type: ignore[arg-type]
    assert qr2 is not None
    msg = payload_of(qr2)
    assert isinstance(msg, QueryRequest) and msg.supported_suit_cose_profiles == (PROFILE_ESP256_A128GCM,)
    upd = w.tam.receive(w.agent.receive(qr2))  # type: ignore[arg-type]
    w.tam.receive(w.agent.receive(upd))  # type: ignore[arg-type]
    assert w.installed() == {cid(1): 1} and w.outcomes() == ["success"]


def test_tam_renegotiates_cipher_suite_after_error_5(world: World) -> None:
    world.tam.connect()
    err = seal(
        Error(
            err_code=ErrorCode.ERR_UNSUPPORTED_CIPHER_SUITES,
            supported_teep_cipher_suites=(SUITE_SIGN1_ESP256,),
        ),
        world.state.key,
    )
    qr2 = world.tam.receive(err)
    assert qr2 is not None
    from teep_coap.security import cose

    assert cose.inspect(qr2).structure == "COSE_Sign1"
    assert payload_of(qr2).supported_teep_cipher_suites == (SUITE_SIGN1_ESP256,)  # type: ignore[union-attr]
    assert world.store.device_by_kid(world.state.key.kid).negotiated["suites"] == [[[18, -9]]]  # type: ignore[union-attr]


def test_version_error_without_common_version_ends_session(world: World) -> None:
    world.tam.connect()
    err = seal(Error(err_code=ErrorCode.ERR_UNSUPPORTED_MSG_VERSION, versions=(5,)), world.state.key)
    assert world.tam.receive(err) is None
    assert world.outcomes() == ["error:ERR_UNSUPPORTED_MSG_VERSION"]


def test_attestation_required(world: World) -> None:
    world.state.config.require_tam_attestation = True
    resp, before = _agent_answer(world, _qr())
    assert isinstance(resp, Error) and resp.err_code == ErrorCode.ERR_ATTESTATION_REQUIRED
    assert resp.token == b"\xa0" * 16 and resp.supported_freshness_mechanisms == (0,)
    assert resp.challenge is not None and len(resp.challenge) == 16
    assert world.state.broker.tam_challenges == [resp.challenge.hex()]  # remembered, nothing else changed
    assert world.installed() == {} and world.state.broker.requested == {}
    assert before != world.agent_state()


def test_tam_answers_attestation_required_with_its_attestation(make_world: MakeWorld) -> None:
    w = make_world()
    w.tam.config.tam_attestation = b"tam-evidence"
    w.state.config.require_tam_attestation = True
    err = w.agent.receive(w.tam.connect())
    qr2 = w.tam.receive(err)  # type: ignore[arg-type]
    assert qr2 is not None
    msg = payload_of(qr2)
    assert isinstance(msg, QueryRequest) and msg.attestation_payload == b"tam-evidence"
    resp = payload_of(w.agent.receive(qr2))  # type: ignore[arg-type]
    assert isinstance(resp, QueryResponse)


def test_tam_without_attestation_gives_up_after_error_7(world: World) -> None:
    world.state.config.require_tam_attestation = True
    err = world.agent.receive(world.tam.connect())
    assert world.tam.receive(err) is None  # type: ignore[arg-type]
    assert world.outcomes() == ["error:ERR_ATTESTATION_REQUIRED"]


def test_rollback_attempt(world: World) -> None:
    world.publish(1, seq=2, payload=b"v2")
    world.session()
    assert world.installed() == {cid(1): 2}
    old = world.envelope(1, 1, payload=b"v1")
    upd = Update(token=b"\xb0" * 16, manifest_list=(old,))
    components_before = world.state.components.list()
    resp, _ = _agent_answer(world, upd)
    assert isinstance(resp, Error) and resp.err_code == ErrorCode.ERR_MANIFEST_PROCESSING_FAILED
    assert resp.token == b"\xb0" * 16 and resp.suit_reports is not None and len(resp.suit_reports) == 1
    from teep_coap.protocol.reports import report_nonce

    assert report_nonce(resp.suit_reports[0]) == b"\xb0" * 16
    assert "manifest 0" in (resp.err_msg or "")
    assert world.state.components.list() == components_before
    assert world.state.components.image(cid(1)) == b"v2"


def test_replayed_update_is_one_install_and_two_successes(world: World) -> None:
    """The same manifest (sequence number and digest) again is "already installed", not a rollback:
    Success, and the store is not written (installed_at unchanged). A different manifest with the same
    sequence number is still refused (tests/security/test_suit_process.py)."""
    world.publish(1, seq=1)
    s = world.session()
    update = s.received[1]
    before = world.state.components.list()
    resp = payload_of(world.agent.receive(update))  # type: ignore[arg-type]
    assert isinstance(resp, Success) and "already installed" in world.agent.last_note
    assert world.state.components.list() == before
    # the TAM already took the answer to that Update: it ignores this one
    tam_before = world.tam_state()
    assert world.tam.receive(seal(resp, world.state.key)) is None
    assert world.tam_state() == tam_before


def test_manifest_from_untrusted_signer(world: World) -> None:
    env = world.envelope(1, 1, signer=generate_key("esp256"))
    resp, _ = _agent_answer(world, Update(token=b"\xc0" * 16, manifest_list=(env,)))
    assert isinstance(resp, Error) and resp.err_code == ErrorCode.ERR_MANIFEST_PROCESSING_FAILED
    assert world.installed() == {}


def test_tam_records_manifest_failure(world: World) -> None:
    """Error 17 answering the TAM's Update: session ends, nothing recorded as installed."""
    world.publish(1, seq=1)
    qresp = world.agent.receive(world.tam.connect())
    upd = world.tam.receive(qresp)  # type: ignore[arg-type]
    # the device's store already holds a newer version (installed by someone else)
    world.state.components.install(cid(1), b"newer", b"env", 9)
    err = world.agent.receive(upd)  # type: ignore[arg-type]
    assert payload_of(err).err_code == 17  # type: ignore[arg-type,union-attr]
    assert world.tam.receive(err) is None  # type: ignore[arg-type]
    assert world.outcomes() == ["error:ERR_MANIFEST_PROCESSING_FAILED"]
    assert world.tam_installed() == {}


def test_older_draft_layout_legacy_ids_and_label_5(world: World) -> None:
    """A draft-20 style QueryRequest: ES256 (-7) ids in suites and profiles, retired label 5."""
    payload = cbor2.dumps(
        [1, {20: b"\xa0" * 16, 5: [[18, -7]], 3: [0]}, [[[18, -7]]], [[-16, -7, -29, -65534]], 2]
    )
    from teep_coap.security.cose import sign1

    resp = payload_of(world.agent.receive(sign1(payload, world.tam_es)))  # type: ignore[arg-type]
    assert isinstance(resp, QueryResponse) and resp.token == b"\xa0" * 16 and resp.selected_version == 0


def test_older_draft_layout_draft06_is_permanent_error(world: World) -> None:
    """draft-06: cipher suites as integers in the options map, no positional members."""
    from teep_coap.security.cose import sign1

    payload = cbor2.dumps([1, {20: b"\xa0" * 16, 1: [1, 2], 3: [0]}, 3])
    before = world.agent_state()
    resp = payload_of(world.agent.receive(sign1(payload, world.tam_es)))  # type: ignore[arg-type]
    assert isinstance(resp, Error) and resp.err_code == ErrorCode.ERR_PERMANENT_ERROR and resp.token is None
    assert (resp.err_msg or "").startswith("malformed TEEP message")
    assert world.agent_state() == before


@pytest.mark.parametrize(
    ("data", "msg_start"),
    [
        (b"", "empty message"),
        (b"\x01\x02garbage", "message is not COSE-signed"),
        (b"\xd2\x84\x40", "malformed COSE"),
        (b"\xd2" + cbor2.dumps([b"", {}, b"x", b"s"]), "malformed COSE"),
    ],
)
def test_malformed_input_at_agent(world: World, data: bytes, msg_start: str) -> None:
    before = world.agent_state()
    resp = payload_of(world.agent.receive(data))  # type: ignore[arg-type]
    assert isinstance(resp, Error) and resp.err_code == ErrorCode.ERR_PERMANENT_ERROR and resp.token is None
    assert (resp.err_msg or "").startswith(msg_start), resp.err_msg
    assert world.agent_state() == before


def test_agent_refuses_messages_for_a_tam(world: World) -> None:
    resp, _ = _agent_answer(world, Success(token=b"\xa0" * 16))  # type: ignore[arg-type]
    assert resp == Error(err_code=1, token=b"\xa0" * 16, err_msg="an Agent does not accept Success")


def test_unsigned_vector_accepted_only_when_enabled(world: World) -> None:
    from tests.conftest import read_hex_vector

    qr = read_hex_vector("query_request")
    assert payload_of(world.agent.receive(qr)).err_msg == "message is not COSE-signed"  # type: ignore[arg-type,union-attr]
    world.state.config.accept_unsigned = True
    resp = payload_of(world.agent.receive(qr))  # type: ignore[arg-type]
    # the WG example asks for attestation + trusted components with a token and no challenge:
    # the token becomes the nonce of the evidence
    assert isinstance(resp, QueryResponse) and resp.token == bytes(range(0xA0, 0xB0))
    assert resp.attestation_payload is not None


def test_all_data_items_requested(world: World) -> None:
    """Bits 1|2|4|8: evidence (nonce = token), tc-list, no ext-list (none supported, the CDDL forbids
    an empty one), the SUIT reports of the last Update."""
    world.publish(1, seq=1)
    world.session()
    resp, _ = _agent_answer(world, _qr(data_item_requested=15))
    assert isinstance(resp, QueryResponse) and resp.token == b"\xa0" * 16
    assert resp.attestation_payload is not None and resp.ext_list is None
    assert resp.tc_list is not None and [c.component_id for c in resp.tc_list] == [cid(1)]
    assert resp.suit_reports is not None and len(resp.suit_reports) == 1


def test_tokenless_error_answers_the_request_it_could_not_verify(make_world: MakeWorld) -> None:
    w = make_world(tam_attestation="none", tam_keys=("ed25519",))
    out = w.agent.receive(w.tam.connect())
    assert out is not None
    err = payload_of(out)
    assert (
        isinstance(err, Error)
        and err.token is None
        and err.err_code == ErrorCode.ERR_UNSUPPORTED_CIPHER_SUITES
    )
    assert w.tam.receive(out) is None
    assert [o.state for o in w.store.outstanding()] == ["answered"]
    assert w.outcomes() == ["error:ERR_UNSUPPORTED_CIPHER_SUITES"]


def test_renegotiation_is_bounded(world: World) -> None:
    world.tam.connect()
    err = seal(Error(err_code=ErrorCode.ERR_UNSUPPORTED_MSG_VERSION, versions=(0,)), world.state.key)
    answers = [world.tam.receive(err) for _ in range(5)]
    assert [a is not None for a in answers] == [True, True, True, False, False]
    assert world.outcomes()[0] == "renegotiation-limit"


def test_tam_attestation_appraised_with_the_agents_challenge(world: World) -> None:
    """Error 7 carries a challenge; the TAM answers with a Verifier's result about its own key and that
    nonce; the Agent checks it against its trusted TAM Verifiers and answers the QueryRequest."""
    from teep_coap.security.eat import build_attestation_result

    verifier = key("tam-verifier")
    (world.state.root / "tam-verifiers").mkdir()
    (world.state.root / "tam-verifiers" / "v.pem").write_bytes(verifier.public.to_pem())
    from teep_coap.protocol.agent import AgentEngine

    state = load_agent_state(world.state.root)
    state.config.require_tam_attestation = True
    agent = AgentEngine(state, clock=world.clock, rng=world.rng)
    calls: list[bytes | None] = []

    def provider(nonce: bytes | None) -> bytes:
        calls.append(nonce)
        return build_attestation_result(
            verifier, subject_kid=world.tam_es.kid, nonce=nonce, now=world.clock()
        )

    world.tam.config.tam_attestation_provider = provider
    world.tam.config.keys = (world.tam_es,)  # COSE_Sign1 by the key the result names
    err = agent.receive(world.tam.connect())
    challenge = payload_of(err).challenge  # type: ignore[arg-type,union-attr]
    qr2 = world.tam.receive(err)  # type: ignore[arg-type]
    assert calls == [challenge] and qr2 is not None
    resp = payload_of(agent.receive(qr2))  # type: ignore[arg-type]
    assert isinstance(resp, QueryResponse)
    assert state.broker.tam_challenges == []  # used up
    # the same attestation again (replay) no longer answers a challenge
    resp2 = payload_of(agent.receive(seal(payload_of(qr2), world.tam_es)))  # type: ignore[arg-type]
    assert isinstance(resp2, Error) and resp2.err_code == ErrorCode.ERR_ATTESTATION_REQUIRED
    assert resp2.err_msg == "TAM attestation does not answer a challenge of this Agent"


def test_partial_install_is_recorded_from_suit_reports(world: World) -> None:
    """Two components in one Update, one refused by the device: Error 17 with both reports; the TAM
    records the one that succeeded (its report says so) and not the other."""
    world.publish(1, seq=1)
    bad = world.envelope(2, 1, signer=generate_key("esp256"))  # the device does not trust this signer
    world.store.add_component(
        component_id=cid(2), sequence_number=1, envelope=bad, now=world.clock(), audience="all"
    )
    s = world.session()
    err = payload_of(s.sent[2])
    assert isinstance(err, Error) and err.err_code == ErrorCode.ERR_MANIFEST_PROCESSING_FAILED
    assert err.suit_reports is not None and len(err.suit_reports) == 2
    assert world.installed() == {cid(1): 1}
    assert world.tam_installed() == {cid(1): 1}
    assert world.outcomes() == ["error:ERR_MANIFEST_PROCESSING_FAILED"]
    # the next session only retries the refused one (and fails again, without touching the good one)
    s2 = world.session()
    upd = payload_of(s2.received[1])
    assert isinstance(upd, Update) and upd.manifest_list == (bad,)


def test_oversized_lists_from_a_device_are_refused(world: World) -> None:
    from teep_coap.model.teep import RequestedTcInfo

    qr = world.tam.connect()
    answer = payload_of(world.agent.receive(qr))  # type: ignore[arg-type]
    assert isinstance(answer, QueryResponse)
    import dataclasses

    many = tuple(RequestedTcInfo(component_id=(bytes([i % 256, i // 256]),)) for i in range(300))
    big = seal(dataclasses.replace(answer, requested_tc_list=many), world.state.key)
    before = world.tam_state()
    with pytest.raises(InvalidMessage, match="requested-tc-list has 300 entries"):
        world.tam.receive(big)
    assert world.tam_state() == before
