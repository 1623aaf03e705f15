"""Command groups shared by the CLI modules (one place, so modules never import each other)."""

from __future__ import annotations

import click

from teep_coap import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="teep-coap")
def root() -> None:
    """TEEP and OTrP over CoAP (DTLS, OSCORE) and HTTP(S): messages, keys, SUIT, TAM and Agent."""


@root.group()
def keys() -> None:
    """Generate and inspect signing keys (COSE_Key, PEM, JWK; kid = RFC 9679 thumbprint)."""


@root.group()
def suit() -> None:
    """Build and inspect SUIT envelopes that carry Trusted Components."""


@root.group()
def agent() -> None:
    """The TEEP Agent (simulated TEE) and its Broker."""


@root.group()
def tam() -> None:
    """The Trusted Application Manager."""


@root.group()
def bench() -> None:
    """Benchmarks: codec, crypto, engine, sessions, sizes."""


@root.group()
def otrp() -> None:
    """The Open Trust Protocol (OTrP) with JSON/JOSE and its CBOR/COSE mapping."""


@root.group()
def check() -> None:
    """Conformance checks against any TAM or Agent (each names its draft section; --json for a report)."""
