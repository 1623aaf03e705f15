"""Whole TEEP sessions between the two engines, without sockets: install, update, delete,
requested and unrequested components, both attestation models."""

from __future__ import annotations

from teep_coap.model.codes import SUITE_SIGN1_ED25519, SUITE_SIGN1_ESP256, DataItem
from teep_coap.model.teep import QueryRequest, QueryResponse, RequestedTcInfo, Success, Update
from teep_coap.protocol import attestation as att
from teep_coap.security.eat import verify_evidence

from .conftest import TAM_URI, MakeWorld, World, cid, payload_of


def test_install_component_for_all_devices(world: World) -> None:
    env = world.publish(1, seq=1)
    s = world.session()
    assert s.result is not None and s.result.ok
    qr, upd = (payload_of(m) for m in s.received)
    qresp, success = (payload_of(m) for m in s.sent[1:])
    # QueryRequest: device unknown at connect → COSE_Sign, one signature per suite; background-check:
    # challenge and no token (token only when the attestation bit is clear, §1.11).
    assert world.tam.config.keys[0].kid != world.tam.config.keys[1].kid
    from teep_coap.security import cose

    info = cose.inspect(s.received[0])
    assert info.structure == "COSE_Sign" and len(info.signatures) == 2
    assert isinstance(qr, QueryRequest)
    assert qr.token is None and qr.challenge is not None and len(qr.challenge) == 16
    assert qr.data_item_requested == DataItem.ATTESTATION | DataItem.TRUSTED_COMPONENTS
    assert qr.supported_teep_cipher_suites == (SUITE_SIGN1_ESP256, SUITE_SIGN1_ED25519)
    assert qr.versions == (0,)
    # QueryResponse: evidence with the challenge as eat_nonce, no tc-list yet
    assert isinstance(qresp, QueryResponse)
    assert qresp.token is None and qresp.selected_version == 0 and qresp.tc_list is None
    assert qresp.attestation_payload_format == att.EVIDENCE_FORMAT
    claims = verify_evidence(
        qresp.attestation_payload or b"",
        world.state.key.public,
        expected_nonce=qr.challenge,
        now=world.clock(),
    )
    assert claims.cnf_kid == world.state.key.kid
    # Update carries the envelope, with a fresh token; Success echoes it
    assert isinstance(upd, Update) and upd.manifest_list == (env,) and upd.unneeded_manifest_list is None
    assert upd.token is not None and len(upd.token) == 16
    assert success == Success(token=upd.token)
    # both sides agree on what is installed
    assert world.installed() == {cid(1): 1}
    assert world.state.components.image(cid(1)) == b"TA image"
    assert world.tam_installed() == {cid(1): 1}
    assert world.outcomes() == ["success"]
    dev = world.store.device_by_kid(world.state.key.kid)
    assert dev is not None and dev.attested_claims is not None and dev.last_contact == world.clock()
    # and the next session has nothing to do: QueryRequest, QueryResponse (with tc-list), end
    s2 = world.session()
    assert s2.result is not None and s2.result.ok and s2.rounds == 2
    qresp2 = payload_of(s2.sent[1])
    assert isinstance(qresp2, QueryResponse) and qresp2.tc_list is not None
    assert [c.component_id for c in qresp2.tc_list] == [cid(1)]
    assert world.outcomes() == ["success", "up-to-date"]


def test_update_to_higher_sequence_number(world: World) -> None:
    world.publish(1, seq=1, payload=b"v1")
    assert world.session().result.ok  # type: ignore[union-attr]
    env2 = world.publish(1, seq=2, payload=b"v2")
    s = world.session()
    upd = payload_of(s.received[1])
    assert isinstance(upd, Update) and upd.manifest_list == (env2,)
    assert world.installed() == {cid(1): 2}
    assert world.state.components.image(cid(1)) == b"v2"
    assert world.tam_installed() == {cid(1): 2}


def test_delete_component(world: World) -> None:
    env1 = world.publish(1, seq=1)
    world.publish(2, seq=1)
    assert world.session().result.ok  # type: ignore[union-attr]
    assert set(world.installed()) == {cid(1), cid(2)}
    world.store.add_component(
        component_id=cid(1), sequence_number=1, envelope=env1, now=world.clock(), audience="delete"
    )
    s = world.session()
    upd = payload_of(s.received[1])
    assert isinstance(upd, Update)
    assert upd.unneeded_manifest_list == (cid(1),) and upd.manifest_list is None
    assert payload_of(s.sent[2]) == Success(token=upd.token)
    assert world.installed() == {cid(2): 1}
    assert world.tam_installed() == {cid(1): None, cid(2): 1}


def test_requested_component(world: World) -> None:
    env = world.publish(3, seq=4, audience="request")
    # without a request nothing is installed
    s = world.session()
    assert s.rounds == 2 and world.installed() == {}
    # RequestTA: not installed → the TAM URI to contact
    assert world.agent.request_ta(cid(3), TAM_URI) == TAM_URI
    s = world.session()
    qresp = payload_of(s.sent[1])
    assert isinstance(qresp, QueryResponse)
    assert qresp.requested_tc_list == (RequestedTcInfo(component_id=cid(3)),)
    assert payload_of(s.received[1]).manifest_list == (env,)  # type: ignore[union-attr]
    assert world.installed() == {cid(3): 4}
    assert world.state.broker.requested == {}  # satisfied requests are forgotten
    # RequestTA of an installed component: nothing to do
    assert world.agent.request_ta(cid(3), TAM_URI) is None


def test_request_with_minimum_sequence_number_not_available(world: World) -> None:
    world.publish(3, seq=4, audience="request")
    world.agent.request_ta(cid(3), TAM_URI, min_seq=9)
    s = world.session()
    assert s.rounds == 2 and world.installed() == {}
    assert world.outcomes()[-1] == "up-to-date"


def test_request_for_unknown_component_is_not_served(world: World) -> None:
    world.agent.request_ta(cid(9), TAM_URI)
    s = world.session()
    assert s.rounds == 2 and world.installed() == {}


def test_unrequested_component(world: World) -> None:
    world.publish(3, seq=1, audience="request")
    world.agent.request_ta(cid(3), TAM_URI)
    world.session()
    assert world.installed() == {cid(3): 1}
    assert world.agent.unrequest_ta(cid(3), TAM_URI) == TAM_URI
    s = world.session()
    qresp = payload_of(s.sent[1])
    assert isinstance(qresp, QueryResponse) and qresp.unneeded_manifest_list == (cid(3),)
    upd = payload_of(s.received[1])
    assert isinstance(upd, Update) and upd.unneeded_manifest_list == (cid(3),)
    assert world.installed() == {}
    assert world.state.broker.unrequested == {}
    # UnrequestTA of something not installed: nothing to do
    assert world.agent.unrequest_ta(cid(3), TAM_URI) is None


def test_unrequest_of_mandatory_component_is_refused_by_policy(world: World) -> None:
    world.publish(1, seq=1, audience="all")
    world.session()
    world.agent.unrequest_ta(cid(1), TAM_URI)
    s = world.session()
    assert s.rounds == 2 and world.installed() == {cid(1): 1}


def test_passport_model(make_world: MakeWorld) -> None:
    w = make_world(agent_attestation="passport", tam_attestation="passport")
    w.publish(1, seq=1)
    s = w.session()
    assert s.result is not None and s.result.ok
    qr = payload_of(s.received[0])
    qresp = payload_of(s.sent[1])
    assert isinstance(qr, QueryRequest) and qr.challenge is None and qr.token is not None
    assert isinstance(qresp, QueryResponse) and qresp.token == qr.token
    assert qresp.attestation_payload_format is None  # absent = Attestation Result
    assert w.installed() == {cid(1): 1}
    dev = w.store.device_by_kid(w.state.key.kid)
    assert dev is not None and dev.attested_claims is not None


def test_passport_result_from_untrusted_verifier_gets_update_with_error(make_world: MakeWorld) -> None:
    from teep_coap.security.keys import generate_key

    w = make_world(
        agent_attestation="passport",
        tam_attestation="passport",
        verifier_keys=(generate_key("esp256").public,),
    )
    w.publish(1, seq=1)
    s = w.session()
    upd = payload_of(s.received[1])
    assert isinstance(upd, Update) and upd.err_code == 7 and upd.manifest_list is None and upd.token is None
    assert "attestation result refused" in (upd.err_msg or "")
    assert s.rounds == 2 and s.result is not None and s.result.ok  # the Agent does not answer an err Update
    assert w.installed() == {}
    assert w.outcomes() == ["ERR_ATTESTATION_REQUIRED"]


def test_no_attestation_uses_token(make_world: MakeWorld) -> None:
    w = make_world(tam_attestation="none")
    w.publish(1, seq=1)
    s = w.session()
    qr = payload_of(s.received[0])
    assert isinstance(qr, QueryRequest) and qr.token is not None and qr.challenge is None
    assert qr.data_item_requested == DataItem.TRUSTED_COMPONENTS
    qresp = payload_of(s.sent[1])
    assert isinstance(qresp, QueryResponse) and qresp.token == qr.token and qresp.attestation_payload is None
    assert w.installed() == {cid(1): 1}


def test_ed25519_agent(make_world: MakeWorld) -> None:
    w = make_world(agent_alg="ed25519")
    w.publish(1, seq=1)
    s = w.session()
    assert s.result is not None and s.result.ok and w.installed() == {cid(1): 1}
    from teep_coap.security import cose

    assert cose.inspect(s.received[1]).alg == -19  # the Update uses the device's suite


def test_known_device_gets_sign1_and_identity_is_checked(make_world: MakeWorld) -> None:
    from teep_coap.security import cose

    w = make_world(psk_identity="device-1")
    w.publish(1, seq=1)
    s = w.session(transport_identity="device-1")
    info = cose.inspect(s.received[0])
    assert info.structure == "COSE_Sign1" and info.alg == -9
    assert w.installed() == {cid(1): 1}


def test_tam_restart_between_messages_keeps_the_session(world: World) -> None:
    """State lives in the database: a new TamEngine (another process) takes the next message."""
    from teep_coap.protocol.tam import TamEngine
    from teep_coap.store.tam_db import TamStore

    world.publish(1, seq=1)
    qr = world.tam.connect()
    qresp = world.agent.receive(qr)
    assert qresp is not None
    other = TamEngine(world.tam.config, TamStore(world.store.url), clock=world.clock, rng=world.rng)
    upd = other.receive(qresp)
    assert upd is not None
    success = world.agent.receive(upd)
    assert success is not None
    assert world.tam.receive(success) is None
    assert world.installed() == {cid(1): 1} and world.outcomes() == ["success"]


def test_broker_policy_check_round(world: World) -> None:
    from teep_coap.protocol.broker import policy_check_uris

    assert list(policy_check_uris(world.agent)) == [TAM_URI]
    world.agent.request_ta(cid(5), "coap://other-tam/tam")
    assert list(policy_check_uris(world.agent)) == [TAM_URI, "coap://other-tam/tam"]
    assert list(policy_check_uris(world.agent)) == [TAM_URI, "coap://other-tam/tam"]  # a new round each time


def test_broker_transport_error_calls_process_error(world: World) -> None:
    from teep_coap.protocol.broker import run_in_memory

    def broken(payload: bytes) -> bytes | None:
        raise TimeoutError("no answer")

    s = run_in_memory(world.agent, TAM_URI, broken)
    assert s.result is not None and not s.result.ok and "no answer" in s.result.reason
    assert world.state.broker.last_error == {TAM_URI: world.clock()}


def test_policy_file_drives_catalog(world: World, tmp_path: object) -> None:
    from teep_coap.protocol.policy import Policy

    folder = world.tmp
    (folder / "tc1.suit").write_bytes(world.envelope(1, 1))
    (folder / "tc2.suit").write_bytes(world.envelope(2, 5))
    path = folder / "policy.toml"
    path.write_text(
        '[[component]]\nname = "one"\nenvelope = "tc1.suit"\naudience = "all"\n'
        '[[component]]\nname = "two"\nenvelope = "tc2.suit"\naudience = "request"\n'
    )
    world.tam.config.policy = Policy.load(path)
    world.session()
    assert world.installed() == {cid(1): 1}
    # edit the policy: component two for everyone now; the TAM notices the new mtime
    import os

    path.write_text(path.read_text().replace('audience = "request"', 'audience = "all"'))
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    world.session()
    assert world.installed() == {cid(1): 1, cid(2): 5}


def test_example_policy_parses() -> None:
    from pathlib import Path

    from teep_coap.protocol.policy import Policy

    policy = Policy.load(Path(__file__).parents[2] / "examples" / "policy.toml")
    assert [(e.name, e.audience) for e in policy.entries] == [
        ("hello-ta", "all"),
        ("payment-ta", "request"),
        ("retired-ta", "delete"),
    ]
    assert policy.entries[1].component_id == (
        b"TEEP-Device",
        b"SecureFS",
        bytes.fromhex("8d82573a926d4754935332dc29997f74"),
        b"ta",
    )
    assert policy.entries[1].sequence_number == 3


def test_bad_policies_are_typed_errors(tmp_path: object) -> None:
    from pathlib import Path

    import pytest

    from teep_coap.protocol.errors import ConfigError
    from teep_coap.protocol.policy import Policy

    folder = Path(str(tmp_path))
    cases = {
        "x = 1\n": "unknown top-level keys",
        "[[component]]\nname='a'\n": "'envelope'",
        "[[component]]\nenvelope='a'\naudience='some'\n": "audience must be one of",
        "[[component]]\nenvelope='a'\nsequence-number=-1\n": "sequence-number",
        "[[component]]\nenvelope='a'\ncomponent-id=['hex:zz']\n": "is not hex",
        "[[component]]\nenvelope='a'\ncolour='red'\n": "unknown keys",
        "[[component\n": "not valid TOML",
    }
    for i, (text, message) in enumerate(cases.items()):
        p = folder / f"p{i}.toml"
        p.write_text(text)
        with pytest.raises(ConfigError, match=message):
            Policy.load(p)
    with pytest.raises(ConfigError, match="cannot read policy"):
        Policy.load(folder / "missing.toml")


def test_query_without_trusted_components_bit_keeps_installed_set(make_world: MakeWorld) -> None:
    """When the TAM does not ask for tc-list, the absence of one must not look like "nothing installed"."""
    from teep_coap.model.codes import DataItem

    w = make_world()
    w.publish(1, seq=1)
    w.session()
    w.tam.config.data_items = int(DataItem.ATTESTATION)
    s = w.session()
    assert s.rounds == 2  # no re-install of what the device has
    assert w.tam_installed() == {cid(1): 1}


def test_request_ta_without_uri_is_a_typed_error(world: World) -> None:
    import pytest

    from teep_coap.protocol.errors import ConfigError

    world.state.config.tam_uri = None
    with pytest.raises(ConfigError, match="no TAM URI"):
        world.agent.request_ta(cid(4))


def test_messages_signed_without_kid(world: World) -> None:
    """A TAM message without kid is verified with the trusted keys of its algorithm; a device message
    without kid is matched against the registered devices of that algorithm."""
    from teep_coap.encoding.cbor_codec import encode
    from teep_coap.model.teep import QueryRequest
    from teep_coap.security.cose import sign1

    qr = QueryRequest(token=b"\xa1" * 16, data_item_requested=int(DataItem.TRUSTED_COMPONENTS))
    out = world.agent.receive(sign1(encode(qr), world.tam_es, include_kid=False))
    resp = payload_of(out)  # type: ignore[arg-type]
    assert isinstance(resp, QueryResponse) and resp.token == b"\xa1" * 16
    # and the TAM side: a QueryResponse without kid
    world.tam.config.data_items = int(DataItem.TRUSTED_COMPONENTS)
    world.publish(1, seq=1)
    qr_bytes = world.tam.connect()
    answer = payload_of(world.agent.receive(qr_bytes))  # type: ignore[arg-type]
    no_kid = sign1(encode(answer), world.state.key, include_kid=False)
    upd = world.tam.receive(no_kid)
    assert upd is not None and isinstance(payload_of(upd), Update)


def test_unlink_by_manifest_component_id_and_absent_component(world: World) -> None:
    """unneeded-manifest-list may name the manifest's component id (…'suit'); an absent one is done."""
    from teep_coap.protocol.wire import seal

    world.publish(1, seq=1)
    world.session()
    manifest_id = (*cid(1)[:-1], b"suit")
    upd = Update(token=b"\xd0" * 16, unneeded_manifest_list=(manifest_id, cid(8)))
    resp = payload_of(world.agent.receive(seal(upd, world.tam_es)))  # type: ignore[arg-type]
    assert resp == Success(token=b"\xd0" * 16)
    assert world.installed() == {}


def test_timestamp_freshness(make_world: MakeWorld) -> None:
    """Only FRESHNESS_TIMESTAMP in common: no challenge, a token to match the answer, evidence
    without eat_nonce whose iat is checked against the TAM's clock."""
    from teep_coap.protocol.attestation import peek_nonce

    for agent_model in ("background-check", "passport"):
        w = make_world(agent_attestation=agent_model, tam_attestation=agent_model, freshness_mechanisms=(1,))
        w.state.config.freshness_mechanisms = (0, 1)
        w.publish(1, seq=1)
        s = w.session()
        qr, qresp = payload_of(s.received[0]), payload_of(s.sent[1])
        assert isinstance(qr, QueryRequest) and qr.supported_freshness_mechanisms == (1,)
        assert qr.challenge is None and qr.token is not None
        assert isinstance(qresp, QueryResponse) and qresp.attestation_payload is not None
        assert peek_nonce(qresp.attestation_payload) is None
        assert w.installed() == {cid(1): 1}, agent_model


def test_stale_timestamp_evidence_is_refused(make_world: MakeWorld) -> None:
    w = make_world(freshness_mechanisms=(1,), evidence_max_age=60.0)
    w.state.config.freshness_mechanisms = (1,)
    w.publish(1, seq=1)
    qresp = w.agent.receive(w.tam.connect())
    w.clock.advance(120)  # the TAM looks at it two minutes later
    upd = payload_of(w.tam.receive(qresp))  # type: ignore[arg-type]
    assert isinstance(upd, Update) and upd.err_code == 7 and "old" in (upd.err_msg or "")
    assert w.installed() == {}


def test_suit_reports_in_query_response_carry_the_new_token(make_world: MakeWorld) -> None:
    """data-item-requested with suit-reports: the Agent re-issues the last reports with the
    QueryRequest's token as nonce, which the TAM checks."""
    from teep_coap.protocol.reports import report_nonce

    w = make_world(
        tam_attestation="none", data_items=int(DataItem.TRUSTED_COMPONENTS | DataItem.SUIT_REPORTS)
    )
    w.publish(1, seq=1)
    w.session()
    w.publish(1, seq=2, payload=b"v2")
    s = w.session()
    qr, qresp = payload_of(s.received[0]), payload_of(s.sent[1])
    assert isinstance(qr, QueryRequest) and isinstance(qresp, QueryResponse)
    assert qresp.suit_reports is not None and len(qresp.suit_reports) == 1
    assert report_nonce(qresp.suit_reports[0]) == qr.token
    assert s.result is not None and s.result.ok and w.installed() == {cid(1): 2}
