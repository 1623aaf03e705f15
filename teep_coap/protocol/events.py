"""What an engine call produced, as typed values (frozen dataclasses) instead of `bytes | None`.

A TAM call (`TamEngine.handle_connect` / `handle_message` / `handle_timer`) returns a tuple of
events: at most one `SendReply` (the signed message to send back), then whatever the call committed:
`SessionEnded`, `ComponentInstalled`, `ComponentRemoved`. Events are only returned for a call whose
transaction committed, so an adapter may log or count them as facts.

An Agent call (`AgentEngine.handle_message`) returns at most one `SendReply`, then the components the
message installed or removed on the device (`ComponentInstalled` / `ComponentRemoved`, the device
being the Agent's own key) and, when the TAM ended the exchange with an error, `TamRefused`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from teep_coap.protocol.records import ComponentId


@dataclass(frozen=True)
class SendReply:
    """Send `payload` (a signed TEEP message) back to the peer."""

    payload: bytes


@dataclass(frozen=True)
class SessionEnded:
    """A TEEP session ended: `outcome` as stored ("success", "up-to-date", "error:…", "abandoned", …);
    `started_at` on the engine's clock (for the duration; not part of the event's identity)."""

    session_id: int
    outcome: str
    started_at: float | None = field(default=None, compare=False)


@dataclass(frozen=True)
class ComponentInstalled:
    """The device `device_kid` confirmed component `component_id` at `sequence_number`."""

    device_kid: bytes
    component_id: ComponentId
    sequence_number: int


@dataclass(frozen=True)
class ComponentRemoved:
    """The device `device_kid` confirmed the removal of `component_id`."""

    device_kid: bytes
    component_id: ComponentId


@dataclass(frozen=True)
class TamRefused:
    """The TAM sent an Update carrying only an error: the Agent answers nothing, the session is over."""

    reason: str


TamEvent = SendReply | SessionEnded | ComponentInstalled | ComponentRemoved
AgentEvent = SendReply | ComponentInstalled | ComponentRemoved | TamRefused


def reply_of(events: tuple[TamEvent | AgentEvent, ...]) -> bytes | None:
    """The payload of the call's `SendReply`, None when the call has nothing to send."""
    return next((e.payload for e in events if isinstance(e, SendReply)), None)


__all__ = [
    "AgentEvent",
    "ComponentInstalled",
    "ComponentRemoved",
    "SendReply",
    "SessionEnded",
    "TamEvent",
    "TamRefused",
    "reply_of",
]
