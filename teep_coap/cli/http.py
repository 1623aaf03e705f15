"""CLI of the HTTP side: `teep-coap certs …` (TLS material for HTTPS) and `teep-coap bench sizes`."""

from __future__ import annotations

from pathlib import Path

import click

from teep_coap.cli.groups import bench, root


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
def certs_generate(out: Path, hosts: tuple[str, ...], client_name: str | None, days: int) -> None:
    """Write ca.pem/ca.key, server.pem/server.key (and client.pem/client.key) to OUT."""
    from teep_coap.security import certs

    bundle = certs.write_bundle(out, hosts=hosts or certs.DEFAULT_HOSTS, client_name=client_name, days=days)
    for path in (bundle.ca_cert, bundle.server_cert, bundle.server_key, bundle.client_cert, bundle.client_key):
        if path is not None:
            click.echo(str(path))
    info = certs.describe_certificate(certs.read_certificate(bundle.server_cert))
    click.echo(f"server certificate for: {info['subject_alt_names']} (until {info['not_after']})")


@certs_group.command("show")
@click.argument("path", type=click.Path(path_type=Path))
def certs_show(path: Path) -> None:
    """Print subject, issuer, validity, SANs and fingerprint of a certificate file."""
    from teep_coap.security import certs

    for key, value in certs.describe_certificate(certs.read_certificate(path)).items():
        click.echo(f"{key:18} {value}")


_ = bench  # `bench sizes` is attached below once the bench module is importable
