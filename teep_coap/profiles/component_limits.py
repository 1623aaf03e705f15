"""Will an Agent take this Trusted Component? A check of an envelope's size at `tam component add`.

An Update carries the whole SUIT envelope; a message over the profile's `max_message_size`, or over
the Agent's decoding limit (`encoding.cbor_codec.DEFAULT_MAX_SIZE`, 1 MiB), is refused by every
Agent that is sent it, and a catalog entry for everyone would be sent again in every session. The
estimate: the envelope (×4/3 for the JSON profiles, which carry it base64url-encoded) plus
UPDATE_OVERHEAD for the Update's other fields, the COSE_Sign1 or JWS wrapping and its signature.
"""

from __future__ import annotations

from dataclasses import dataclass

from teep_coap.encoding.cbor_codec import DEFAULT_MAX_SIZE
from teep_coap.errors import TeepCoapError
from teep_coap.profiles.loader import list_profiles

UPDATE_OVERHEAD = 512  # bytes around the envelope in a signed Update (token, keys, signature, headers)


class ComponentTooLarge(TeepCoapError):
    """No TEEP profile can deliver an Update with this envelope."""


@dataclass(frozen=True)
class SizeVerdict:
    update_bytes: dict[str, int]  # profile name -> estimated Update size
    refusing: dict[str, int]  # profile name -> the limit the Update exceeds

    @property
    def refused_everywhere(self) -> bool:
        return bool(self.update_bytes) and len(self.refusing) == len(self.update_bytes)


def update_size(envelope_size: int, encoding: str) -> int:
    """Estimated bytes of an Update that carries an envelope of `envelope_size` bytes."""
    body = -(-envelope_size * 4 // 3) if encoding == "json" else envelope_size
    return body + UPDATE_OVERHEAD


def check_envelope_size(envelope_size: int) -> SizeVerdict:
    """Which TEEP profiles (and the Agent's decoder) would refuse an Update with this envelope."""
    sizes: dict[str, int] = {}
    refusing: dict[str, int] = {}
    for p in list_profiles():
        if p.protocol != "teep":
            continue
        need = update_size(envelope_size, p.encoding)
        limit = min(p.limits.max_message_size, DEFAULT_MAX_SIZE)
        sizes[p.name] = need
        if need > limit:
            refusing[p.name] = limit
    return SizeVerdict(sizes, refusing)


__all__ = ["UPDATE_OVERHEAD", "ComponentTooLarge", "SizeVerdict", "check_envelope_size", "update_size"]
