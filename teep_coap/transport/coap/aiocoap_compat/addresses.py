"""Plain-CoAP addresses: their text and multicast test computed once per IP address, not per use.

Written for aiocoap 0.4.17. `UDP6EndpointAddress.hostinfo` parses the peer's IP address with
`ipaddress.IPv6Address` on every call, and `as_response_address` (every response) parses the local
address to ask whether it is multicast. A plain-CoAP TAM asks for the peer's text three times per
request (Echo check at the datagram gate, again in the resource, the peer's identity for the
handler): py-spy put the `ipaddress` work at about 5 % of its busy samples. A client asks whether
the remote is multicast twice per request it sends (aiocoap's token and message managers), parsing
the address twice each time: about 6 % of a plain-CoAP device's time in the fleet simulator under
cProfile. All are pure functions of an address string, so they are memoised here (LRU, ADDRESS_CACHE
entries: a fleet's distinct IP addresses beyond that are parsed again, as before).
"""

from __future__ import annotations

import functools
import ipaddress
from typing import Any

from aiocoap.transports.udp6 import UDP6EndpointAddress

ADDRESS_CACHE = 4096  # distinct IP addresses whose text / multicast flag are kept

_state: dict[str, Any] = {"applied": False}


@functools.lru_cache(maxsize=ADDRESS_CACHE)
def _is_multicast(address: str) -> bool:
    return ipaddress.ip_address(address).is_multicast


def _is_multicast_locally(self: Any) -> bool:
    return _is_multicast(self._plainaddress_local())


def _is_multicast_remote(self: Any) -> bool:
    return _is_multicast(self._plainaddress().split("%", 1)[0])  # as aiocoap: without the zone


def cache_address_text() -> bool:
    """Memoise UDP6EndpointAddress's address text and its multicast tests (idempotent,
    process-wide); True once applied."""
    if _state["applied"]:
        return True
    strip = UDP6EndpointAddress._strip_v4mapped
    UDP6EndpointAddress._strip_v4mapped = staticmethod(functools.lru_cache(maxsize=ADDRESS_CACHE)(strip))
    UDP6EndpointAddress.is_multicast_locally = property(_is_multicast_locally)
    UDP6EndpointAddress.is_multicast = property(_is_multicast_remote)
    _state["applied"] = True
    return True


__all__ = ["ADDRESS_CACHE", "cache_address_text"]
