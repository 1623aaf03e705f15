"""`teep-coap agent ...`: create a TEEP Agent folder and feed it messages one at a time.

Imports at module level; `teep-coap --help` stays fast because the module itself is imported only
when one of its commands is looked up (cli/groups.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from teep_coap.cli.groups import agent, json_is_default, setup_logging
from teep_coap.encoding.hextext import read_cbor_source
from teep_coap.profiles import load_profile
from teep_coap.profiles.capture import (
    capturing_relay,
    log_tls_keys,
    relayed_uri,
    tshark_command,
    uri_address,
    write_psk_file,
)
from teep_coap.profiles.runtime import run_agent
from teep_coap.profiles.session import SessionFailed
from teep_coap.protocol.agent import AgentEngine
from teep_coap.protocol.policy import format_component_id, parse_component_id
from teep_coap.protocol.wire import describe
from teep_coap.security.keys import load_verifying_key
from teep_coap.store.agentdir import init_agent_state, load_agent_state
from teep_coap.transport.coap.credentials import DeviceCredentials, load_agent_credentials, psk_length_problem
from teep_coap.transport.pcap import PcapWriter

if TYPE_CHECKING:
    from teep_coap.transport.coap.credentials import DeviceCredentials


def _print(obj: Any) -> None:
    click.echo(json.dumps(obj, indent=2))


def _cid(parts: tuple[str, ...]) -> tuple[bytes, ...]:

    return parse_component_id(list(parts), "component id")


@agent.command("init")
@json_is_default
@click.option("--state", "state_dir", required=True, type=click.Path(file_okay=False), help="Agent folder.")
@click.option(
    "--tam-key", required=True, type=click.Path(exists=True, dir_okay=False), help="TAM public key."
)
@click.option("--alg", type=click.Choice(["esp256", "ed25519"]), default="esp256", show_default=True)
@click.option(
    "--tc-signer-key",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False),
    help="Public key trusted to sign SUIT manifests (default: the TAM key).",
)
@click.option(
    "--attestation",
    type=click.Choice(["background-check", "passport"]),
    default="background-check",
    show_default=True,
)
@click.option("--tam-uri", default=None, help="Default TAM URI for policy checks.")
@click.option(
    "--vendor-id",
    type=click.UUID,
    default=None,
    help="Vendor UUID this device reports and SUIT manifests must name (default: a fixed simulator UUID).",
)
@click.option(
    "--class-id",
    type=click.UUID,
    default=None,
    help="Class UUID this device reports and SUIT manifests must name (default: a fixed simulator UUID).",
)
def agent_init(
    state_dir: str,
    tam_key: str,
    alg: str,
    tc_signer_key: tuple[str, ...],
    attestation: str,
    tam_uri: str | None,
    vendor_id: uuid.UUID | None,
    class_id: uuid.UUID | None,
) -> None:
    """Create an Agent folder: its keys, the TAM key it trusts, an empty component store."""

    signers = [load_verifying_key(p) for p in tc_signer_key] or None
    st = init_agent_state(
        state_dir,
        tam_key,
        alg,
        tc_signer_keys=signers,
        attestation=attestation,
        tam_uri=tam_uri,
        vendor_id=vendor_id.bytes if vendor_id else None,
        class_id=class_id.bytes if class_id else None,
    )
    _print(
        {
            "state": str(st.root),
            "alg": alg,
            "kid": st.key.kid.hex(),
            "vendor_id": str(uuid.UUID(bytes=st.config.vendor_id)),
            "class_id": str(uuid.UUID(bytes=st.config.class_id)),
            "public_key": str(st.root / "key" / "public.pem"),
            "trusted_tam_kids": [k.kid.hex() for k in st.trust],
            "verifier_public_key": str(st.root / "verifier" / "public.pem") if st.verifier_key else None,
        }
    )


@agent.command("process")
@json_is_default
@click.option("--state", "state_dir", required=True, type=click.Path(exists=True, file_okay=False))
@click.argument("source", metavar="FILE")
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False),
    help="Write the signed response bytes here (an empty file when the Agent has nothing to send).",
)
@click.option("--accept-unsigned", is_flag=True, help="Testing only: process a bare (unsigned) TEEP message.")
def agent_process(state_dir: str, source: str, output: str | None, accept_unsigned: bool) -> None:
    """Feed one TAM message (COSE-signed, or raw CBOR / hex text) to the Agent; print its answer as JSON.

    Exit 0 whenever the Agent produced an answer, an Error message included."""

    data = read_cbor_source(source)
    st = load_agent_state(state_dir)
    if accept_unsigned:
        st.config.accept_unsigned = True
    engine = AgentEngine(st)
    response = engine.receive(data)
    if output:
        Path(output).write_bytes(response or b"")
    _print({"note": engine.last_note, "response": describe(response)})


@agent.command("status")
@json_is_default
@click.option("--state", "state_dir", required=True, type=click.Path(exists=True, file_okay=False))
def agent_status(state_dir: str) -> None:
    """Installed components and pending requests of an Agent folder."""

    st = load_agent_state(state_dir)
    _print(
        {
            "kid": st.key.kid.hex(),
            "alg": st.key.alg,
            "installed": [
                {
                    "component_id": format_component_id(e.component_id),
                    "sequence_number": e.sequence_number,
                    "image_size": e.image_size,
                }
                for e in st.components.list()
            ],
            "requested": list(st.broker.requested.values()),
            "unrequested": list(st.broker.unrequested.values()),
        }
    )


@agent.command("request-ta")
@json_is_default
@click.option("--state", "state_dir", required=True, type=click.Path(exists=True, file_okay=False))
@click.option("--tam-uri", default=None)
@click.option("--min-seq", type=int, default=None, help="Lowest acceptable manifest sequence number.")
@click.argument("component_id", nargs=-1, required=True)
def agent_request_ta(
    state_dir: str, tam_uri: str | None, min_seq: int | None, component_id: tuple[str, ...]
) -> None:
    """RequestTA: ask for a Trusted Component (parts as text, or hex:...). Prints the TAM URI or null."""

    engine = AgentEngine(load_agent_state(state_dir))
    _print({"tam_uri": engine.request_ta(_cid(component_id), tam_uri, min_seq=min_seq)})


@agent.command("unrequest-ta")
@json_is_default
@click.option("--state", "state_dir", required=True, type=click.Path(exists=True, file_okay=False))
@click.option("--tam-uri", default=None)
@click.argument("component_id", nargs=-1, required=True)
def agent_unrequest_ta(state_dir: str, tam_uri: str | None, component_id: tuple[str, ...]) -> None:
    """UnrequestTA: say a Trusted Component is no longer needed. Prints the TAM URI or null."""

    engine = AgentEngine(load_agent_state(state_dir))
    _print({"tam_uri": engine.unrequest_ta(_cid(component_id), tam_uri)})


async def _agent_run(
    profile_name: str,
    tam_uri: str,
    state_dir: str,
    timeout: float | None,
    certs: str | None = None,
    *,
    pcap: str | None = None,
    credentials: DeviceCredentials | None = None,
    proxy: str | None = None,
) -> dict[str, object]:

    profile = load_profile(profile_name)
    if timeout is not None:
        profile = dataclasses.replace(
            profile, limits=dataclasses.replace(profile.limits, request_timeout=timeout)
        )
    uri = tam_uri
    if pcap is not None and profile.security.mode == "tls":
        log_tls_keys(pcap)  # this process is one TAM or one Agent run: its TLS keys to PCAP.keylog
    async with contextlib.AsyncExitStack() as stack:
        if pcap is not None:
            target = uri_address(tam_uri)
            writer = PcapWriter(pcap)
            stack.callback(writer.close)
            listen = ("::1" if ":" in target[0] else "127.0.0.1", 0)
            port = await stack.enter_async_context(
                capturing_relay(profile, target, writer, listen=listen, shown_server=target)
            )
            uri = relayed_uri(tam_uri, port)
        summary = await run_agent(profile, uri, state_dir, certs=certs, credentials=credentials, proxy=proxy)
    if pcap is not None and profile.security.mode == "dtls-psk":
        psk = credentials.psk if credentials is not None else load_agent_credentials(state_dir).psk
        write_psk_file(pcap, psk)
    summary["tam"] = tam_uri
    if pcap is not None:
        summary["pcap"] = {"file": pcap, "tshark": tshark_command(profile, pcap, uri_address(tam_uri)[1])}
    if not summary.get("ok", False):
        raise SessionFailed(f"session with {tam_uri} failed: {summary.get('reason', '?')}")
    return summary


def _psk_credentials(psk_hex: str | None, psk_identity: str | None) -> DeviceCredentials | None:
    """Credentials from --psk-hex/--psk-identity (both or neither)."""
    if psk_hex is None and psk_identity is None:
        return None
    if psk_hex is None or psk_identity is None:
        raise click.UsageError("--psk-hex and --psk-identity go together")

    try:
        psk = bytes.fromhex(psk_hex)
    except ValueError:
        raise click.BadParameter("not hex", param_hint="--psk-hex") from None
    problem = psk_length_problem(psk)
    if problem is not None:
        raise click.BadParameter(problem, param_hint="--psk-hex")
    if not psk_identity:
        raise click.BadParameter("empty", param_hint="--psk-identity")
    return DeviceCredentials(psk_identity, psk_identity, psk)


@agent.command("run")
@click.option("--profile", "profile_name", required=True, help="Profile name or .toml path.")
@click.option("--tam", "tam_uri", required=True, help="TAM URI, e.g. coaps://127.0.0.1:5684/teep.")
@click.option("--state", "state_dir", required=True, type=click.Path(exists=True, file_okay=False))
@click.option(
    "--timeout", type=click.FloatRange(0.1, 3600), default=None, help="Seconds per exchange (profile's)."
)
@click.option(
    "--certs", default=None, type=click.Path(file_okay=False), help="HTTPS: certificate folder (CA)."
)
@click.option(
    "--pcap",
    type=click.Path(dir_okay=False, writable=True),
    default=None,
    help="Write the session's datagrams / TCP segments to this pcap (DTLS: PSK to FILE.psk; HTTPS: TLS "
    "secrets to FILE.keylog). The TAM must be on loopback.",
)
@click.option(
    "--psk-hex", default=None, help="DTLS PSK in hex, instead of the state folder's transport.toml."
)
@click.option("--psk-identity", default=None, help="DTLS PSK identity (with --psk-hex).")
@click.option(
    "--proxy", default=None, help="Through this CoAP forward proxy (coap://HOST:PORT; plain CoAP profiles)."
)
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON (the default output).")
@click.option("-v", "--verbose", count=True, help="More logging (-vv: aiocoap debug).")
@click.option("-q", "--quiet", is_flag=True, help="Only errors on stderr (the default).")
def agent_run(
    profile_name: str,
    tam_uri: str,
    state_dir: str,
    timeout: float | None,
    certs: str | None,
    pcap: str | None,
    psk_hex: str | None,
    psk_identity: str | None,
    proxy: str | None,
    as_json: bool,
    verbose: int,
    quiet: bool,
) -> None:
    """Broker + Agent over any profile: sessions until the TAM has nothing more; prints what changed.

    TEEP: --state is the Agent state folder (`agent init`); OTrP: an `otrp init` folder (one session).
    """
    setup_logging(verbose, quiet=quiet or not verbose)
    creds = _psk_credentials(psk_hex, psk_identity)
    summary = asyncio.run(
        _agent_run(
            profile_name, tam_uri, state_dir, timeout, certs, pcap=pcap, credentials=creds, proxy=proxy
        )
    )
    click.echo(json.dumps(summary, indent=2))
