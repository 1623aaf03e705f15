"""The TAM and Agent engines back to back: the whole lifecycle, the §8 errors, persistence."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from teep_coap.otrp.encoding import json as otrp_json
from teep_coap.otrp.model import (
    CreateSDContent,
    CreateSDRequest,
    DeleteSDContent,
    DeleteSDRequest,
    DeleteTAContent,
    DeleteTARequest,
    GetDeviceStateRequest,
    InstallTARequest,
    OtrpDecodeError,
    OtrpErrorCode,
    OtrpProtocolError,
    TAContent,
)
from teep_coap.otrp.protocol.agent import OtrpAgentConfig, OtrpAgentEngine
from teep_coap.otrp.protocol.session import make_engines, run_reference_session, run_session
from teep_coap.otrp.protocol.tam import OtrpTamConfig, OtrpTamEngine, OtrpTamPolicy, SdSpec, TaSpec
from teep_coap.otrp.protocol.wire import codec_for
from teep_coap.otrp.security.pki import OtrpPki

ENCODINGS = ["json", "cbor"]
SD = "sd.sp.example"
TA = "sp.example.ta1"


def _policy(pki: OtrpPki, data: bytes | None) -> OtrpTamPolicy:
    if data is None:
        return OtrpTamPolicy()
    return OtrpTamPolicy(
        sds=[SdSpec(spid="sp.example", sdname=SD, spcert=pki.sp.cert_der)],
        tas=[TaSpec(sdname=SD, taid=TA, data=data, pdata=b"perso")],
    )


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_full_lifecycle(encoding: str, rsa_pki: OtrpPki, tmp_path: Path) -> None:
    """GetDeviceState → CreateSD → InstallTA, then → UpdateTA, then → DeleteTA → DeleteSD."""
    tam, agent = make_engines(encoding, rsa_pki, tmp_path, _policy(rsa_pki, b"version 1"))  # type: ignore[arg-type]
    names = [r.name for r in run_session(tam, agent)]
    assert names == [
        "GetDeviceStateRequest",
        "GetDeviceStateResponse",
        "CreateSDRequest",
        "CreateSDResponse",
        "InstallTARequest",
        "InstallTAResponse",
    ]
    assert agent.installed() == {SD: {TA: b"version 1"}}
    assert [r.status for r in tam.results()] == ["pass"] * 4

    tam.config.policy = _policy(rsa_pki, b"version 2")
    names = [r.name for r in run_session(tam, agent)]
    assert names[2:] == ["UpdateTARequest", "UpdateTAResponse"]
    assert agent.installed() == {SD: {TA: b"version 2"}}

    # nothing changed: GetDeviceState only, then the TAM says "nothing more"
    assert [r.name for r in run_session(tam, agent)] == ["GetDeviceStateRequest", "GetDeviceStateResponse"]

    tam.config.policy = _policy(rsa_pki, None)
    names = [r.name for r in run_session(tam, agent)]
    assert names[2:] == ["DeleteTARequest", "DeleteTAResponse", "DeleteSDRequest", "DeleteSDResponse"]
    assert agent.installed() == {}
    assert not list((tmp_path / "ta").iterdir())
    assert not list((tmp_path / "spaik").iterdir())  # last SD of the SP ⇒ SP AIK deleted


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_nextdsi_keeps_dsihash_fresh(encoding: str, rsa_pki: OtrpPki, tmp_path: Path) -> None:
    tam, agent = make_engines(encoding, rsa_pki, tmp_path, _policy(rsa_pki, b"x" * 100), nextdsi=True)  # type: ignore[arg-type]
    records = run_session(tam, agent)
    assert [r.status for r in tam.results()] == ["pass"] * 4
    # with nextdsi the InstallTA response carries the DSI listing the new TA
    opened = codec_for(encoding).open(
        records[-1].wire, rsa_pki.tam.private_key, verify_keys=[rsa_pki.tee.public_key]
    )
    dsi = opened.msg.content.dsi  # type: ignore[union-attr]
    assert dsi.tee.sdlist.sd[0].talist[0].taid == TA


def test_agent_state_survives_restart(rsa_pki: OtrpPki, tmp_path: Path) -> None:
    tam, agent = make_engines("json", rsa_pki, tmp_path, _policy(rsa_pki, b"abc"))
    run_session(tam, agent)
    again = OtrpAgentEngine(OtrpAgentConfig(identity=rsa_pki.tee, tam_anchors=(rsa_pki.root.cert,)), tmp_path)
    assert again.installed() == {SD: {TA: b"abc"}}
    assert [r.name for r in run_session(tam, again)] == ["GetDeviceStateRequest", "GetDeviceStateResponse"]


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_reference_session_sizes(encoding: str, rsa_pki: OtrpPki) -> None:
    small = run_reference_session(encoding, 20, pki=rsa_pki)  # type: ignore[arg-type]
    big = run_reference_session(encoding, 16384, pki=rsa_pki)  # type: ignore[arg-type]
    assert (
        [r.name for r in small]
        == [r.name for r in big]
        == [
            "GetDeviceStateRequest",
            "GetDeviceStateResponse",
            "CreateSDRequest",
            "CreateSDResponse",
            "InstallTARequest",
            "InstallTAResponse",
        ]
    )
    assert all(r.wire_size == len(r.wire) > r.tbs_size > 0 for r in small)
    grew = big[4].wire_size - small[4].wire_size
    # CBOR: a bstr, byte for byte. JSON: base64 in the TBS, then base64url again as the JWS payload (16/9)
    expected = 16384 - 20 if encoding == "cbor" else (16384 - 20) * 16 // 9
    assert expected <= grew <= expected * 1.02 + 64
    assert [r.direction for r in small] == ["tam->agent", "agent->tam"] * 3


def test_json_costs_more_than_cbor(rsa_pki: OtrpPki) -> None:
    j = sum(r.wire_size for r in run_reference_session("json", 1024, pki=rsa_pki))
    c = sum(r.wire_size for r in run_reference_session("cbor", 1024, pki=rsa_pki))
    assert c < j


# ---------------------------------------------------------------------------------------------- errors


class _Tam:
    """Builds signed requests by hand to drive the Agent into each §8 error."""

    def __init__(self, encoding: str, pki: OtrpPki, agent: OtrpAgentEngine) -> None:
        self.codec = codec_for(encoding)
        self.pki = pki
        self.agent = agent
        self.did = pki.tee.did
        self.tamid = pki.tam.name

    def send(self, msg: object, x5c: bool = True, signer: object = None) -> object:
        signer = signer or self.pki.tam
        wire = self.codec.seal(msg, signer, self.pki.tee.public_key, signer.chain_der if x5c else None).wire  # type: ignore[arg-type, union-attr]
        answer = self.agent.receive(wire)
        assert answer is not None
        return self.codec.open(
            answer,
            self.pki.tam.private_key,
            anchors=[self.pki.root.cert],
            verify_keys=[self.pki.tee.public_key],
        ).msg

    def gds(self) -> object:
        self.n = getattr(self, "n", 0) + 1
        return self.send(GetDeviceStateRequest(rid=f"g{self.n}", tid="t")).tees[0]  # type: ignore[attr-defined]

    def head(self, **kw: object) -> dict[str, object]:
        self.n = getattr(self, "n", 0) + 1
        return {"rid": f"r{self.n}", "tid": "t", "tee": "Primary TEE", "nextdsi": False, **kw}

    def create(self, sdname: str = SD, **kw: object) -> object:
        content = CreateSDContent(
            spid="sp.example", sdname=sdname, spcert=self.pki.sp.cert_der, tamid=self.tamid, did=self.did
        )
        return self.send(CreateSDRequest(**self.head(**kw), content=content))  # type: ignore[arg-type]


def _code(msg: object) -> OtrpErrorCode | None:
    reason = getattr(getattr(msg, "content", None), "reason", None) or getattr(msg, "reason", None)
    return reason.error_code if reason else None


@pytest.fixture(params=ENCODINGS)
def tam(request: pytest.FixtureRequest, rsa_pki: OtrpPki, tmp_path: Path) -> _Tam:
    agent = OtrpAgentEngine(
        OtrpAgentConfig(
            identity=rsa_pki.tee, tam_anchors=(rsa_pki.root.cert,), encoding=request.param, max_tas=1
        ),
        tmp_path,
    )
    t = _Tam(request.param, rsa_pki, agent)
    assert t.gds().status == "pass"  # type: ignore[attr-defined]
    return t


def test_sd_errors(tam: _Tam) -> None:
    assert tam.create().status == "pass"  # type: ignore[attr-defined]
    assert _code(tam.create()) is OtrpErrorCode.ERR_SD_ALREADY_EXISTS
    bad = CreateSDContent(spid="sp", sdname="sd2", spcert=b"not a cert", tamid=tam.tamid, did=tam.did)
    assert _code(tam.send(CreateSDRequest(**tam.head(), content=bad))) is OtrpErrorCode.ERR_SPCERT_INVALID  # type: ignore[arg-type]
    gone = DeleteSDContent(tamid=tam.tamid, sdname="nope", deleteta=False)
    assert _code(tam.send(DeleteSDRequest(**tam.head(), content=gone))) is OtrpErrorCode.ERR_SD_NOT_FOUND  # type: ignore[arg-type]
    other = CreateSDContent(
        spid="sp", sdname="sd3", spcert=tam.pki.sp.cert_der, tamid="someone.else", did=tam.did
    )
    assert (
        _code(tam.send(CreateSDRequest(**tam.head(), content=other))) is OtrpErrorCode.ERR_TAM_NOT_AUTHORIZED
    )  # type: ignore[arg-type]


def test_ta_errors(tam: _Tam) -> None:
    tam.create()
    codec, pki = tam.codec, tam.pki
    content = TAContent(tamid=tam.tamid, spid="sp.example", sdname=SD, taid="ta")
    # the SP AIK is unknown to us here, so encrypt the TA to the wrong key: ERR_TA_INVALID
    wrong = codec.seal_ta(b"ta", None, pki.sp.public_key)
    assert (
        _code(tam.send(InstallTARequest(**tam.head(), content=content, encrypted_ta=wrong)))
        is OtrpErrorCode.ERR_TA_INVALID
    )  # type: ignore[arg-type]
    dsi = tam.gds().edsi.dsi  # type: ignore[attr-defined]
    from teep_coap.otrp.security.pki import load_public_der

    spaik = load_public_der(dsi.tee.teeaiklist[0].spaik)
    good = codec.seal_ta(b"ta", None, spaik)
    assert tam.send(InstallTARequest(**tam.head(), content=content, encrypted_ta=good)).status == "pass"  # type: ignore[arg-type, attr-defined]
    assert (
        _code(tam.send(InstallTARequest(**tam.head(), content=content, encrypted_ta=good)))
        is OtrpErrorCode.ERR_TA_ALREADY_INSTALLED
    )  # type: ignore[arg-type]
    second = TAContent(tamid=tam.tamid, spid="sp.example", sdname=SD, taid="ta2")
    assert (
        _code(tam.send(InstallTARequest(**tam.head(), content=second, encrypted_ta=good)))
        is OtrpErrorCode.ERR_TEE_RESOURCE_FULL
    )  # type: ignore[arg-type]
    missing = DeleteTAContent(tamid=tam.tamid, sdname=SD, taid="nope")
    assert _code(tam.send(DeleteTARequest(**tam.head(), content=missing))) is OtrpErrorCode.ERR_TA_NOT_FOUND  # type: ignore[arg-type]
    not_empty = DeleteSDContent(tamid=tam.tamid, sdname=SD, deleteta=False)
    assert _code(tam.send(DeleteSDRequest(**tam.head(), content=not_empty))) is OtrpErrorCode.ERR_SD_NOT_EMPTY  # type: ignore[arg-type]
    force = DeleteSDContent(tamid=tam.tamid, sdname=SD, deleteta=True)
    assert tam.send(DeleteSDRequest(**tam.head(), content=force)).status == "pass"  # type: ignore[arg-type, attr-defined]
    assert tam.agent.installed() == {}


def test_dsihash_mismatch_version_and_cached_signer(tam: _Tam) -> None:
    assert _code(tam.create(dsihash=b"\x00" * 32)) is OtrpErrorCode.ERR_DEV_STATE_MISMATCH
    assert _code(tam.create(ver="2.0")) is OtrpErrorCode.ERR_UNSUPPORTED_MSG_VERSION
    # signerreq was false: the TEE verifies a request without x5c with the cached TAM certificate
    content = CreateSDContent(
        spid="sp.example", sdname="sdX", spcert=tam.pki.sp.cert_der, tamid=tam.tamid, did=tam.did
    )
    assert tam.send(CreateSDRequest(**tam.head(), content=content), x5c=False).status == "pass"  # type: ignore[arg-type, attr-defined]


def test_wrong_tee_gets_an_unsigned_broker_error(tam: _Tam) -> None:
    from teep_coap.otrp.model import BrokerError

    msg = tam.create(tee="Another TEE")
    assert isinstance(msg, BrokerError) and msg.errcode is OtrpErrorCode.ERR_AGENT_TEE_UNKNOWN


def test_untrusted_tam_and_unsupported_alg(tam: _Tam, other_pki: OtrpPki) -> None:
    wire = tam.codec.seal(
        GetDeviceStateRequest(rid="g", tid="t"), other_pki.tam, None, other_pki.tam.chain_der
    ).wire
    answer = tam.agent.receive(wire)
    assert answer is not None
    msg = tam.codec.open(answer, None, verify_keys=[tam.pki.tee.public_key]).msg
    assert msg.tees[0].status == "fail"  # type: ignore[union-attr]
    assert msg.tees[0].reason.error_code is OtrpErrorCode.ERR_TAM_NOT_TRUSTED  # type: ignore[union-attr]
    only_es = tam.send(GetDeviceStateRequest(rid="g-es", tid="t", supportedsigalgs=("ES256",)))
    tee = only_es.tees[0]  # type: ignore[attr-defined]
    assert tee.reason.error_code is OtrpErrorCode.ERR_UNSUPPORTED_CRYPTO_ALG and tee.supportedsigalgs == (
        "RS256",
    )


def test_agent_refuses_garbage_and_responses(tam: _Tam) -> None:
    with pytest.raises(OtrpDecodeError):
        tam.agent.receive(b"\x00garbage")
    response = tam.codec.seal(
        __import__("tests.otrp.conftest", fromlist=["all_messages"]).all_messages()[13],
        tam.pki.tam,
        tam.pki.tee.public_key,
        tam.pki.tam.chain_der,
    ).wire
    with pytest.raises(OtrpProtocolError):
        tam.agent.receive(response)


def test_tam_rejects_wrong_rid_and_unknown_session(rsa_pki: OtrpPki, tmp_path: Path) -> None:
    tam_engine, agent = make_engines("json", rsa_pki, tmp_path, _policy(rsa_pki, b"x"))
    first = tam_engine.connect()
    tree = json.loads(first)
    answer = agent.receive(first)
    assert answer is not None
    other = OtrpTamEngine(OtrpTamConfig(identity=rsa_pki.tam, tee_anchors=(rsa_pki.root.cert,)))
    with pytest.raises(OtrpProtocolError, match="no TAM session"):
        other.receive(answer)
    assert "GetDeviceStateRequest" in tree
    assert tam_engine.receive(answer) is not None  # the right engine carries on
    assert otrp_json.loads(first)  # still valid JSON


def test_replayed_command_is_refused_not_reapplied(tam: _Tam) -> None:
    content = DeleteSDContent(tamid=tam.tamid, sdname=SD, deleteta=True)
    tam.create()
    request = DeleteSDRequest(**tam.head(), content=content)  # type: ignore[arg-type]
    wire = tam.codec.seal(request, tam.pki.tam, tam.pki.tee.public_key, tam.pki.tam.chain_der).wire
    first = tam.agent.receive(wire)
    assert first is not None
    tam.create()  # the SD exists again; a replay of the captured DeleteSD must not remove it
    again = tam.agent.receive(wire)
    assert again is not None
    msg = tam.codec.open(again, tam.pki.tam.private_key, verify_keys=[tam.pki.tee.public_key]).msg
    assert _code(msg) is OtrpErrorCode.ERR_REQUEST_INVALID
    assert SD in tam.agent.installed()


def test_stale_dsihash_before_any_dsi(rsa_pki: OtrpPki, tmp_path: Path) -> None:
    agent = OtrpAgentEngine(OtrpAgentConfig(identity=rsa_pki.tee, tam_anchors=(rsa_pki.root.cert,)), tmp_path)
    t = _Tam("json", rsa_pki, agent)
    # a dsihash although this TEE never returned a DSI to this TAM: stale by definition
    assert _code(t.create(dsihash=b"\x01" * 32)) is OtrpErrorCode.ERR_DEV_STATE_MISMATCH


def test_update_sd(tam: _Tam) -> None:
    from teep_coap.otrp.model import SDChanges, UpdateSDContent, UpdateSDRequest

    tam.create()
    tam.create(sdname="other.sd")
    old_keys = set((tam.agent.state_dir / "spaik").iterdir())

    def update(**changes: object) -> object:
        content = UpdateSDContent(tamid=tam.tamid, spid="sp.example", sdname=SD, changes=SDChanges(**changes))  # type: ignore[arg-type]
        return tam.send(UpdateSDRequest(**tam.head(), content=content))  # type: ignore[arg-type]

    assert _code(update(newsdname="other.sd")) is OtrpErrorCode.ERR_SDNAME_ALREADY_USED
    renewed = update(renewteespaik=True, spcert=(tam.pki.sp.cert_der,))
    assert renewed.status == "pass"  # type: ignore[attr-defined]
    assert renewed.content.teespaik is not None and renewed.content.teespaiktype == "RSA"  # type: ignore[attr-defined]
    new_keys = set((tam.agent.state_dir / "spaik").iterdir())
    assert len(new_keys) == 1 and new_keys != old_keys  # the old SP AIK file is gone
    bad = update(spcert=(b"junk",))
    assert _code(bad) is OtrpErrorCode.ERR_SPCERT_INVALID


def test_update_sd_rename_keeps_tas(rsa_pki: OtrpPki, tmp_path: Path) -> None:
    from teep_coap.otrp.model import SDChanges, UpdateSDContent, UpdateSDRequest

    tam_engine, agent = make_engines("cbor", rsa_pki, tmp_path, _policy(rsa_pki, b"bin"))
    run_session(tam_engine, agent)
    t = _Tam("cbor", rsa_pki, agent)
    t.gds()
    content = UpdateSDContent(
        tamid=t.tamid, spid="sp.example", sdname=SD, changes=SDChanges(newsdname="renamed")
    )
    assert t.send(UpdateSDRequest(**t.head(), content=content)).status == "pass"  # type: ignore[arg-type, attr-defined]
    assert agent.installed() == {"renamed": {TA: b"bin"}}


def test_tam_ends_session_on_broker_error(rsa_pki: OtrpPki, tmp_path: Path) -> None:
    tam_engine, agent = make_engines("json", rsa_pki, tmp_path, _policy(rsa_pki, b"x"))
    answer = agent.receive(tam_engine.connect())
    assert answer is not None
    create = tam_engine.receive(answer)
    assert create is not None
    agent.config.tee_name = "Another TEE"  # the Broker now fronts a different TEE
    broker_error = agent.receive(create)
    assert broker_error is not None and b"OTrPBrokerError" in broker_error
    assert tam_engine.receive(broker_error) is None
    last = tam_engine.results()[-1]
    assert (last.command, last.status, last.error_code) == ("CreateSD", "fail", "ERR_AGENT_TEE_UNKNOWN")


def test_transport_identity_must_stay_and_fit_the_device(rsa_pki: OtrpPki, tmp_path: Path) -> None:
    from teep_coap.otrp.model import OtrpIdentityMismatch

    tam_engine, agent = make_engines("cbor", rsa_pki, tmp_path, _policy(rsa_pki, b"x"))
    answer = agent.receive(tam_engine.connect("psk-device-1"))
    assert answer is not None
    with pytest.raises(OtrpIdentityMismatch, match="psk-device-2"):
        tam_engine.receive(answer, "psk-device-2")  # another DTLS peer cannot continue this session
    tam_engine.config.device_identities = {"psk-device-1": b"\x00" * 32}  # bound to another TEE
    answer = agent.receive(tam_engine.connect("psk-device-1"))
    assert answer is not None
    with pytest.raises(OtrpIdentityMismatch, match="another device"):
        tam_engine.receive(answer, "psk-device-1")
    tam_engine.config.device_identities = {"psk-device-1": rsa_pki.tee.did}
    answer = agent.receive(tam_engine.connect("psk-device-1"))
    assert answer is not None
    assert tam_engine.receive(answer, "psk-device-1") is not None  # the right device carries on


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_two_devices_interleaved_on_one_tam(encoding: str, rsa_pki: OtrpPki, tmp_path: Path) -> None:
    """Answers are routed to their session by tid, whatever the order they arrive in."""
    policy = _policy(rsa_pki, b"shared TA")
    tam_engine = OtrpTamEngine(
        OtrpTamConfig(
            identity=rsa_pki.tam, tee_anchors=(rsa_pki.root.cert,), encoding=encoding, policy=policy
        )  # type: ignore[arg-type]
    )
    agents = [
        OtrpAgentEngine(
            OtrpAgentConfig(identity=rsa_pki.tee, tam_anchors=(rsa_pki.root.cert,), encoding=encoding),  # type: ignore[arg-type]
            tmp_path / f"agent{i}",
        )
        for i in range(2)
    ]
    pending = [tam_engine.connect(), tam_engine.connect()]
    done = [False, False]
    order = [1, 0, 0, 1, 1, 0, 0, 1]
    for i in order:
        if done[i]:
            continue
        answer = agents[i].receive(pending[i])
        assert answer is not None
        nxt = tam_engine.receive(answer)
        if nxt is None:
            done[i] = True
        else:
            pending[i] = nxt
    assert done == [True, True]
    assert all(a.installed() == {SD: {TA: b"shared TA"}} for a in agents)


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_peek_reads_rid_and_tid_of_every_message(encoding: str, rsa_pki: OtrpPki) -> None:
    from teep_coap.otrp.model import BrokerError

    from .conftest import all_messages

    codec = codec_for(encoding)
    for msg in all_messages():
        signer, recipient = (rsa_pki.tam, rsa_pki.tee) if msg.IS_REQUEST else (rsa_pki.tee, rsa_pki.tam)
        wire = codec.seal(msg, signer, recipient.public_key).wire
        cls, rid, tid = codec.peek(wire)
        assert (cls, rid, tid) == (type(msg), msg.rid, msg.tid)
    err = codec.encode_unsigned(BrokerError(errcode=OtrpErrorCode.ERR_AGENT_TEE_BUSY, rid="r9", tid="t9"))
    assert codec.peek(err) == (None, "r9", "t9")
    assert codec.peek(b"\x00garbage") == (None, "", "")


def test_failed_command_leaves_no_partial_state(tam: _Tam) -> None:
    from teep_coap.otrp.model import SDChanges, UpdateSDContent, UpdateSDRequest

    tam.create()
    tam.create(sdname="other.sd")
    before = json.loads((tam.agent.state_dir / "state.json").read_text())["sds"]
    # a valid new spcert first, then a rename onto a used name: the whole UpdateSD must fail
    changes = SDChanges(spcert=(tam.pki.sp.cert_der,), newsdname="other.sd")
    content = UpdateSDContent(tamid=tam.tamid, spid="sp.example", sdname=SD, changes=changes)
    assert (
        _code(tam.send(UpdateSDRequest(**tam.head(), content=content)))
        is OtrpErrorCode.ERR_SDNAME_ALREADY_USED
    )  # type: ignore[arg-type]
    tam.gds()  # saves the state again
    after = json.loads((tam.agent.state_dir / "state.json").read_text())["sds"]
    assert after == before


def test_answer_with_wrong_rid_ends_the_session(rsa_pki: OtrpPki, tmp_path: Path) -> None:
    from teep_coap.otrp.model import CreateSDResponse, CreateSDResultContent

    tam_engine, agent = make_engines("json", rsa_pki, tmp_path, _policy(rsa_pki, b"x"))
    answer = agent.receive(tam_engine.connect())
    assert answer is not None
    create = tam_engine.receive(answer)
    assert create is not None
    tid = next(iter(tam_engine._sessions))
    forged = CreateSDResponse(rid="not-the-rid", tid=tid, content=CreateSDResultContent(did=rsa_pki.tee.did))
    wire = codec_for("json").seal(forged, rsa_pki.tee, rsa_pki.tam.public_key).wire
    with pytest.raises(OtrpProtocolError, match="does not match"):
        tam_engine.receive(wire)
    assert not tam_engine._sessions and tam_engine.results()[-1].status == "invalid"
