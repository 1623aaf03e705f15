"""Build the HTTP(S) server and client a profile asks for (the HTTP twin of the CoAP stack builders).

A profile with scheme `http`/`https` selects this binding; the TLS material comes from a folder
written by `teep-coap certs generate --out DIR` (or the `TEEP_COAP_CERTS` environment variable),
since profiles hold no file paths.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from teep_coap.security import certs
from teep_coap.transport.base import MessageHandler, TransportError
from teep_coap.transport.http.client import HttpBrokerClient
from teep_coap.transport.http.options import HttpOptions
from teep_coap.transport.http.server import HttpServerOptions, HttpTamServer

CERTS_ENV = "TEEP_COAP_CERTS"
HTTP_SCHEMES = ("http", "https")


def _check(profile: HttpOptions | Any) -> HttpOptions:
    """The HTTP options (`profile` may be any profile-shaped object: `HttpOptions.adopt`)."""
    opts = HttpOptions.adopt(profile)
    if opts.scheme not in HTTP_SCHEMES:
        raise TransportError(f"profile {opts.name!r} is not an HTTP profile ({opts.scheme})")
    return opts


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
    profile: HttpOptions | Any,
    handler: MessageHandler,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    certs_path: str | os.PathLike[str] | None = None,
    require_client_cert: bool = False,
) -> HttpTamServer:
    """An `HttpTamServer` with the profile's path, media type and limits (HTTPS: TLS from the certs)."""
    opts = _check(profile)
    ssl_context = None
    if opts.scheme == "https":
        bundle = certs.load_bundle(certs_dir(certs_path))
        ssl_context = certs.server_ssl_context(
            bundle.server_cert, bundle.server_key, client_ca=bundle.ca_cert if require_client_cert else None
        )
    return HttpTamServer(
        handler,
        HttpServerOptions(
            host=host,
            port=port,
            path=opts.path,
            media_type=opts.media_type,
            also_accept=opts.also_accept,
            ssl_context=ssl_context,
            max_message_size=opts.max_message_size,
            max_concurrent_requests=opts.max_concurrent_requests,
            retry_after=opts.overload_max_age,
            handler_timeout=opts.request_timeout,
        ),
    )


def make_http_client(
    profile: HttpOptions | Any,
    uri: str,
    *,
    certs_path: str | os.PathLike[str] | None = None,
    ca_file: str | os.PathLike[str] | None = None,
) -> HttpBrokerClient:
    """An `HttpBrokerClient` for `uri` that trusts the project CA (or `ca_file`, or the system store)."""
    opts = _check(profile)
    if uri.split(":", 1)[0] != opts.scheme:
        raise TransportError(f"URI {uri!r} does not fit profile {opts.name!r} ({opts.scheme})")
    ssl_context = None
    if opts.scheme == "https":
        if ca_file is None and (certs_path is not None or os.environ.get(CERTS_ENV)):
            ca_file = certs.load_bundle(certs_dir(certs_path)).ca_cert
        ssl_context = certs.client_ssl_context(Path(ca_file) if ca_file is not None else None)
    return HttpBrokerClient(
        uri,
        opts.media_type,
        ssl_context,
        opts.request_timeout,
        max_message_size=opts.max_message_size,
        also_accept=opts.also_accept,
    )
