"""The Agent engine's explicit time and typed result: `handle_message(data, now)` answers with a
`SendReply` and reads the caller's `now`, never the engine's clock; `receive` is its bytes wrapper."""

from __future__ import annotations

from teep_coap.model.codes import ErrorCode
from teep_coap.model.teep import Update
from teep_coap.protocol.events import (
    AgentEvent,
    ComponentInstalled,
    ComponentRemoved,
    SendReply,
    TamRefused,
    reply_of,
)
from teep_coap.protocol.wire import seal

from .conftest import MakeWorld, World, cid


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
    assert world.agent.handle_message(refusal, world.clock()) == (
        TamRefused("TAM refused: ERR_TEMPORARY_ERROR"),
    )
    assert world.agent.receive(refusal) is None
    assert "TAM refused" in world.agent.last_note


def _agent_events(world: World, now: float) -> list[AgentEvent]:
    """One session with the Agent on the event API; every event the Agent produced, in order."""
    out: list[AgentEvent] = []
    message = reply_of(world.tam.handle_connect(now))
    while message is not None:
        step = world.agent.handle_message(message, now)
        out.extend(step)
        answer = reply_of(step)
        if answer is None:
            break
        message = reply_of(world.tam.handle_message(answer, now))
    return out


def test_the_agent_reports_installs_updates_and_removals(world: World) -> None:
    """Each component change the device stored is an event; a QueryRequest changes nothing."""
    world.publish(1, seq=3)
    now = world.clock()
    kid = world.state.key.kid
    events = _agent_events(world, now)
    assert [type(e) for e in events] == [SendReply, SendReply, ComponentInstalled]
    assert events[-1] == ComponentInstalled(kid, cid(1), 3)
    assert [type(e) for e in _agent_events(world, now)] == [SendReply]  # up to date: no change
    env = world.publish(1, seq=4)
    assert _agent_events(world, now)[-1] == ComponentInstalled(kid, cid(1), 4)
    world.store.add_component(
        component_id=cid(1), sequence_number=4, envelope=env, now=now, audience="delete"
    )
    assert _agent_events(world, now)[-1] == ComponentRemoved(kid, cid(1))
    assert world.installed() == {}
