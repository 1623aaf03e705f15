"""CLI commands of this area; see `teep_coap.cli.groups` for the groups they attach to.

`teep-coap bench hostile`: the TAM against junk, costly CBOR and a DTLS handshake burst.
"""

from __future__ import annotations

import json

import click

from teep_coap.cli.groups import bench


@bench.command("hostile")
@click.option(
    "--count",
    type=click.IntRange(1, 100_000),
    default=5000,
    show_default=True,
    help="Junk sequences sent per class (10 classes, from 50 source ports on 127.0.0.1).",
)
@click.option(
    "--worst-size",
    type=click.IntRange(0, 1_048_000),
    default=1_040_000,
    show_default=True,
    help="Bytes of each costly CBOR body sent block-wise to measure TAM CPU per KiB (0: skip).",
)
@click.option(
    "--dtls-burst",
    "dtls_handshakes",
    type=click.IntRange(0, 1000),
    default=200,
    show_default=True,
    help="Simultaneous coaps-psk sessions (DTLS handshakes) against a second TAM (0: skip).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the figures as JSON.")
def bench_hostile(count: int, worst_size: int, dtls_handshakes: int, as_json: bool) -> None:
    """A TAM (`tam serve --profile coap-no-echo`, own process) against junk datagrams and costly CBOR.

    Prints per junk class the datagrams tried, answered right and wrong, whether a real TEEP session
    still completes afterwards, and the TAM's memory; then the TAM CPU per KiB for the worst inputs,
    the amplification factor of an unauthenticated request, the log bytes the run added (and any
    traceback), and how many of a burst of simultaneous DTLS handshakes complete. Loopback only.
    """
    from teep_coap.bench.hostile import format_hostile, run_hostile

    result = run_hostile(count=count, worst_size=worst_size, dtls_handshakes=dtls_handshakes)
    click.echo(json.dumps(result.to_json(), indent=2) if as_json else format_hostile(result))
