"""What an engine call produced, as typed values (frozen dataclasses) instead of `bytes | None`.

A TAM call (`TamEngine.handle_connect` / `handle_message`) returns a tuple of events: at most one
`SendReply` (the signed message to send back), then whatever the call committed: `SessionEnded`,
`ComponentInstalled`, `ComponentRemoved`. Events are only returned for a call whose transaction
committed, so an adapter may log or count them as facts.
"""

from __future__ import annotations

from dataclasses import dataclass

from teep_coap.protocol.records import ComponentId


@dataclass(frozen=True)
class SendReply:
    """Send `payload` (a signed TEEP message) back to the peer."""

    payload: bytes


@dataclass(frozen=True)
class SessionEnded:
    """A TEEP session ended: `outcome` as stored ("success", "up-to-date", "error:…", …)."""

    session_id: int
    outcome: str


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


TamEvent = SendReply | SessionEnded | ComponentInstalled | ComponentRemoved


def reply_of(events: tuple[TamEvent, ...]) -> bytes | None:
    """The payload of the call's `SendReply`, None when the call has nothing to send."""
    return next((e.payload for e in events if isinstance(e, SendReply)), None)


__all__ = ["ComponentInstalled", "ComponentRemoved", "SendReply", "SessionEnded", "TamEvent", "reply_of"]
