"""`teep-coap check tam` and `teep-coap check agent`: conformance batteries against any peer."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from typing import Any

import click

from teep_coap.cli.groups import check
from teep_coap.profiles import load_profile
from teep_coap.profiles.check_agent import check_agent
from teep_coap.profiles.check_tam import check_tam
from teep_coap.security.certs import client_ssl_context
from teep_coap.security.keys import load_verifying_key
from teep_coap.transport.coap.credentials import PSK_MAX_BYTES, load_agent_credentials

# Profile when --profile is not given, by the URI's scheme.
DEFAULT_PROFILES = {
    "coap": "coap",
    "coaps": "coaps-psk",
    "coap+oscore": "coap-oscore",
    "http": "teep-cbor-http",
    "https": "teep-cbor-https",
}


def _finish(report: Any, as_json: bool) -> None:
    click.echo(json.dumps(report.to_json(), indent=2) if as_json else report.format())
    sys.stdout.flush()
    if report.must_failed:
        sys.exit(1)


def _credentials(state: str | None) -> Any:
    """The Agent folder's transport credentials (OSCORE context, EDHOC keys), or None."""
    if state is None:
        return None

    return load_agent_credentials(state)


def _psk(psk_hex: str | None, psk_identity: str | None, state: str | None) -> tuple[str, bytes] | None:
    if psk_hex is not None or psk_identity is not None:
        if psk_hex is None or psk_identity is None:
            raise click.UsageError("--psk-hex and --psk-identity go together")
        try:
            psk = bytes.fromhex(psk_hex)
        except ValueError:
            raise click.BadParameter("not hex", param_hint="--psk-hex") from None
        if len(psk) > PSK_MAX_BYTES:  # another TAM's shorter keys are its business; longer ones crash
            raise click.BadParameter(
                f"{len(psk)} bytes; the DTLS stack (tinydtls) takes PSKs of at most {PSK_MAX_BYTES}",
                param_hint="--psk-hex",
            )
        return psk_identity, psk
    if state is not None:
        creds = load_agent_credentials(state)
        return creds.psk_identity, creds.psk
    return None


def _key(path: str | None) -> Any:
    if path is None:
        return None

    return load_verifying_key(path)


def _quiet_logs(verbose: int, quiet: bool) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose > 1 else logging.INFO if verbose else logging.ERROR)
    logging.getLogger("coap").setLevel(logging.DEBUG if verbose > 1 else logging.CRITICAL)
    if quiet:
        logging.disable(logging.WARNING)


_common = [
    click.option("--json", "as_json", is_flag=True, help="Machine-readable report."),
    click.option("-v", "--verbose", count=True, help="Log what happens (-vv: aiocoap debug)."),
    click.option("-q", "--quiet", is_flag=True, help="No log output, only the report."),
]


def _with_common(func: Any) -> Any:
    for option in reversed(_common):
        func = option(func)
    return func


@check.command("tam")
@click.argument("uri")
@click.option("--profile", "profile_name", default=None, help="Profile (default: by the URI's scheme).")
@click.option(
    "--peer-key",
    default=None,
    type=click.Path(exists=True, dir_okay=False),
    help="The TAM's public key (PEM, COSE_Key, JWK): checks signatures.",
)
@click.option("--psk-hex", default=None, help="coaps: DTLS PSK in hex.")
@click.option("--psk-identity", default=None, help="coaps: DTLS PSK identity.")
@click.option(
    "--state",
    default=None,
    type=click.Path(exists=True, file_okay=False),
    help="coaps: take the PSK from this Agent folder's transport.toml; OSCORE/EDHOC profiles: its "
    "OSCORE context or EDHOC keys.",
)
@click.option(
    "--ca",
    default=None,
    type=click.Path(exists=True, dir_okay=False),
    help="https: CA certificate of the TAM.",
)
@click.option(
    "--timeout", type=click.FloatRange(0.5, 600), default=10.0, show_default=True, help="Seconds per request."
)
@_with_common
def check_tam_cmd(
    uri: str,
    profile_name: str | None,
    peer_key: str | None,
    psk_hex: str | None,
    psk_identity: str | None,
    state: str | None,
    ca: str | None,
    as_json: bool,
    timeout: float,
    verbose: int,
    quiet: bool,
) -> None:
    """Run the conformance checks against the TAM at URI (coap://, coaps://, http://, https://).

    Each check names its section and level; a failed MUST is `fail`, a failed SHOULD `warn`.
    Exit status 0 when no MUST failed, 1 when one did, 2 when the checks could not run.
    """

    _quiet_logs(verbose, quiet)
    scheme = uri.split("://", 1)[0] if "://" in uri else ""
    name = profile_name or DEFAULT_PROFILES.get(scheme)
    if name is None:
        raise click.BadParameter(f"cannot tell the profile from {uri!r}; give --profile", param_hint="URI")
    ssl_context = None
    if scheme == "https":
        ssl_context = client_ssl_context(ca)
    report = asyncio.run(
        check_tam(
            load_profile(name),
            uri,
            peer_key=_key(peer_key),
            psk=_psk(psk_hex, psk_identity, state),
            credentials=_credentials(state),
            ssl_context=ssl_context,
            timeout=timeout,
        )
    )
    _finish(report, as_json)


def _announce(uri: str) -> None:
    click.echo(f"checking Agents at {uri}")
    sys.stdout.flush()


@check.command("agent")
@click.option(
    "--profile",
    "profile_name",
    default="coap",
    show_default=True,
    help="Profile the Agent speaks (CoAP profiles).",
)
@click.option(
    "--tam-dir",
    required=True,
    type=click.Path(exists=True, file_okay=False),
    help="A `tam init` folder: its ESP256 key signs what we send (the Agent must trust it).",
)
@click.option(
    "--peer-key",
    default=None,
    type=click.Path(exists=True, dir_okay=False),
    help="The Agent's public key: checks its signatures.",
)
@click.option("--bind", default="127.0.0.1:0", show_default=True, help="HOST:PORT to serve on.")
@click.option(
    "--run",
    "run_command",
    default=None,
    help="Start the Agent with this shell command ({uri} is replaced by our URI); else wait for it.",
)
@click.option(
    "--wait",
    type=click.FloatRange(1, 3600),
    default=60.0,
    show_default=True,
    help="Seconds to wait for the Agent.",
)
@_with_common
def check_agent_cmd(
    profile_name: str,
    tam_dir: str,
    peer_key: str | None,
    bind: str,
    run_command: str | None,
    wait: float,
    as_json: bool,
    verbose: int,
    quiet: bool,
) -> None:
    """Act as a TAM and check the Agent (and its Broker) that connects: request shape, Content-Format,
    its QueryResponse's COSE, signature, CDDL and token echo, Block2 reassembly, and what it does with
    an unsigned Update. The first line on stdout is our URI (unless --run is given).
    Exit status 0 when no MUST failed, 1 when one did, 2 when the checks could not run.
    """

    _quiet_logs(verbose, quiet)
    host, sep, port_text = bind.rpartition(":")
    if not sep or not host or not port_text.isdigit() or int(port_text) > 65535:
        raise click.BadParameter(f"expected HOST:PORT, got {bind!r}", param_hint="--bind")
    host, port = host.strip("[]"), int(port_text)
    report = asyncio.run(
        check_agent(
            load_profile(profile_name),
            tam_dir,
            host=host,
            port=port,
            peer_key=_key(peer_key),
            run_command=run_command,
            wait=wait,
            announce=None if run_command else _announce,
        )
    )
    _finish(report, as_json)
