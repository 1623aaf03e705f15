"""Turn a profile into running transports: the TAM server and the Broker's client.

The transports sit below `profiles` and know nothing of the schema: a profile is translated into
their own options (`coap_options` → `CoapOptions`, `http_options` → `HttpOptions`). CoAP profiles get
`teep_coap.transport.coap` with the DTLS/OSCORE credentials of the TAM folder or the Agent state folder
(layout in docs/profiles.md); HTTP profiles get the HTTP binding's builders.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from teep_coap.profiles.schema import Profile
from teep_coap.transport.base import MessageClient, MessageHandler, TransportError
from teep_coap.transport.coap.client import CoapClient
from teep_coap.transport.coap.credentials import (
    CredentialsError,
    DeviceCredentials,
    load_agent_credentials,
    load_tam_credentials,
)
from teep_coap.transport.coap.options import CoapOptions
from teep_coap.transport.coap.server import CoapServer

if TYPE_CHECKING:
    from teep_coap.transport.http.options import HttpOptions

# The HTTP binding is imported where it is used: it pulls in aiohttp, which every `agent run` over
# CoAP paid for at start-up for nothing. Measured 2026-12-05 (CPU to import teep_coap.cli.agent,
# bytecode cached): 0.365-0.395 s with it, 0.342-0.358 s without, at load 0.5; 0.55-0.67 s against
# 0.36-0.42 s from a cold cache at load 5. A burst of 200 Agents starting at once pays it 200 times.

DEFAULT_PORTS = {"coap": 5683, "coaps": 5684, "coap+oscore": 5683, "http": 8080, "https": 8443}


def coap_options(profile: Profile) -> CoapOptions:
    """What the CoAP binding reads of a profile (the mapping is written once, in `CoapOptions.adopt`)."""
    return CoapOptions.adopt(profile)


def http_options(profile: Profile) -> HttpOptions:
    """What the HTTP(S) binding reads of a profile (written once, in `HttpOptions.adopt`; the media
    type follows protocol and encoding)."""
    from teep_coap.transport.http.options import HttpOptions

    return HttpOptions.adopt(profile)


def make_server(
    profile: Profile,
    handler: MessageHandler,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    tam_dir: str | os.PathLike[str] | None = None,
    certs_path: str | os.PathLike[str] | None = None,
) -> Any:
    """A server for the profile (not started): CoapServer, or the HTTP binding's HttpTamServer."""
    if profile.transport.is_coap:
        devices = load_tam_credentials(Path(tam_dir)) if tam_dir is not None else []
        return CoapServer(coap_options(profile), handler, bind=(host, port), devices=devices)
    from teep_coap.transport.http.stack import make_http_server

    return make_http_server(http_options(profile), handler, host=host, port=port, certs_path=certs_path)


def make_client(
    profile: Profile,
    tam_uri: str,
    *,
    state_dir: str | os.PathLike[str] | None = None,
    certs_path: str | os.PathLike[str] | None = None,
    credentials: DeviceCredentials | None = None,
    proxy: str | None = None,
) -> MessageClient:
    """The Broker's client for the profile; secure CoAP profiles read STATEDIR/transport.toml
    unless `credentials` are given."""
    if profile.transport.is_coap:
        creds = credentials
        if profile.security.mode != "none" and creds is None:
            if state_dir is None:
                raise CredentialsError(
                    f"profile {profile.name!r} needs the Agent state folder's transport.toml"
                )
            creds = load_agent_credentials(state_dir)
        return CoapClient(coap_options(profile), tam_uri, creds, proxy=proxy)

    if proxy is not None:
        raise TransportError("--proxy is a CoAP forward proxy; HTTP profiles do not take one")
    from teep_coap.transport.http.stack import make_http_client

    return make_http_client(http_options(profile), tam_uri, certs_path=certs_path)
