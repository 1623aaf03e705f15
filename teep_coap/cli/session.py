"""`teep-coap profiles`, `teep-coap tam serve`, `teep-coap tam credentials`, `teep-coap agent run`,
`teep-coap bench sessions`: the programs of the CoAP binding (and of any profile's binding).

Imports at module level; `teep-coap --help` stays fast because the module itself is imported only
when one of its commands is looked up (cli/groups.py).
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import TYPE_CHECKING

import click

from teep_coap.cli.groups import root
from teep_coap.profiles import list_profiles, load_profile
from teep_coap.profiles.scenario import run_local_session

if TYPE_CHECKING:
    pass


@root.command("profiles")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
def profiles_cmd(as_json: bool) -> None:
    """List the profiles (protocol × encoding × transport × security) that --profile NAME finds."""

    profiles = list_profiles()
    if as_json:
        click.echo(
            json.dumps(
                [
                    {
                        "name": p.name,
                        "protocol": p.protocol,
                        "encoding": p.encoding,
                        "scheme": p.transport.scheme,
                        "security": p.security.mode,
                        "block_size": p.transport.block_size,
                        "content_format": p.transport.content_format,
                        "description": p.description,
                    }
                    for p in profiles
                ],
                indent=2,
            )
        )
        return
    click.echo(
        f"{'profile':<20} {'protocol':<8} {'enc':<5} {'scheme':<12} {'security':<9} {'block':>5}  description"
    )
    for p in profiles:
        block = str(p.transport.block_size) if p.transport.is_coap else "-"
        click.echo(
            f"{p.name:<20} {p.protocol:<8} {p.encoding:<5} {p.transport.scheme:<12} {p.security.mode:<9} "
            f"{block:>5}  {p.description}"
        )


@root.command("session")
@click.option(
    "--profile", "profile_name", required=True, help="Any profile (teep-coap profiles) or .toml path."
)
@click.option(
    "--payload-size",
    type=click.IntRange(0, 16 * 1024 * 1024),
    default=1024,
    show_default=True,
    help="Bytes of the Trusted Component (TEEP) / Trusted Application (OTrP) to install.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@click.option(
    "--pcap",
    type=click.Path(dir_okay=False, writable=True),
    default=None,
    help="Write every datagram / TCP segment to this pcap file (DTLS: the PSK to FILE.psk; HTTPS: TLS "
    "secrets to FILE.keylog).",
)
def session_cmd(profile_name: str, payload_size: int, as_json: bool, pcap: str | None) -> None:
    """One complete provisioning session over ANY profile, on loopback, in temporary folders.

    A TAM and an Agent (TEEP: CBOR/COSE or JSON/JWS by the profile's encoding; OTrP: the OTrP engines)
    talk over the profile's real transport (CoAP, DTLS PSK, OSCORE, HTTP, HTTPS); prints what was
    installed and the size of every message. Exit 2 if the session does not succeed.
    """

    logging.getLogger("coap").setLevel(logging.CRITICAL)  # aiocoap's shutdown chatter is not news here
    profile = load_profile(profile_name)
    summary = asyncio.run(run_local_session(profile, payload_size, pcap=pcap))
    if as_json:
        click.echo(json.dumps(summary.to_json(), indent=2))
        return
    click.echo(
        f"session over {summary.profile} ({summary.protocol}/{summary.encoding} over {summary.scheme}): "
        f"ok in {summary.seconds * 1000:.1f} ms"
    )
    for m in summary.messages:
        click.echo(f"  {m['direction']:<11} {m['name']:<24} {m['size']:>8} B")
    click.echo(f"  {'total':<36} {summary.total_bytes:>8} B")
    click.echo("installed:")
    for item in summary.installed:
        click.echo(f"  {json.dumps(item)}")
