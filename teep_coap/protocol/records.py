"""The plain values the TAM engine reads from and hands to its repository (one per stored row kind).

They live in `protocol`, not in `store`: the engine is written against these and against the ports in
`teep_coap.protocol.ports`; a store (SQL, in memory) builds them. Frozen, so no storage object escapes
a transaction.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import cbor2

from teep_coap.errors import TeepCoapError

ComponentId = tuple[bytes, ...]

# states of an outstanding request
OPEN = "open"
ANSWERED = "answered"
SUPERSEDED = "superseded"

# who a catalog entry is offered to (policy file `audience`)
AUDIENCES = ("all", "request", "delete")


class StoreError(TeepCoapError):
    """The TAM repository failed or refused an operation; the message says which."""


class DuplicateDevice(StoreError):
    """A device with this kid, PSK identity or OSCORE id is already registered."""


def component_key(component_id: Sequence[bytes]) -> bytes:
    """Stable key of a SUIT_Component_Identifier: its CBOR encoding."""
    if type(component_id) is tuple:  # a ComponentId: the same few ids come back in every session
        try:
            return _tuple_key(component_id)
        except TypeError:  # a part that cannot be hashed (bytearray): encoded below
            pass
    return bytes(cbor2.dumps([bytes(p) for p in component_id]))


@functools.lru_cache(maxsize=4096)
def _tuple_key(component_id: tuple[bytes, ...]) -> bytes:
    return bytes(cbor2.dumps([bytes(p) for p in component_id]))


def component_from_key(key: bytes) -> ComponentId:
    """The component id back from `component_key`."""
    return tuple(bytes(p) for p in cbor2.loads(key))


@dataclass(frozen=True)
class Device:
    """A registered device: its TEEP key, transport identities and what was last learned of it."""

    id: int
    kid: bytes
    alg: int
    public_key: bytes
    name: str | None
    psk_identity: str | None
    oscore_id: str | None
    attested_claims: dict[str, Any] | None
    negotiated: dict[str, Any]
    last_contact: float | None


@dataclass(frozen=True)
class Outstanding:
    """A request the TAM sent and awaits an answer to (token / challenge, expiry, what was asked)."""

    id: int
    session_id: int
    device_id: int | None
    kind: str
    token: bytes | None
    challenge: bytes | None
    state: str
    created_at: float
    expires_at: float
    data: dict[str, Any] = field(default_factory=dict)
    # When its session started, if the store read it along (claim_open does): lets the engine end
    # the session without reading it back (`finish_session`).
    session_started_at: float | None = field(default=None, compare=False)


@dataclass(frozen=True)
class CatalogEntry:
    """One version of a Trusted Component the TAM can offer (its SUIT envelope)."""

    component_id: ComponentId
    sequence_number: int
    envelope: bytes
    name: str | None
    audience: str


@dataclass(frozen=True)
class DeviceComponent:
    """What the TAM knows of one component on one device: installed, wanted, unneeded."""

    component_id: ComponentId
    installed_seq: int | None
    wanted: bool
    wanted_min_seq: int | None
    unneeded: bool
