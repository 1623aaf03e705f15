"""CLI of the HTTP side: `teep-coap certs …` (TLS material for HTTPS) and `teep-coap bench sizes`."""

from __future__ import annotations

import json
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
@click.option("--json", "as_json", is_flag=True, help="Print the files and the server certificate as JSON.")
def certs_generate(
    out: Path, hosts: tuple[str, ...], client_name: str | None, days: int, as_json: bool
) -> None:
    """Write ca.pem/ca.key, server.pem/server.key (and client.pem/client.key) to OUT."""
    from teep_coap.security import certs

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
    from teep_coap.security import certs

    info = certs.describe_certificate(certs.read_certificate(path))
    if as_json:
        click.echo(json.dumps(info, indent=2, default=str))
        return
    for key, value in info.items():
        click.echo(f"{key:18} {value}")


def _int_list(text: str) -> list[int]:
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise click.BadParameter(f"expected comma-separated integers, got {text!r}") from None
    if not values or any(v < 0 or v > 16 * 1024 * 1024 for v in values):
        raise click.BadParameter("payload sizes must be 0..16777216 bytes")
    return values


@bench.command("sizes")
@click.option(
    "--profiles",
    "profile_names",
    default="",
    help="Comma-separated profile names or TOML paths (default: every shipped profile).",
)
@click.option(
    "--payload-sizes",
    default="20,1024,16384,65536",
    show_default=True,
    help="Comma-separated Trusted Component payload sizes in bytes.",
)
@click.option(
    "--out", type=click.Path(file_okay=False, path_type=Path), default=None, help="Write reports here."
)
@click.option(
    "--repeat",
    default=1,
    show_default=True,
    type=click.IntRange(1, 20),
    help="Runs per point (wall time = median).",
)
@click.option("--fail-fast", is_flag=True, help="Stop at the first run that fails instead of reporting it.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON (the sizes.json content).")
def bench_sizes(
    profile_names: str, payload_sizes: str, out: Path | None, repeat: int, fail_fast: bool, as_json: bool
) -> None:
    """Run one provisioning session over each profile and count its bytes per message and layer.

    Layers: bare message, signature, transport framing, security records, handshake. Bytes are counted
    by relays on loopback; docs/sizes.md explains how each layer is measured.
    """
    import logging

    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
    from rich.table import Table

    from teep_coap.bench import sizes as bs
    from teep_coap.profiles import list_profiles, load_profile

    # aiocoap warns about a DTLS close_notify alert (level 1, code 0) and about late datagrams after a
    # measured session's server shut down: expected at teardown, noise in a report.
    for name in ("coap-server", "coap"):
        logging.getLogger(name).setLevel(logging.ERROR)
    sizes_list = _int_list(payload_sizes)
    if profile_names.strip():
        profiles = [load_profile(n.strip()) for n in profile_names.split(",") if n.strip()]
    else:
        profiles = list_profiles()
    console = Console(stderr=True)
    total = len(profiles) * len(sizes_list)
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as progress:
        task = progress.add_task("sizes", total=total)
        started = [False]

        def step(label: str) -> None:
            if started[0]:
                progress.advance(task)
            started[0] = True
            progress.update(task, description=label)

        report = bs.run(profiles, sizes_list, repeat=repeat, progress=step, keep_going=not fail_fast)
        progress.advance(task)

    table = Table(title="bytes per session (counted on loopback)")
    for column in ("profile", "payload", *bs.LAYERS, "total", "units", "RTs", "ms"):
        table.add_column(column, justify="left" if column == "profile" else "right")
    for s in report.sessions:
        values = {
            r.layer: r.bytes
            for r in report.records
            if r.profile == s.profile and r.payload_size == s.payload_size and r.message == bs.SESSION
        }
        table.add_row(
            s.profile,
            str(s.payload_size),
            *(str(values.get(layer, 0)) for layer in bs.LAYERS),
            str(s.wire_bytes),
            f"{s.units} {s.unit_name}",
            str(s.round_trips),
            f"{s.seconds * 1000:.0f}",
        )
    if as_json:
        click.echo(bs.report_json(report, bs.Provenance.now()))
    else:
        out_console = Console()
        out_console.width = max(out_console.width, 150)
        out_console.print(table)
    for failure in report.failures:
        console.print(f"[red]failed:[/red] {failure}")
    if out is not None:
        for path in bs.write_outputs(report, out):
            click.echo(str(path), err=as_json)
    if report.failures and not report.sessions:
        raise click.ClickException("every run failed")
