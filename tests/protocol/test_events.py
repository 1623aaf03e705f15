"""The TAM engine's typed results and explicit time: `handle_connect` / `handle_message(now)` return
events for what they committed; `next_timer` / `handle_timer(now)` do the housekeeping."""

from __future__ import annotations

import pytest

from teep_coap.protocol.errors import InvalidMessage
from teep_coap.protocol.events import (
    ComponentInstalled,
    ComponentRemoved,
    SendReply,
    SessionEnded,
    TamEvent,
    reply_of,
)
from teep_coap.protocol.tam import EXPIRE_EVERY

from .conftest import MakeWorld, World, cid


def _run(world: World, now: float) -> list[TamEvent]:
    """One session driven through the event API; every event the TAM produced, in order."""
    events = list(world.tam.handle_connect(now))
    answer = world.agent.receive(reply_of(tuple(events)) or b"")
    while answer is not None:
        step = world.tam.handle_message(answer, now)
        events.extend(step)
        reply = reply_of(step)
        if reply is None:
            break
        answer = world.agent.receive(reply)
    return events


def test_install_and_delete_as_events(world: World) -> None:
    env = world.publish(1, seq=3)
    now = world.clock()
    events = _run(world, now)
    assert isinstance(events[0], SendReply)
    kid = world.state.key.kid
    assert [e for e in events if not isinstance(e, SendReply)] == [
        ComponentInstalled(kid, cid(1), 3),
        SessionEnded(events[-1].session_id, "success"),  # type: ignore[union-attr]
    ]
    again = _run(world, now)
    assert [type(e) for e in again] == [SendReply, SessionEnded]
    assert isinstance(again[-1], SessionEnded) and again[-1].outcome == "up-to-date"
    world.store.add_component(
        component_id=cid(1), sequence_number=3, envelope=env, now=now, audience="delete"
    )
    gone = _run(world, now)
    assert ComponentRemoved(kid, cid(1)) in gone
    assert world.installed() == {}


def test_a_refused_message_gives_no_events_and_no_state(world: World) -> None:
    world.publish(1, seq=1)
    now = world.clock()
    before = world.tam_state()
    with pytest.raises(InvalidMessage):
        world.tam.handle_message(b"\xa0", now)
    assert world.tam_state() == before


def test_now_is_the_callers_not_the_clock(make_world: MakeWorld) -> None:
    """A request made at `now` expires by the `now` passed later, whatever the engine's clock says."""
    w = make_world(tam_attestation="none", token_lifetime=60.0)
    w.publish(1, seq=1)
    start = w.clock()
    qresp = w.agent.receive(reply_of(w.tam.handle_connect(start)) or b"")
    assert qresp is not None
    with pytest.raises(InvalidMessage, match="expired"):
        w.tam.handle_message(qresp, start + 61)  # the clock still says `start`
    assert w.clock() == start


def test_timer_sweeps_expired_requests(make_world: MakeWorld) -> None:
    w = make_world(tam_attestation="none", token_lifetime=60.0, keep_expired=10.0)
    w.publish(1, seq=1)
    start = w.clock()
    w.tam.handle_timer(start)
    assert w.tam.next_timer() == start + EXPIRE_EVERY
    w.agent.receive(reply_of(w.tam.handle_connect(start)) or b"")
    w.tam.handle_connect(start)
    opened = len(w.store.outstanding())
    assert opened >= 1
    assert w.tam.handle_timer(start + 30) == ()  # not expired yet: nothing dropped, nothing ended
    assert len(w.store.outstanding()) == opened
    sessions = sorted({o.session_id for o in w.store.outstanding()})
    # expired longer than keep_expired: swept, and both silent sessions end as abandoned, once
    swept = w.tam.handle_timer(start + 60 + 10 + 1)
    assert swept == tuple(SessionEnded(sid, "abandoned") for sid in sessions) and len(sessions) == 2
    assert w.store.outstanding() == []
    assert w.tam.next_timer() == start + 71 + EXPIRE_EVERY
    assert w.tam.handle_timer(start + 71 + EXPIRE_EVERY) == ()  # ended sessions are not ended again
