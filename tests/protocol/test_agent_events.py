"""The Agent engine's explicit time and typed result: `handle_message(data, now)` answers with a
`SendReply` and reads the caller's `now`, never the engine's clock; `receive` is its bytes wrapper."""

from __future__ import annotations

from teep_coap.model.codes import ErrorCode
from teep_coap.model.teep import Update
from teep_coap.protocol.events import SendReply, reply_of
from teep_coap.protocol.wire import seal

from .conftest import MakeWorld, World


def _clock_must_not_run() -> float:
    raise AssertionError("the Agent engine read its clock during handle_message")


def test_handle_message_uses_now_not_the_clock(make_world: MakeWorld) -> None:
    w = make_world()  # background-check attestation: the answer carries evidence stamped with `now`
    w.publish(1, seq=1)
    start = w.clock()
    query = reply_of(w.tam.handle_connect(start))
    assert query is not None
    w.agent.clock = _clock_must_not_run
    events = w.agent.handle_message(query, start)
    assert len(events) == 1 and isinstance(events[0], SendReply)
    # the TAM accepts the answer and goes on with an Update: the evidence's time was right
    assert reply_of(w.tam.handle_message(events[0].payload, start)) is not None


def test_a_message_needing_no_answer_gives_no_events(world: World) -> None:
    """An Update that only carries the TAM's refusal is noted, not answered: no SendReply."""
    refusal = seal(Update(token=b"\xb0" * 16, err_code=int(ErrorCode.ERR_TEMPORARY_ERROR)), world.tam_es)
    assert world.agent.handle_message(refusal, world.clock()) == ()
    assert world.agent.receive(refusal) is None
    assert "TAM refused" in world.agent.last_note
