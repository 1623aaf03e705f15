"""The CoAP binding of TEEP: a TAM resource (server) and a Broker client on aiocoap.

Plain CoAP, DTLS 1.2 PSK (tinydtls) and OSCORE; block-wise transfer (RFC 7959) with the profile's
block size; RFC 7252 retransmission tuned by the profile. See docs/coap-binding.md.
"""

from teep_coap.transport.coap.client import CoapClient, code_text
from teep_coap.transport.coap.credentials import (
    CredentialsError,
    DeviceCredentials,
    load_agent_credentials,
    load_tam_credentials,
    provision_device,
)
from teep_coap.transport.coap.server import CoapServer, ServerStats

__all__ = [
    "CoapClient",
    "CoapServer",
    "CredentialsError",
    "DeviceCredentials",
    "ServerStats",
    "code_text",
    "load_agent_credentials",
    "load_tam_credentials",
    "provision_device",
]
