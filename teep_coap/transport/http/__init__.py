"""TEEP over HTTP and HTTPS (draft-ietf-teep-otrp-over-http-15): aiohttp TAM server and Broker client."""

from teep_coap.transport.http.binding import CLIENTS, SERVERS, HttpClient, HttpServer
from teep_coap.transport.http.client import HttpBrokerClient
from teep_coap.transport.http.rules import DEFAULT_PATH, SECURITY_HEADERS
from teep_coap.transport.http.server import HttpServerOptions, HttpTamServer

__all__ = [
    "CLIENTS",
    "DEFAULT_PATH",
    "SECURITY_HEADERS",
    "SERVERS",
    "HttpBrokerClient",
    "HttpClient",
    "HttpServer",
    "HttpServerOptions",
    "HttpTamServer",
]
