"""The TEEP Broker's session logic, sans-IO: what to send next, when the session is over.

The transports (CoAP, HTTP) write the async loop; this module decides. It follows the HTTP binding
(draft-ietf-teep-otrp-over-http-15, docs/protocol-facts.md §4), which the CoAP binding mirrors:

    start()                      → Send(b"")   (empty POST = ProcessConnect at the TAM)
    on_response(None or b"")     → Done(ok=True)            the TAM has nothing more
    on_response(message)         → Agent.ProcessTeepMessage → Send(answer) | Done(ok=True) if none
    on_transport_error(exc)      → Agent.ProcessError(tam_uri) → Done(ok=False)

A session that exceeds `max_rounds` exchanges ends with Done(ok=False) so a confused peer cannot keep
the device busy forever.

Loop of a transport (sketch):

    session = BrokerSession(agent, tam_uri)
    action = session.start()
    while isinstance(action, Send):
        try:
            answer = await asyncio.wait_for(client.post(action.payload), timeout)
        except TransportError as exc:
            action = session.on_transport_error(exc)
        else:
            action = session.on_response(answer)
"""

from __future__ import annotations

import enum
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Protocol

from teep_coap import crashpoints


class AgentLike(Protocol):
    def receive(self, data: bytes) -> bytes | None: ...

    def process_error(self, tam_uri: str) -> None: ...

    def request_policy_check(self) -> str | None: ...


@dataclass(frozen=True)
class Send:
    """POST this payload to the TAM (empty = start a session)."""

    payload: bytes


@dataclass(frozen=True)
class Done:
    """The session is over."""

    ok: bool
    reason: str


class Phase(enum.Enum):
    IDLE = "idle"
    WAITING = "waiting"  # a request is at the TAM
    DONE = "done"


@dataclass
class BrokerSession:
    """One Broker session with one TAM; counts bytes and rounds for the benchmarks."""

    agent: AgentLike
    tam_uri: str
    max_rounds: int = 16
    first_message: bytes = b""  # an unsolicited QueryResponse (RequestTA) may start the session
    phase: Phase = Phase.IDLE
    rounds: int = 0
    sent: list[bytes] = field(default_factory=list)
    received: list[bytes] = field(default_factory=list)
    result: Done | None = None

    def start(self) -> Send:
        if self.phase is not Phase.IDLE:
            raise RuntimeError("session already started")
        return self._send(self.first_message)

    def _send(self, payload: bytes) -> Send:
        self.rounds += 1
        self.phase = Phase.WAITING
        self.sent.append(payload)
        return Send(payload)

    def _done(self, ok: bool, reason: str) -> Done:
        self.phase = Phase.DONE
        self.result = Done(ok, reason)
        return self.result

    def on_response(self, payload: bytes | None) -> Send | Done:
        """The TAM answered (None or empty = nothing more)."""
        if self.phase is not Phase.WAITING:
            raise RuntimeError(f"no request outstanding (phase {self.phase.value})")
        if not payload:
            if crashpoints.armed is not None:  # test hook (teep_coap.crashpoints)
                crashpoints.reached("agent.received.final")
            return self._done(True, "the TAM has nothing more")
        self.received.append(payload)
        answer = self.agent.receive(payload)
        if answer is None:
            return self._done(True, "the Agent has nothing more to say")
        if self.rounds >= self.max_rounds:
            self.agent.process_error(self.tam_uri)
            return self._done(False, f"more than {self.max_rounds} exchanges")
        return self._send(answer)

    def on_transport_error(self, error: BaseException | str) -> Done:
        """The request failed (timeout, refused, error status): tell the Agent, end the session."""
        if self.phase is not Phase.WAITING:
            raise RuntimeError(f"no request outstanding (phase {self.phase.value})")
        self.agent.process_error(self.tam_uri)
        return self._done(False, f"transport error: {error}")

    @property
    def bytes_sent(self) -> int:
        return sum(len(p) for p in self.sent)

    @property
    def bytes_received(self) -> int:
        return sum(len(p) for p in self.received)


def policy_check_uris(agent: AgentLike, limit: int = 64) -> Iterator[str]:
    """RequestPolicyCheck repeated until the Agent returns nothing: the TAMs to contact, in order."""
    for _ in range(limit):
        uri = agent.request_policy_check()
        if uri is None:
            return
        yield uri


def run_in_memory(agent: AgentLike, tam_uri: str, post: PostFn, *, max_rounds: int = 16) -> BrokerSession:
    """Drive a whole session with a synchronous `post` (tests, benchmarks, the in-memory demo):
    `post(payload) -> answer | None`, raising any exception for a transport failure."""
    session = BrokerSession(agent, tam_uri, max_rounds=max_rounds)
    action: Send | Done = session.start()
    while isinstance(action, Send):
        try:
            answer = post(action.payload)
        except Exception as exc:  # any failure of the caller's transport ends the session as ProcessError
            action = session.on_transport_error(exc)
        else:
            action = session.on_response(answer)
    return session


class PostFn(Protocol):
    def __call__(self, payload: bytes) -> bytes | None: ...


class TamLike(Protocol):
    def connect(self, transport_identity: str | None = None) -> bytes: ...

    def receive(self, data: bytes, transport_identity: str | None = None) -> bytes | None: ...


def in_memory_post(tam: TamLike, transport_identity: str | None = None) -> PostFn:
    """A `post` that hands payloads straight to a TamEngine, as a transport's TAM side would:
    empty payload = ProcessConnect, anything else = ProcessTeepMessage."""

    def post(payload: bytes) -> bytes | None:
        if not payload:
            return tam.connect(transport_identity)
        return tam.receive(payload, transport_identity)

    return post
