"""`teep-coap gateway init / device add / serve`: a TEEP gateway in front of constrained devices.

Imports at module level; `teep-coap --help` stays fast because the module itself is imported only
when one of its commands is looked up (cli/groups.py).
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import sys

import click

from teep_coap.cli.groups import json_is_default, root
from teep_coap.cli.serving import parse_bind, raise_open_file_limit, setup_logging
from teep_coap.profiles import load_profile
from teep_coap.profiles.gateway import Gateway, add_device, init_gateway_dir


@root.group()
def gateway() -> None:
    """A TEEP gateway: devices over CoAP (coaps-psk, OSCORE), the TAM over HTTP(S) or CoAP."""


@gateway.command("init")
@json_is_default
@click.option("--dir", "gw_dir", required=True, type=click.Path(file_okay=False), help="Gateway folder.")
def gateway_init(gw_dir: str) -> None:
    """Create an empty gateway folder (GW/gateway.toml); devices are added with `gateway device add`."""

    click.echo(json.dumps({"gateway": str(init_gateway_dir(gw_dir))}, indent=2))


@gateway.group("device")
def gateway_device() -> None:
    """The devices a gateway serves."""


@gateway_device.command("add")
@json_is_default
@click.option(
    "--dir", "gw_dir", required=True, type=click.Path(exists=True, file_okay=False), help="Gateway folder."
)
@click.option("--name", required=True, help="Device name (also its DTLS PSK identity).")
@click.option(
    "--agent-state",
    default=None,
    type=click.Path(file_okay=False),
    help="Also write the device's side (transport.toml, oscore/) into this Agent folder.",
)
def gateway_device_add(gw_dir: str, name: str, agent_state: str | None) -> None:
    """Create a device's DTLS PSK and OSCORE context (GW/credentials.toml, GW/oscore/NAME), both sides."""

    d = add_device(gw_dir, name, agent_state)
    click.echo(
        json.dumps(
            {
                "name": d.name,
                "psk_identity": d.psk_identity,
                "oscore_dir": str(d.oscore_dir),
                "agent_state": agent_state,
            },
            indent=2,
        )
    )


async def serve_tam(
    gw_dir: str,
    profile_name: str,
    bind: tuple[str, int],
    tam_uri: str,
    certs: str | None,
    upstream_timeout: float,
    cache: bool = True,
    image_origins: tuple[str, ...] = (),
) -> None:

    gw = Gateway(
        gw_dir,
        load_profile(profile_name),
        tam_uri,
        bind=bind,
        certs=certs,
        upstream_timeout=upstream_timeout,
        cache=cache,
        image_origins=image_origins,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    raise_open_file_limit()
    await gw.start()
    try:
        click.echo(
            f"gateway serving {gw.uri} (profile {gw.device_profile.name}) -> {tam_uri} ({gw.upstream.name})"
        )
        sys.stdout.flush()
        await stop.wait()
    finally:
        await gw.close()
        s = gw.relay.stats
        logging.getLogger("teep_coap.gateway").info(
            "gateway stopped: %d sessions done, %d failed, %d expired; upstream errors %s",
            s.sessions_done,
            s.sessions_failed,
            s.sessions_expired,
            s.upstream_errors or "none",
        )


@gateway.command("serve")
@click.option(
    "--dir", "gw_dir", required=True, type=click.Path(exists=True, file_okay=False), help="Gateway folder."
)
@click.option(
    "--profile",
    "profile_name",
    required=True,
    help="Device-side CoAP profile (coaps-psk, coap-oscore, coap, …).",
)
@click.option("--bind", default="127.0.0.1:0", show_default=True, help="HOST:PORT (port 0 = any free port).")
@click.option(
    "--tam", "tam_uri", required=True, help="TAM URI: http(s)://HOST:PORT/tam or coap[s]://HOST:PORT/teep."
)
@click.option(
    "--certs", default=None, type=click.Path(file_okay=False), help="HTTPS TAM: certificate folder (its CA)."
)
@click.option(
    "--upstream-timeout",
    type=click.FloatRange(0.1, 600),
    default=5.0,
    show_default=True,
    help="Seconds to wait for the TAM before answering the device 5.04 Gateway Timeout.",
)
@click.option(
    "--no-cache",
    is_flag=True,
    help="Fetch SUIT images named by URI upstream for every device request (no component cache).",
)
@click.option(
    "--image-origin",
    "image_origins",
    multiple=True,
    metavar="URL",
    help="Another http(s) origin SUIT images may be fetched from (repeatable; the TAM's own origin is "
    "always allowed; a device asking for any other gets 4.03).",
)
@click.option("-v", "--verbose", count=True, help="More logging (-vv: aiocoap debug).")
@click.option("-q", "--quiet", is_flag=True, help="Warnings only.")
def gatewayserve_tam(
    gw_dir: str,
    profile_name: str,
    bind: str,
    tam_uri: str,
    certs: str | None,
    upstream_timeout: float,
    no_cache: bool,
    image_origins: tuple[str, ...],
    verbose: int,
    quiet: bool,
) -> None:
    """Relay TEEP from the gateway's devices to the TAM until SIGINT/SIGTERM.

    Devices run unchanged: `teep-coap agent run --profile P --tam <the URI printed first> --state A`.
    TEEP's COSE signatures stay end to end: the gateway cannot alter a message unnoticed.
    A TAM that does not answer in --upstream-timeout gives the device 5.04, one that refuses 5.02.
    """

    setup_logging(verbose, quiet)
    where, cache = parse_bind(bind), not no_cache
    asyncio.run(
        serve_tam(gw_dir, profile_name, where, tam_uri, certs, upstream_timeout, cache, image_origins)
    )
