"""What the HTTP(S) binding needs to know of a stack, as its own small dataclass.

The transport sits below `profiles`: it must not import the profile schema. `HttpOptions.adopt(x)` is
the one place a profile becomes HTTP options (it copies any object of the profile's shape);
`profiles.stack.http_options(profile)` calls it, and tests and scripts may hand a profile directly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from teep_coap.model.codes import MEDIA_TYPE_TEEP_CBOR


@dataclass(frozen=True)
class HttpOptions:
    """Everything `make_http_server` / `make_http_client` read: scheme, path, media type, limits."""

    name: str
    scheme: str  # http | https
    path: str = "/teep"
    media_type: str = MEDIA_TYPE_TEEP_CBOR
    also_accept: tuple[str, ...] = ()  # older media types taken too (compatibility settings)
    max_message_size: int = 1_048_576
    request_timeout: float = 20.0
    max_concurrent_requests: int = 64
    overload_max_age: int = 2

    @classmethod
    def adopt(cls, obj: Any) -> HttpOptions:
        """`obj` itself if it is HttpOptions, else a copy of a profile-shaped object's values."""
        if isinstance(obj, cls):
            return obj
        lim = obj.limits
        return cls(
            name=str(obj.name),
            scheme=obj.transport.scheme,
            path=obj.transport.path,
            media_type=obj.media_type,
            also_accept=tuple(getattr(obj, "also_accepted_media_types", ())),
            max_message_size=lim.max_message_size,
            request_timeout=lim.request_timeout,
            max_concurrent_requests=lim.max_concurrent_requests,
            overload_max_age=lim.overload_max_age,
        )
