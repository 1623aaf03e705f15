"""`teep-coap agent ...`: create a TEEP Agent folder and feed it messages one at a time.

Heavy imports stay inside the commands: interop scripts call `agent process` many times.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import click

from teep_coap.cli.groups import agent, json_is_default
from teep_coap.store.agentdir import init_agent_state, load_agent_state


def _print(obj: Any) -> None:
    click.echo(json.dumps(obj, indent=2))


def _cid(parts: tuple[str, ...]) -> tuple[bytes, ...]:
    from teep_coap.protocol.policy import parse_component_id

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
    from teep_coap.security.keys import load_verifying_key

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
    from teep_coap.encoding.hextext import read_cbor_source
    from teep_coap.protocol.agent import AgentEngine
    from teep_coap.protocol.wire import describe

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
    from teep_coap.protocol.policy import format_component_id

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
    from teep_coap.protocol.agent import AgentEngine

    engine = AgentEngine(load_agent_state(state_dir))
    _print({"tam_uri": engine.request_ta(_cid(component_id), tam_uri, min_seq=min_seq)})


@agent.command("unrequest-ta")
@json_is_default
@click.option("--state", "state_dir", required=True, type=click.Path(exists=True, file_okay=False))
@click.option("--tam-uri", default=None)
@click.argument("component_id", nargs=-1, required=True)
def agent_unrequest_ta(state_dir: str, tam_uri: str | None, component_id: tuple[str, ...]) -> None:
    """UnrequestTA: say a Trusted Component is no longer needed. Prints the TAM URI or null."""
    from teep_coap.protocol.agent import AgentEngine

    engine = AgentEngine(load_agent_state(state_dir))
    _print({"tam_uri": engine.unrequest_ta(_cid(component_id), tam_uri)})
