"""A TEEP gateway assembled from profiles: its folder, its devices, and the running relay.

Folder layout (`teep-coap gateway init --dir GW`):

- ``GW/gateway.toml``: marks the folder (format version);
- ``GW/credentials.toml`` and ``GW/oscore/NAME/``: each device's DTLS PSK and OSCORE context, the
  same layout as a TAM folder's (`teep_coap.transport.coap.credentials`), written by
  `gateway device add`, which also writes the device's side into its Agent folder;
- ``GW/upstream/transport.toml`` (optional): the gateway's own credentials towards a coaps or
  coap+oscore TAM (`teep-coap tam credentials --name GW --agent-state GW/upstream` on the TAM).

`Gateway` serves the device profile (a CoAP profile) on one port and relays to the TAM URI with the
upstream profile that URI's scheme names, in the same encoding (CBOR/COSE or JSON/JWS).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

from teep_coap.errors import TeepCoapError
from teep_coap.profiles.loader import load_profile
from teep_coap.profiles.schema import Profile
from teep_coap.profiles.stack import coap_options, make_client
from teep_coap.protocol.agent import Fetcher
from teep_coap.transport.base import MessageClient, TransportError
from teep_coap.transport.coap.client import CoapClient
from teep_coap.transport.coap.credentials import (
    DeviceCredentials,
    load_agent_credentials,
    load_tam_credentials,
    provision_device,
)
from teep_coap.transport.coap.server import CoapServer
from teep_coap.transport.component_cache import CACHE_PATH, URI_QUERY, CacheResource, ComponentCache
from teep_coap.transport.gateway import IDLE_TIMEOUT, MAX_SESSIONS, GatewayRelay

GATEWAY_FILE = "gateway.toml"
UPSTREAM_DIR = "upstream"
FORMAT_VERSION = 1
DEFAULT_UPSTREAM_TIMEOUT = 5.0  # well under a device's request timeout, so it hears 5.04, not silence
IMAGE_TIMEOUT = 15.0  # seconds for the gateway to fetch one image upstream


class GatewayError(TeepCoapError):
    """A gateway folder, device or option is missing or does not fit; the message says what to do."""


def init_gateway_dir(folder: str | os.PathLike[str]) -> Path:
    """Create an empty gateway folder; refuses to overwrite one."""
    gw = Path(folder)
    if (gw / GATEWAY_FILE).exists():
        raise GatewayError(f"{gw} is already a gateway folder ({GATEWAY_FILE} exists)")
    gw.mkdir(parents=True, exist_ok=True)
    (gw / GATEWAY_FILE).write_text(f"format = {FORMAT_VERSION}\n", encoding="utf-8")
    return gw


def _check_dir(folder: str | os.PathLike[str]) -> Path:
    gw = Path(folder)
    if not (gw / GATEWAY_FILE).is_file():
        raise GatewayError(f"{gw} is not a gateway folder: run `teep-coap gateway init --dir {gw}` first")
    return gw


def add_device(
    folder: str | os.PathLike[str], name: str, agent_state: str | os.PathLike[str] | None = None
) -> DeviceCredentials:
    """Fresh device↔gateway credentials (DTLS PSK and OSCORE context), on both sides."""
    return provision_device(_check_dir(folder), agent_state, name)


def devices(folder: str | os.PathLike[str]) -> list[DeviceCredentials]:
    """The devices of a gateway folder."""
    return load_tam_credentials(_check_dir(folder))


def upstream_profile(device_profile: Profile, tam_uri: str) -> Profile:
    """The profile towards the TAM: the URI's scheme, the device profile's protocol and encoding."""
    scheme = tam_uri.split("://", 1)[0].lower() if "://" in tam_uri else ""
    if device_profile.protocol != "teep":
        raise GatewayError(f"the gateway relays TEEP profiles, not {device_profile.protocol!r}")
    enc = device_profile.encoding
    names = {
        "http": f"teep-{enc}-http",
        "https": f"teep-{enc}-https",
        "coap": "coap" if enc == "cbor" else "teep-json-coap",
        "coaps": "coaps-psk",
        "coap+oscore": "coap-oscore",
    }
    if scheme not in names or (enc != "cbor" and scheme in ("coaps", "coap+oscore")):
        raise GatewayError(
            f"cannot reach a TAM at {tam_uri!r} with {enc} messages: use an http://, https:// or coap:// URI"
            + (", or coaps:// / coap+oscore:// for CBOR" if enc == "cbor" else "")
        )
    return load_profile(names[scheme])


class Gateway:
    """The device-side server (the device profile) in front of a `GatewayRelay` to the TAM."""

    def __init__(
        self,
        folder: str | os.PathLike[str],
        device_profile: Profile,
        tam_uri: str,
        *,
        bind: tuple[str, int] = ("127.0.0.1", 0),
        certs: str | os.PathLike[str] | None = None,
        upstream_timeout: float = DEFAULT_UPSTREAM_TIMEOUT,
        max_sessions: int = MAX_SESSIONS,
        idle_timeout: float = IDLE_TIMEOUT,
        relay_class: type[GatewayRelay] = GatewayRelay,
        cache: bool = True,
        image_origins: Sequence[str] = (),
    ) -> None:
        self.folder = _check_dir(folder)
        if not device_profile.transport.is_coap:
            raise GatewayError(
                f"devices reach the gateway over CoAP; profile {device_profile.name!r} is "
                f"{device_profile.transport.scheme}"
            )
        self.device_profile = device_profile
        up = upstream_profile(device_profile, tam_uri)
        # The gateway gives up on the TAM before the device gives up on the gateway.
        self.upstream = dataclasses.replace(
            up, limits=dataclasses.replace(up.limits, request_timeout=upstream_timeout)
        )
        self.tam_uri = tam_uri
        self._certs = certs
        up_state = self.folder / UPSTREAM_DIR
        secure_coap = self.upstream.transport.is_coap and self.upstream.security.mode != "none"
        if secure_coap and not (up_state / "transport.toml").is_file():
            raise GatewayError(
                f"a {self.upstream.transport.scheme} TAM needs the gateway's own credentials in {up_state}: "
                f"on the TAM run `teep-coap tam credentials --name GATEWAY --agent-state {up_state}`"
            )
        self._up_state = up_state

        def client() -> MessageClient:
            return make_client(self.upstream, tam_uri, state_dir=self._up_state, certs_path=certs)

        # CoAP upstream: one client (request/response, no per-session connection); HTTP: one per session.
        self.relay = relay_class(
            client,
            upstream_timeout=upstream_timeout,
            shared_upstream=self.upstream.transport.is_coap,
            max_sessions=max_sessions,
            idle_timeout=idle_timeout,
        )

        self.server = CoapServer(
            coap_options(device_profile), self.relay, bind=bind, devices=devices(self.folder)
        )
        # Images named by URI in SUIT manifests: fetched once, served to every device (cache=False:
        # still served, but fetched upstream for each request, the baseline the benchmark compares with).
        # Images come from the TAM's own origin (an http(s) TAM) and from those named explicitly.
        origins = [*image_origins, *([tam_uri] if tam_uri.startswith(("http://", "https://")) else [])]
        try:
            self.cache = ComponentCache(
                timeout=max(upstream_timeout, IMAGE_TIMEOUT), origins=origins, enabled=cache
            )
        except TransportError as exc:
            raise GatewayError(f"--image-origin: {exc}") from None
        require_oscore = device_profile.security.mode in ("oscore", "edhoc")
        self.server.add_resource(CACHE_PATH, CacheResource(self.cache, require_oscore=require_oscore))

    @property
    def uri(self) -> str:
        """The URI devices use (`agent run --tam URI`)."""
        return self.server.uri

    @property
    def port(self) -> int:
        return self.server.port

    async def start(self) -> None:
        await self.server.start()

    async def close(self) -> None:
        try:
            await self.server.close()
        finally:
            await self.relay.close()
            await self.cache.close()

    async def __aenter__(self) -> Gateway:
        await self.start()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()


def fetch_through_gateway(
    profile: Profile,
    tam_uri: str,
    state_dir: str | os.PathLike[str],
    *,
    credentials: DeviceCredentials | None = None,
) -> Fetcher:
    """The Agent's SUIT fetcher behind a gateway: `GET /c?u=<URI>` at the TAM URI's origin.

    The Agent engine calls its fetcher synchronously in the middle of a message (it is sans-IO), so
    the fetch runs on its own event loop in a worker thread, with its own CoAP client and the
    device's credentials; the caller's loop waits (a device runs one session at a time).
    """

    options = coap_options(profile)
    creds = credentials
    if creds is None and profile.security.mode != "none":
        creds = load_agent_credentials(state_dir)
    limit = profile.limits.request_timeout

    async def get(uri: str) -> bytes:
        client = CoapClient(options, tam_uri, creds)
        try:
            code, data = await client.request(
                "GET", path=f"/{'/'.join(CACHE_PATH)}?{URI_QUERY}{quote(uri, safe='')}"
            )
        finally:
            await client.close()
        if code != "2.05":
            raise GatewayError(f"gateway answered {code} for {uri}: {data.decode('utf-8', 'replace')}")
        return data

    def fetch(uri: str) -> bytes:
        with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="suit-fetch") as pool:
            return pool.submit(asyncio.run, get(uri)).result(timeout=limit + 5.0)

    return fetch
