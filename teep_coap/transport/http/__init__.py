"""TEEP over HTTP and HTTPS (draft-ietf-teep-otrp-over-http-15): aiohttp TAM server and Broker client."""

from teep_coap.transport.http.client import HttpBrokerClient
from teep_coap.transport.http.rules import DEFAULT_PATH, SECURITY_HEADERS
from teep_coap.transport.http.server import HttpServerOptions, HttpTamServer

__all__ = [
    "DEFAULT_PATH",
    "SECURITY_HEADERS",
    "HttpBrokerClient",
    "HttpServerOptions",
    "HttpTamServer",
]
