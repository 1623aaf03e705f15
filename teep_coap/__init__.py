"""teep-coap: TEEP and OTrP provisioning over CoAP (DTLS, OSCORE) and HTTP(S)."""

__version__ = "0.1.0"
