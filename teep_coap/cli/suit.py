"""`teep-coap suit build` and `teep-coap suit inspect`: SUIT envelopes from the command line.

inspect exit codes, as for `teep-coap verify`: 0 valid (or no key given), 1 invalid signature or
digest, 2 malformed input.
"""

from __future__ import annotations

import json
import sys
import uuid
from pathlib import Path
from typing import Any

import click

from teep_coap.cli.groups import json_is_default, suit
from teep_coap.security import cose
from teep_coap.security.errors import SecurityError
from teep_coap.security.keys import load_signing_key, load_verifying_key
from teep_coap.security.suit import (
    Envelope,
    SuitCommand,
    SuitDigest,
    SuitError,
    SuitParseError,
    build_envelope,
    parse_envelope,
    teep_component_id,
    unsupported_features,
    verify_envelope,
)
from teep_coap.security.suit.constants import Command, ManifestKey, Parameter
from teep_coap.security.suit.model import CommandSequence, ComponentId
from teep_coap.security.truststore import TrustStore


def _uuid_bytes(text: str, what: str) -> bytes:
    try:
        return uuid.UUID(text).bytes
    except ValueError:
        raise click.BadParameter(
            f"{what} must be a UUID (e.g. c0ddd5f1-5243-5660-87db-4f5b0aa26c2f)"
        ) from None


def _component_part(text: str) -> bytes:
    """'hex:8d82…' → bytes of the hex; 'uuid:…' → the 16 UUID bytes; anything else → UTF-8 text."""
    if text.startswith("hex:"):
        try:
            return bytes.fromhex(text[4:])
        except ValueError:
            raise click.BadParameter(f"{text!r} is not hex") from None
    if text.startswith("uuid:"):
        return _uuid_bytes(text[5:], "uuid component part")
    return text.encode()


@suit.command("build")
@click.argument("payload", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--key",
    "key_path",
    required=True,
    type=click.Path(exists=True, dir_okay=False),
    help="TAM's SUIT signing key (PEM, COSE_Key or JWK).",
)
@click.option(
    "--tc-uuid",
    help="Trusted Component UUID; component id ['TEEP-Device','SecureFS',<uuid>,'ta']. Default: random.",
)
@click.option(
    "--component-id",
    "component_parts",
    multiple=True,
    help="Explicit component id, one part per option: text, hex:…, or uuid:… (overrides --tc-uuid).",
)
@click.option(
    "--seq",
    "sequence_number",
    type=click.IntRange(min=0),
    default=1,
    show_default=True,
    help="Manifest sequence number (anti-rollback: must grow).",
)
@click.option("--vendor-id", required=True, help="Vendor UUID the device checks.")
@click.option("--class-id", required=True, help="Class UUID the device checks.")
@click.option("--uri", help="Fetch the payload from this URI instead of integrating it under '#tc'.")
@click.option("--description", help="Manifest description (text section, key 1).")
@click.option("--tagged", is_flag=True, help="Emit SUIT_Envelope_Tagged (CBOR tag 107).")
@click.option("--no-uninstall", is_flag=True, help="Leave out the uninstall section.")
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Output file (default: PAYLOAD.suit).",
)
@click.option("--json", "as_json", is_flag=True, help="Print what was written as JSON on stdout.")
def build_cmd(
    payload: Path,
    key_path: str,
    tc_uuid: str | None,
    component_parts: tuple[str, ...],
    sequence_number: int,
    vendor_id: str,
    class_id: str,
    uri: str | None,
    description: str | None,
    tagged: bool,
    no_uninstall: bool,
    output: Path | None,
    as_json: bool,
) -> None:
    """Build a signed SUIT envelope for the Trusted Component in PAYLOAD."""

    key = load_signing_key(key_path)
    if component_parts:
        cid: ComponentId = tuple(_component_part(p) for p in component_parts)
    else:
        u = _uuid_bytes(tc_uuid, "--tc-uuid") if tc_uuid else uuid.uuid4().bytes
        cid = teep_component_id(u)
    data = payload.read_bytes()
    env = build_envelope(
        data,
        key=key,
        component_id=cid,
        sequence_number=sequence_number,
        vendor_id=_uuid_bytes(vendor_id, "--vendor-id"),
        class_id=_uuid_bytes(class_id, "--class-id"),
        uri=uri,
        integrated=uri is None,
        text={1: description} if description else None,
        with_uninstall=not no_uninstall,
        tagged=tagged,
    )
    out = output or payload.with_name(payload.name + ".suit")
    out.write_bytes(env)
    if as_json:
        click.echo(
            json.dumps(
                {
                    "file": str(out),
                    "size": len(env),
                    "component_id": [p.hex() for p in cid],
                    "sequence_number": sequence_number,
                    "kid": key.kid.hex(),
                },
                indent=2,
            )
        )
        return
    click.echo(
        f"wrote {out} ({len(env)} bytes): component {_cid_text(cid)}, sequence number {sequence_number}, "
        f"signed by kid {key.kid.hex()}",
        err=True,
    )


# -- inspect ------------------------------------------------------------------------------------


def _part_text(p: bytes) -> str:
    try:
        s = p.decode()
        if s.isprintable() and s:
            return s
    except UnicodeDecodeError:
        pass
    return "hex:" + p.hex()


def _cid_text(cid: ComponentId) -> list[str]:
    return [_part_text(p) for p in cid]


def _jsonable(v: Any) -> Any:
    if isinstance(v, bytes):
        return v.hex()
    if isinstance(v, SuitDigest):
        return {"alg": v.algorithm, "value": v.value.hex()}
    if isinstance(v, CommandSequence):
        return _sequence(v)
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_jsonable(x) for x in v]
    if hasattr(v, "tag") and hasattr(v, "value"):
        return {"tag": v.tag, "value": _jsonable(v.value)}
    return v


def _name(enum_cls: Any, code: int) -> str:
    try:
        return str(enum_cls(code).name.lower().replace("_", "-"))
    except ValueError:
        return str(code)


def _command(cmd: SuitCommand) -> dict[str, Any]:
    arg = cmd.arg
    if isinstance(arg, dict):
        arg = {_name(Parameter, k): _jsonable(v) for k, v in arg.items()}
    else:
        arg = _jsonable(arg)
    return {"offset": cmd.offset, "command": _name(Command, cmd.code), "arg": arg}


def _sequence(seq: CommandSequence) -> list[dict[str, Any]]:
    return [_command(c) for c in seq]


def _auth_blocks(env: Envelope) -> list[dict[str, Any]]:

    out: list[dict[str, Any]] = []
    for block in env.auth_blocks:
        try:
            info = cose.inspect(block, allow_untagged=False)
            out.append(
                {
                    "structure": info.structure,
                    "alg": info.alg,
                    "kid": _jsonable(info.kid),
                    "detached": info.detached,
                }
            )
        except SecurityError as exc:
            out.append({"error": str(exc)})
    return out


def envelope_json(env: Envelope) -> dict[str, Any]:
    m = env.manifest
    return {
        "tagged": env.tagged,
        "size": len(env.raw),
        "authentication": {
            "digest": _jsonable(env.digest),
            "digest_matches_manifest": env.digest.matches(env.manifest_bstr),
            "blocks": _auth_blocks(env),
        },
        "manifest": {
            "version": m.version,
            "sequence_number": m.sequence_number,
            "reference_uri": m.reference_uri,
            "manifest_component_id": None
            if m.manifest_component_id is None
            else _cid_text(m.manifest_component_id),
            "components": [_cid_text(c) for c in m.common.components],
            "dependencies": _jsonable(m.common.dependencies),
            "shared_sequence": None
            if m.common.shared_sequence is None
            else _sequence(m.common.shared_sequence),
            "sequences": {_name(ManifestKey, k): _sequence(s) for k, s in sorted(m.sequences.items())},
            "severed": {_name(ManifestKey, k): _jsonable(d) for k, d in m.severed.items()},
            "text": _jsonable(m.text),
        },
        "integrated_payloads": {
            k: {"size": len(v), "sha256": SuitDigest.of(v).value.hex()} for k, v in env.integrated.items()
        },
        "unsupported": [msg for _, msg in unsupported_features(env)],
    }


@suit.command("inspect")
@json_is_default
@click.argument("file", type=click.File("rb"))
@click.option(
    "--key", "key_path", type=click.Path(exists=True, dir_okay=False), help="Verify with this public key."
)
@click.option(
    "--trust",
    "trust_dir",
    type=click.Path(exists=True, file_okay=False),
    help="Verify with any key in this folder.",
)
def inspect_cmd(file: Any, key_path: str | None, trust_dir: str | None) -> None:
    """Print a SUIT envelope as JSON; with --key/--trust also check digest and signature.

    Exit 0: valid (or nothing to check against); 1: signature or digest invalid; 2: malformed.
    """
    data = file.read()
    env = parse_envelope(data)  # SuitParseError → exit 2 via the CLI's error handler
    doc = envelope_json(env)
    status = 0
    if key_path or trust_dir:
        trust: Any = TrustStore.from_dir(trust_dir) if trust_dir else load_verifying_key(str(key_path))
        if key_path and trust_dir:
            trust.add(load_verifying_key(key_path))
        try:
            v = verify_envelope(env, trust)
            doc["verified"] = {"valid": True, "signer_kid": _jsonable(v.signer_kid), "alg": v.signer_alg}
        except SuitParseError:
            raise
        except SuitError as exc:
            doc["verified"] = {"valid": False, "reason": int(exc.reason), "error": str(exc)}
            status = 1
    click.echo(json.dumps(doc, indent=2))
    if status:
        click.echo(f"teep-coap: invalid: {doc['verified']['error']}", err=True)
        sys.exit(status)
