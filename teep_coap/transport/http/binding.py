"""HTTP(S) server and client with the same shape as the CoAP ones, so a profile's scheme can pick either.

`CoapServer(profile, handler, bind, devices)` / `CoapClient(profile, tam_uri, credentials)` are the
CoAP binding's classes; `HttpServer` / `HttpClient` take the same arguments (devices and credentials
are ignored: HTTP identifies no device at the transport unless client certificates are asked for)
plus where the TLS material is. Registry for the stack builders:

    SERVERS = {"http": HttpServer, "https": HttpServer}
    CLIENTS = {"http": HttpClient, "https": HttpClient}
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from teep_coap.transport.base import MessageHandler
from teep_coap.transport.http.client import HttpBrokerClient
from teep_coap.transport.http.options import HttpOptions
from teep_coap.transport.http.server import HttpTamServer
from teep_coap.transport.http.stack import make_http_client, make_http_server


class HttpServer:
    """A TAM on HTTP(S) for one profile; `start()` then `close()`; `.port` and `.uri` once started."""

    def __init__(
        self,
        profile: HttpOptions | Any,
        handler: MessageHandler,
        bind: tuple[str, int] = ("127.0.0.1", 0),
        devices: Sequence[Any] = (),
        *,
        certs_path: str | os.PathLike[str] | None = None,
        require_client_cert: bool = False,
    ) -> None:
        self.profile = profile
        self._server: HttpTamServer = make_http_server(
            profile,
            handler,
            host=bind[0],
            port=bind[1],
            certs_path=certs_path,
            require_client_cert=require_client_cert,
        )
        self.port = 0

    @property
    def uri(self) -> str:
        return self._server.uri

    async def start(self) -> None:
        self.port = await self._server.start()

    async def close(self) -> None:
        await self._server.stop()

    async def __aenter__(self) -> HttpServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


class HttpClient(HttpBrokerClient):
    """The Broker's `MessageClient` over HTTP(S), built like `CoapClient(profile, tam_uri, credentials)`."""

    def __init__(
        self,
        profile: HttpOptions | Any,
        tam_uri: str,
        credentials: Any = None,
        *,
        certs_path: str | os.PathLike[str] | None = None,
        ca_file: str | os.PathLike[str] | None = None,
    ) -> None:
        built = make_http_client(profile, tam_uri, certs_path=certs_path, ca_file=ca_file)
        super().__init__(
            built.uri,
            built.media_type,
            built.ssl_context,
            built.timeout,
            max_message_size=built.max_message_size,
            also_accept=built.also_accept,
        )
        self.profile = profile


SERVERS: dict[str, type[HttpServer]] = {"http": HttpServer, "https": HttpServer}
CLIENTS: dict[str, type[HttpClient]] = {"http": HttpClient, "https": HttpClient}
