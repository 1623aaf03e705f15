"""Every message the engines emit in a session, and every Error they produce, validates against the
draft's CDDL (teep-all.cddl, cddl-verifier)."""

from __future__ import annotations

import cddl_verifier
import pytest

from teep_coap.model.codes import PROFILE_ED25519_CHACHA_POLY, SUITE_SIGN1_ED25519
from teep_coap.model.teep import QueryRequest, Update
from teep_coap.protocol.wire import seal
from teep_coap.security import cose
from tests.conftest import CDDL_FILE

from .conftest import MakeWorld, World

VALIDATOR = cddl_verifier.Validator(CDDL_FILE)


def _payload(data: bytes) -> bytes:
    return bytes(cose.inspect(data).payload or b"")


def _valid(data: bytes) -> bool:
    return bool(VALIDATOR.validate(_payload(data), "teep-message"))


def test_validator_can_fail() -> None:
    assert not VALIDATOR.validate(bytes.fromhex("8204a0"), "teep-message")


@pytest.mark.parametrize("model", ["background-check", "passport", "none"])
def test_session_messages_validate(make_world: MakeWorld, model: str) -> None:
    w = make_world(
        agent_attestation="passport" if model == "passport" else "background-check", tam_attestation=model
    )
    w.publish(1, seq=1)
    w.agent.request_ta((b"x",), "coap://t")
    s = w.session()
    assert len(s.received) == 2 and len(s.sent) == 3
    for msg in [*s.received, *s.sent[1:]]:
        assert _valid(msg), msg.hex()


def test_errors_validate(world: World) -> None:
    qrs = [
        QueryRequest(token=b"\xa0" * 16, versions=(9,)),
        QueryRequest(token=b"\xa0" * 16, supported_teep_cipher_suites=(SUITE_SIGN1_ED25519,)),
        QueryRequest(token=b"\xa0" * 16, supported_freshness_mechanisms=(1,)),
        QueryRequest(token=b"\xa0" * 16, supported_suit_cose_profiles=(PROFILE_ED25519_CHACHA_POLY,)),
    ]
    outs = [world.agent.receive(seal(q, world.tam_es)) for q in qrs]
    world.state.config.require_tam_attestation = True
    outs.append(world.agent.receive(seal(QueryRequest(token=b"\xa0" * 16), world.tam_es)))
    outs.append(world.agent.receive(b"garbage"))
    outs.append(world.agent.receive(seal(Update(token=b"\xb0" * 16, manifest_list=(b"\xa0",)), world.tam_es)))
    for out in outs:
        assert out is not None and _valid(out), out


def test_update_with_err_code_validates(make_world: MakeWorld) -> None:
    from teep_coap.security.keys import generate_key

    w = make_world(
        agent_attestation="passport",
        tam_attestation="passport",
        verifier_keys=(generate_key("esp256").public,),
    )
    s = w.session()
    assert _valid(s.received[1])
