"""`teep-coap keys generate|show`, `teep-coap sign`, `teep-coap verify` and `teep-coap bench crypto`.

Exit status of `verify`: 0 valid, 1 the signature is not acceptable (invalid, unknown key, algorithm
not allowed, critical header not understood), 2 the input is malformed (one line on stderr).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from teep_coap.cli.groups import json_is_default, keys, root
from teep_coap.encoding.cbor_codec import decode
from teep_coap.encoding.hextext import read_cbor_source
from teep_coap.encoding.json_codec import to_jsonable
from teep_coap.security import cose
from teep_coap.security.errors import (
    CriticalHeaderNotUnderstood,
    KeyFileError,
    SignatureInvalid,
    UnknownKid,
    UnsupportedAlgorithm,
)
from teep_coap.security.keys import (
    ALG_NAMES,
    alg_id,
    generate_key,
    load_signing_key,
    load_verifying_key,
    write_key_files,
)
from teep_coap.security.truststore import TrustStore

EXIT_INVALID = 1
REJECTED = (SignatureInvalid, UnknownKid, UnsupportedAlgorithm, CriticalHeaderNotUnderstood)


def _read_input(source: str) -> bytes:
    """Raw CBOR or hex text (with `#` comments), from a file or `-` for stdin."""

    return read_cbor_source(source)


def _write_output(data: bytes, output: str | None, as_hex: bool, binary: bool) -> None:
    blob = (data.hex() + "\n").encode() if as_hex or (output is None and not binary) else data
    if output is None or output == "-":
        sys.stdout.buffer.write(blob)
        sys.stdout.flush()
        return
    try:
        Path(output).write_bytes(blob)
    except OSError as exc:
        raise click.ClickException(f"cannot write {output}: {exc.strerror or exc}") from None


@keys.command("generate")
@click.option(
    "--alg",
    type=click.Choice(["esp256", "ed25519"], case_sensitive=False),
    default="esp256",
    show_default=True,
    help="ESP256 (ECDSA P-256, COSE -9) or Ed25519 (COSE -19).",
)
@click.option(
    "--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Folder for the files."
)
@click.option("--force", is_flag=True, help="Overwrite existing key files.")
@click.option("--json", "as_json", is_flag=True, help="Print the kid and the files as JSON.")
def generate_cmd(alg: str, out_dir: str, force: bool, as_json: bool) -> None:
    """Generate a key pair: private/public PEM, COSE_Key and JWK; prints the kid (RFC 9679) in hex."""

    key = generate_key(alg)
    paths = write_key_files(key, out_dir, overwrite=force)
    if as_json:
        click.echo(
            json.dumps({"kid": key.kid.hex(), "files": {k: str(v) for k, v in paths.items()}}, indent=2)
        )
        return
    click.echo(key.kid.hex())
    for kind, path in paths.items():
        click.echo(f"  {kind:13} {path}", err=True)


@keys.command("show")
@click.argument("key_file", metavar="FILE")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
def show_cmd(key_file: str, as_json: bool) -> None:
    """Show a key file (PEM, COSE_Key or JWK; private or public): kid, algorithm, every format."""

    try:
        signing = load_signing_key(key_file)
        public = signing.public
        private = True
    except KeyFileError as exc:
        if "public key" not in str(exc):
            raise
        public = load_verifying_key(key_file)
        private = False
    info: dict[str, Any] = {
        "file": key_file,
        "kid": public.kid.hex(),
        "alg": public.alg,
        "alg_name": ALG_NAMES[public.alg],
        "key_type": public.key_type,
        "private": private,
        "public_pem": public.to_pem().decode(),
        "public_cose_key": public.to_cose_key().hex(),
        "public_jwk": public.to_jwk(),
    }
    if as_json:
        click.echo(json.dumps(info, indent=2))
        return
    click.echo(f"kid       {info['kid']}")
    click.echo(f"alg       {info['alg_name']} ({info['alg']})")
    click.echo(f"type      {info['key_type']} {'private' if private else 'public'} key")
    click.echo(f"COSE_Key  {info['public_cose_key']}")
    click.echo(f"JWK       {json.dumps(info['public_jwk'])}")
    click.echo(info["public_pem"].rstrip())


@root.command("sign")
@click.option(
    "--key",
    "key_files",
    required=True,
    multiple=True,
    help="Private key file (PEM/COSE_Key/JWK). Repeat for a COSE_Sign with one signature per key.",
)
@click.argument("source", metavar="FILE|-")
@click.option("-o", "--output", help="Write here (binary unless --hex) instead of hex on stdout.")
@click.option("--hex", "as_hex", is_flag=True, help="Write hex text.")
@click.option("--binary", is_flag=True, help="Write binary to stdout.")
@click.option("--any-payload", is_flag=True, help="Sign any bytes, not only a well-formed TEEP message.")
def sign_cmd(
    key_files: tuple[str, ...], source: str, output: str | None, as_hex: bool, binary: bool, any_payload: bool
) -> None:
    """Wrap a TEEP message (raw CBOR or hex text) in COSE_Sign1 (one --key) or COSE_Sign (several)."""

    signing_keys = [load_signing_key(k) for k in key_files]
    payload = _read_input(source)
    if not any_payload:
        decode(payload)  # a malformed message is refused here (TeepDecodeError, exit 2)
    if len(signing_keys) == 1:
        data = cose.sign1(payload, signing_keys[0])
    else:
        data = cose.sign(payload, signing_keys)
    _write_output(data, output, as_hex, binary)


@root.command("verify")
@json_is_default
@click.option("--key", "key_files", multiple=True, help="Trusted public key file (repeatable).")
@click.option("--trust", "trust_dir", type=click.Path(file_okay=False), help="Folder of trusted keys/certs.")
@click.option(
    "--alg",
    "algs",
    multiple=True,
    type=click.Choice(["esp256", "ed25519", "es256", "eddsa"], case_sensitive=False),
    help="Accept only these algorithms (repeatable; default: all four).",
)
@click.option("--detached", "detached_file", type=click.Path(dir_okay=False), help="Detached payload file.")
@click.option("--any-payload", is_flag=True, help="Print the payload as hex instead of decoding TEEP.")
@click.option("--quiet", "-q", is_flag=True, help="No output; the exit status says it all.")
@click.argument("source", metavar="FILE|-")
def verify_cmd(
    key_files: tuple[str, ...],
    trust_dir: str | None,
    algs: tuple[str, ...],
    detached_file: str | None,
    any_payload: bool,
    quiet: bool,
    source: str,
) -> None:
    """Verify a COSE_Sign1/COSE_Sign TEEP message; print the message as JSON.

    Exit 0 valid, 1 signature not acceptable (invalid, unknown key, ...), 2 malformed input."""

    if not key_files and not trust_dir:
        raise click.UsageError("give --key PUBLIC or --trust DIR")
    store = TrustStore([load_verifying_key(k) for k in key_files])
    if trust_dir:
        for k in TrustStore.from_dir(trust_dir):
            store.add(k)
    data = _read_input(source)
    detached = None
    if detached_file is not None:
        try:
            detached = Path(detached_file).read_bytes()
        except OSError as exc:
            raise click.ClickException(f"cannot read {detached_file}: {exc.strerror or exc}") from None
    try:
        result = cose.verify(
            data,
            store,
            detached_payload=detached,
            allowed_algs={alg_id(a) for a in algs} if algs else None,
        )
    except REJECTED as exc:
        if not quiet:
            click.echo(f"teep-coap: not valid: {exc}", err=True)
        # sys.exit, not click's Exit: `teep_coap.cli.main` runs click with standalone_mode=False,
        # where click turns Exit into a return value and the status would be lost.
        sys.exit(EXIT_INVALID)
    if any_payload:
        out: Any = {"payload": result.payload.hex()}
    else:
        out = to_jsonable(decode(result.payload))
    if not quiet:
        kid = result.kid.hex() if result.kid is not None else "-"
        click.echo(f"verified {result.structure} {ALG_NAMES[result.alg]} kid={kid}", err=True)
        click.echo(json.dumps(out, indent=2, ensure_ascii=False))
