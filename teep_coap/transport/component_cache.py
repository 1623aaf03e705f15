"""The gateway's component cache: images named by URI in SUIT manifests, fetched once upstream.

A SUIT manifest may name a Trusted Component's image by URI instead of integrating it (the SUIT
"fetch" directive with `uri`; the digest and size stay in the signed manifest). Behind a gateway,
each device would fetch the same image from upstream. `ComponentCache` fetches each URI once
(concurrent requests for one URI share one fetch) and keeps the bytes, bounded in total size (least
recently used dropped first); `CacheResource` serves them to the devices as a CoAP resource
(`GET /c?u=<URI>`, block-wise by aiocoap's Block2 cache), over the gateway's own DTLS or OSCORE.

It fetches only from the origins it is given (by default the TAM's own, `gateway serve
--image-origin` adds more): a device must not be able to make the gateway fetch from any host it
can name, such as services only the gateway's network reaches. Redirects are not followed.

The cache does not check digests: it cannot know them without parsing manifests, and need not — the
Agent checks the image against the digest in the signed manifest (SUIT image-match), so a wrong or
altered image is refused by the device, as it would be from the origin.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import aiocoap
import aiocoap.resource
from aiocoap import Message
from aiocoap.numbers.codes import Code
from yarl import URL

from teep_coap.transport.base import TransportError, TransportTimeout

if TYPE_CHECKING:
    import aiohttp

log = logging.getLogger("teep_coap.gateway.cache")

CACHE_PATH = ("c",)
URI_QUERY = "u="
MAX_IMAGE = 16 * 1024 * 1024  # bytes of one image the cache fetches at most
MAX_TOTAL = 64 * 1024 * 1024  # bytes the cache keeps in all


class OriginRefused(TransportError):
    """The image URI is not on an origin the gateway was told to fetch from."""


def image_origin(uri: str) -> str:
    """`scheme://host:port` of an http(s) URI (default ports made explicit), as origins compare."""
    try:
        url = URL(uri)
    except ValueError:
        raise TransportError(f"not a URI: {uri!r}") from None
    if url.scheme not in ("http", "https") or not url.host:
        raise TransportError(f"the component cache fetches http(s) URIs only, not {uri!r}")
    return f"{url.scheme}://{url.host.lower()}:{url.port}"


@dataclass
class CacheStats:
    """What went upstream and what the devices got."""

    upstream_fetches: int = 0
    upstream_bytes: int = 0
    hits: int = 0
    served: int = 0


class ComponentCache:
    """Images by URI: fetched from http(s) upstream once, kept while room is left."""

    def __init__(
        self,
        *,
        timeout: float,
        origins: Iterable[str],
        enabled: bool = True,
        max_image: int = MAX_IMAGE,
        max_total: int = MAX_TOTAL,
    ) -> None:
        self.origins = frozenset(image_origin(o) for o in origins)
        self.timeout = timeout
        self.enabled = enabled  # False: every request goes upstream (the baseline of `bench gateway`)
        self.max_image = max_image
        self.max_total = max_total
        self.stats = CacheStats()
        self._images: OrderedDict[str, bytes] = OrderedDict()
        self._pending: dict[str, asyncio.Future[bytes]] = {}
        self._session: aiohttp.ClientSession | None = None

    async def get(self, uri: str) -> bytes:
        """The image at `uri` (OriginRefused, TransportError / TransportTimeout when upstream fails)."""
        origin = image_origin(uri)
        if origin not in self.origins:
            raise OriginRefused(
                f"origin {origin} is not one the gateway fetches from "
                f"(allowed: {', '.join(sorted(self.origins)) or 'none'}; gateway serve --image-origin)"
            )
        if self.enabled:
            data = self._images.get(uri)
            if data is not None:
                self._images.move_to_end(uri)
                self.stats.hits += 1
                return data
            pending = self._pending.get(uri)
            if pending is not None:
                self.stats.hits += 1
                return await asyncio.shield(pending)
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        if self.enabled:
            self._pending[uri] = future
        try:
            data = await self._fetch(uri)
            future.set_result(data)
        except TransportError as exc:
            future.set_exception(exc)
            future.exception()  # retrieved here: waiters re-raise it, nobody else must log it
            raise
        finally:
            self._pending.pop(uri, None)
        if self.enabled:
            self._keep(uri, data)
        return data

    def _keep(self, uri: str, data: bytes) -> None:
        if len(data) > self.max_total:
            return
        self._images[uri] = data
        while sum(len(v) for v in self._images.values()) > self.max_total:
            self._images.popitem(last=False)

    async def _fetch(self, uri: str) -> bytes:
        # Imported here, not at the top: aiohttp adds to every Agent's start-up CPU, and the Agent
        # side imports this module for its CoAP fetcher (see profiles/stack.py).
        import aiohttp

        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.timeout), cookie_jar=aiohttp.DummyCookieJar()
            )
        try:
            async with self._session.get(uri, allow_redirects=False) as response:
                if response.status != 200:
                    raise TransportError(f"{uri} answered {response.status}")
                # StreamReader.read(n) returns what has arrived so far, not n bytes: read to the end.
                body = bytearray()
                async for chunk in response.content.iter_any():
                    body += chunk
                    if len(body) > self.max_image:
                        break
                data = bytes(body)
        except TimeoutError:
            raise TransportTimeout(f"{uri} did not answer within {self.timeout:g} s") from None
        except aiohttp.ClientError as exc:
            raise TransportError(f"fetching {uri} failed: {exc}") from None
        if len(data) > self.max_image:
            raise TransportError(f"{uri} is larger than {self.max_image} bytes")
        self.stats.upstream_fetches += 1
        self.stats.upstream_bytes += len(data)
        return data

    async def close(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()


class CacheResource(aiocoap.resource.Resource):
    """`GET /c?u=<URI>`: the image, block-wise; 5.02 / 5.04 when upstream fails, 4.00 without `u=`."""

    def __init__(self, cache: ComponentCache, *, require_oscore: bool = False) -> None:
        super().__init__()
        self.cache = cache
        # Over OSCORE the site also passes unprotected requests on; only the device's protected
        # ones may make the gateway fetch (over DTLS the handshake already authenticated the device).
        self.require_oscore = require_oscore

    async def render_get(self, request: Message) -> Message:
        if self.require_oscore and type(request.remote).__name__ != "OSCOREAddress":
            return Message(code=Code.UNAUTHORIZED, payload=b"OSCORE protection required")
        uris = [q[len(URI_QUERY) :] for q in request.opt.uri_query if q.startswith(URI_QUERY)]
        if len(uris) != 1:
            return Message(code=Code.BAD_REQUEST, payload=b"one query u=<image URI> expected")
        try:
            data = await self.cache.get(uris[0])
        except OriginRefused as exc:
            log.warning("component cache: %s", exc)
            return Message(code=Code.FORBIDDEN, payload=str(exc).encode()[:200])
        except TransportTimeout as exc:
            return Message(code=Code.GATEWAY_TIMEOUT, payload=str(exc).encode()[:120])
        except TransportError as exc:
            log.warning("component cache: %s", exc)
            return Message(code=Code.BAD_GATEWAY, payload=str(exc).encode()[:120])
        self.cache.stats.served += 1
        return Message(code=Code.CONTENT, payload=data)


__all__ = ["CACHE_PATH", "CacheResource", "ComponentCache", "OriginRefused", "image_origin"]
