"""Issue 11 item 2: a TAM keeps no database state for a peer it has not authenticated.

Rows are counted in the real SQLite file with the sqlite3 module (not through the store)."""

from __future__ import annotations

import sqlite3
import stat
from pathlib import Path

import pytest

from teep_coap.model.teep import QueryRequest, Update
from teep_coap.protocol.errors import InvalidMessage
from teep_coap.protocol.stateless import TOKEN_SIZE, StatelessTokens
from teep_coap.protocol.tam import TamConfig, TamEngine
from teep_coap.store.tam_db import TamStore

from .conftest import MakeWorld, World, payload_of

SECRET = bytes(range(32))


def _rows(db: Path) -> dict[str, int]:
    with sqlite3.connect(db) as conn:
        names = [r[0] for r in conn.execute("select name from sqlite_master where type = 'table'")]
        return {n: conn.execute(f"select count(*) from {n}").fetchone()[0] for n in names}


@pytest.fixture
def world(make_world: MakeWorld) -> World:
    return make_world(stateless_secret=SECRET)


def test_empty_posts_add_no_rows(world: World) -> None:
    world.publish(1, seq=1)
    world.tam.connect()  # the first call also sweeps expired rows; count from here
    db = world.tmp / "tam.sqlite"
    before = _rows(db)
    size = db.stat().st_size
    for _ in range(200):
        world.tam.connect()
    assert _rows(db) == before and sum(before.values()) > 0
    assert before["sessions"] == 0 and before["outstanding"] == 0 and before["spent_tokens"] == 0
    assert db.stat().st_size == size


def test_stateless_request_carries_a_self_authenticating_token_and_derived_challenge(world: World) -> None:
    qr = payload_of(world.tam.connect())
    assert isinstance(qr, QueryRequest)
    assert qr.token is not None and len(qr.token) == TOKEN_SIZE
    assert qr.challenge == StatelessTokens(SECRET).challenge_for(qr.token)


def test_full_session_records_the_session_once_the_device_answered(world: World) -> None:
    world.publish(1, seq=1)
    s = world.session()
    assert s.result is not None and s.result.ok, s.result
    assert world.installed() == {(b"TEEP-Device", b"SecureFS", bytes([1]) * 16, b"ta"): 1}
    assert world.outcomes() == ["success"]
    assert len(world.store.snapshot()["spent_tokens"]) == 1
    events = [e for _, _, e, _ in world.store.audit_log()]
    assert "stateless-query-answered" in events and "session-start" in events


def test_token_is_accepted_once(world: World) -> None:
    world.publish(1, seq=1)
    qresp = world.agent.receive(world.tam.connect())
    assert qresp is not None
    assert isinstance(payload_of(world.tam.receive(qresp) or b""), Update)
    before = world.tam_state()
    assert world.tam.receive(qresp) is None  # replay: ignored, nothing written
    assert world.tam_state() == before


def test_two_tam_processes_sharing_the_database_accept_a_token_once(world: World) -> None:
    world.publish(1, seq=1)
    qresp = world.agent.receive(world.tam.connect())
    assert qresp is not None
    other = TamEngine(
        world.tam.config,
        TamStore(f"sqlite:///{world.tmp / 'tam.sqlite'}"),
        clock=world.clock,
        rng=world.rng,
    )
    answers = [world.tam.receive(qresp), other.receive(qresp)]
    assert answers[0] is not None and answers[1] is None
    assert len(world.store.snapshot()["spent_tokens"]) == 1
    other.store.close()


def test_spend_token_has_one_winner_across_stores(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'tam.sqlite'}"
    a, b = TamStore(url), TamStore(url)
    assert a.spend_token(b"k" * 32, 100.0) is True
    assert b.spend_token(b"k" * 32, 100.0) is False
    assert b.forget_spent_tokens(50.0) == 0 and b.forget_spent_tokens(100.0) == 1
    a.close()
    b.close()


def test_expired_token_is_refused(world: World) -> None:
    qresp = world.agent.receive(world.tam.connect())
    assert qresp is not None
    world.clock.advance(world.tam.config.token_lifetime + 1)
    with pytest.raises(InvalidMessage, match="expired"):
        world.tam.receive(qresp)
    assert world.store.snapshot()["spent_tokens"] == []


def test_token_is_bound_to_what_the_tam_asked(world: World) -> None:
    qresp = world.agent.receive(world.tam.connect())
    assert qresp is not None
    changed = TamConfig(
        keys=world.tam.config.keys,
        suit_cose_profiles=world.tam.config.suit_cose_profiles[:1],
        stateless_secret=SECRET,
    )
    tam = TamEngine(changed, world.store, clock=world.clock, rng=world.rng)
    with pytest.raises(InvalidMessage, match="no outstanding request"):
        tam.receive(qresp)


def test_token_of_another_secret_is_refused(world: World) -> None:
    qresp = world.agent.receive(world.tam.connect())
    assert qresp is not None
    config = TamConfig(keys=world.tam.config.keys, stateless_secret=b"\xff" * 32)
    tam = TamEngine(config, world.store, clock=world.clock, rng=world.rng)
    with pytest.raises(InvalidMessage, match="no outstanding request"):
        tam.receive(qresp)


def test_authenticated_transport_identity_keeps_the_stored_path(make_world: MakeWorld) -> None:
    world = make_world(stateless_secret=SECRET, psk_identity="dev1")
    qr = payload_of(world.tam.connect("dev1"))
    assert isinstance(qr, QueryRequest) and qr.token is None  # the stored request: challenge only
    assert len(world.store.outstanding()) == 1


def test_tam_folder_secret_is_private_and_kept(tmp_path: Path) -> None:
    from teep_coap.store.tamdir import SECRET_FILE, init_tam_dir, load_tam_dir

    init_tam_dir(tmp_path / "tam", algs=("esp256",))
    first, store = load_tam_dir(tmp_path / "tam")
    store.close()
    second, store = load_tam_dir(tmp_path / "tam")
    store.close()
    path = tmp_path / "tam" / SECRET_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert first.stateless_secret == second.stateless_secret == path.read_bytes()
    assert len(path.read_bytes()) == 32


def test_error_answering_a_stateless_request_renegotiates(world: World) -> None:
    """Error 5 echoing the token: the device is known now, so the renegotiated request is stored."""
    from teep_coap.model.codes import SUITE_SIGN1_ESP256, ErrorCode
    from teep_coap.model.teep import Error
    from teep_coap.protocol.wire import seal

    world.publish(1, seq=1)
    qr = payload_of(world.tam.connect())
    assert isinstance(qr, QueryRequest) and qr.token is not None
    err = Error(
        token=qr.token,
        err_code=ErrorCode.ERR_UNSUPPORTED_CIPHER_SUITES,
        supported_teep_cipher_suites=(SUITE_SIGN1_ESP256,),
    )
    qr2 = world.tam.receive(seal(err, world.state.key))
    assert qr2 is not None
    second = payload_of(qr2)
    assert isinstance(second, QueryRequest) and second.supported_teep_cipher_suites == (SUITE_SIGN1_ESP256,)
    assert len(world.store.outstanding(world.device.id)) == 2  # the adopted request and the new one
    upd = world.tam.receive(world.agent.receive(qr2) or b"")
    assert upd is not None and isinstance(payload_of(upd), Update)
    assert world.tam.receive(world.agent.receive(upd) or b"") is None
    assert world.outcomes() == ["success"]
