"""CLI of the HTTP side: `teep-coap certs …` (TLS material for HTTPS) and `teep-coap bench sizes`."""

from __future__ import annotations

import json
from pathlib import Path

import click

from teep_coap.cli.groups import root
from teep_coap.security import certs


@root.group("certs")
def certs_group() -> None:
    """X.509 for HTTPS: a project CA, a server certificate for loopback, an optional client certificate."""


@certs_group.command("generate")
@click.option("--out", "out", type=click.Path(file_okay=False, path_type=Path), required=True, help="Folder.")
@click.option(
    "--host",
    "hosts",
    multiple=True,
    help="DNS name or IP address of the TAM (repeatable). Default: localhost, 127.0.0.1, ::1.",
)
@click.option("--client", "client_name", default=None, help="Also issue a client certificate with this CN.")
@click.option("--days", default=365, show_default=True, type=click.IntRange(1, 3650), help="Validity.")
@click.option("--json", "as_json", is_flag=True, help="Print the files and the server certificate as JSON.")
def certs_generate(
    out: Path, hosts: tuple[str, ...], client_name: str | None, days: int, as_json: bool
) -> None:
    """Write ca.pem/ca.key, server.pem/server.key (and client.pem/client.key) to OUT."""

    bundle = certs.write_bundle(out, hosts=hosts or certs.DEFAULT_HOSTS, client_name=client_name, days=days)
    paths = [
        str(p)
        for p in (
            bundle.ca_cert,
            bundle.server_cert,
            bundle.server_key,
            bundle.client_cert,
            bundle.client_key,
        )
        if p is not None
    ]
    info = certs.describe_certificate(certs.read_certificate(bundle.server_cert))
    if as_json:
        click.echo(json.dumps({"files": paths, "server_certificate": info}, indent=2, default=str))
        return
    for path in paths:
        click.echo(path)
    click.echo(f"server certificate for: {info['subject_alt_names']} (until {info['not_after']})")


@certs_group.command("show")
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
def certs_show(path: Path, as_json: bool) -> None:
    """Print subject, issuer, validity, SANs and fingerprint of a certificate file."""

    info = certs.describe_certificate(certs.read_certificate(path))
    if as_json:
        click.echo(json.dumps(info, indent=2, default=str))
        return
    for key, value in info.items():
        click.echo(f"{key:18} {value}")
