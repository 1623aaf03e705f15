"""Fixtures of the transport tests (helpers live in coap_helpers.py)."""

from coap_helpers import creds

__all__ = ["creds"]
