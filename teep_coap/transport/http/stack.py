"""Build the HTTP(S) server and client a profile asks for (the HTTP twin of the CoAP stack builders).

A profile with scheme `http`/`https` selects this binding; the TLS material comes from a folder
written by `teep-coap certs generate --out DIR` (or the `TEEP_COAP_CERTS` environment variable),
since profiles hold no file paths.
"""

from __future__ import annotations

import os
from pathlib import Path

from teep_coap.profiles.schema import Profile
from teep_coap.security import certs
from teep_coap.transport.base import MessageHandler, TransportError
from teep_coap.transport.http.client import HttpBrokerClient
from teep_coap.transport.http.server import HttpServerOptions, HttpTamServer

CERTS_ENV = "TEEP_COAP_CERTS"
HTTP_SCHEMES = ("http", "https")


def _check(profile: Profile) -> None:
    if profile.transport.scheme not in HTTP_SCHEMES:
        raise TransportError(f"profile {profile.name!r} is not an HTTP profile ({profile.transport.scheme})")


def certs_dir(explicit: str | os.PathLike[str] | None) -> Path:
    """The folder with ca.pem/server.pem/server.key: the argument, else $TEEP_COAP_CERTS."""
    if explicit is not None:
        return Path(explicit)
    env = os.environ.get(CERTS_ENV)
    if env:
        return Path(env)
    raise certs.CertificateError(
        f"HTTPS needs certificates: run `teep-coap certs generate --out DIR` and pass --certs DIR "
        f"(or set {CERTS_ENV})"
    )


def make_http_server(
    profile: Profile,
    handler: MessageHandler,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    certs_path: str | os.PathLike[str] | None = None,
    require_client_cert: bool = False,
) -> HttpTamServer:
    """An `HttpTamServer` with the profile's path, media type and limits (HTTPS: TLS from the certs)."""
    _check(profile)
    ssl_context = None
    if profile.transport.scheme == "https":
        bundle = certs.load_bundle(certs_dir(certs_path))
        ssl_context = certs.server_ssl_context(
            bundle.server_cert, bundle.server_key, client_ca=bundle.ca_cert if require_client_cert else None
        )
    lim = profile.limits
    return HttpTamServer(
        handler,
        HttpServerOptions(
            host=host,
            port=port,
            path=profile.transport.path,
            media_type=profile.media_type,
            ssl_context=ssl_context,
            max_message_size=lim.max_message_size,
            max_concurrent_requests=lim.max_concurrent_requests,
            retry_after=lim.overload_max_age,
            handler_timeout=lim.request_timeout,
        ),
    )


def make_http_client(
    profile: Profile,
    uri: str,
    *,
    certs_path: str | os.PathLike[str] | None = None,
    ca_file: str | os.PathLike[str] | None = None,
) -> HttpBrokerClient:
    """An `HttpBrokerClient` for `uri` that trusts the project CA (or `ca_file`, or the system store)."""
    _check(profile)
    if uri.split(":", 1)[0] != profile.transport.scheme:
        raise TransportError(
            f"URI {uri!r} does not fit profile {profile.name!r} ({profile.transport.scheme})"
        )
    ssl_context = None
    if profile.transport.scheme == "https":
        if ca_file is None and (certs_path is not None or os.environ.get(CERTS_ENV)):
            ca_file = certs.load_bundle(certs_dir(certs_path)).ca_cert
        ssl_context = certs.client_ssl_context(Path(ca_file) if ca_file is not None else None)
    return HttpBrokerClient(
        uri,
        profile.media_type,
        ssl_context,
        profile.limits.request_timeout,
        max_message_size=profile.limits.max_message_size,
    )
