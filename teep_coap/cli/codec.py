"""`teep-coap decode`, `teep-coap encode` and `teep-coap bench codec`.

decode: raw CBOR, hex text (with `#` comments) or a COSE_Sign1/COSE_Sign object around a TEEP message
-> the JSON twin on stdout. encode: that JSON -> the CBOR bytes (a COSE view is put back around the
message with its original headers and signatures, so decode-then-encode reproduces the input).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from teep_coap.cli.groups import root
from teep_coap.encoding.cbor_codec import decode as cbor_decode
from teep_coap.encoding.cbor_codec import encode as cbor_encode
from teep_coap.encoding.cose_view import is_cose, join_cose, split_cose
from teep_coap.encoding.diag import cbor_to_diag, diag_to_cbor
from teep_coap.encoding.errors import TeepDecodeError
from teep_coap.encoding.hextext import InputError, read_cbor_source, read_source
from teep_coap.encoding.json_codec import TeepJsonError, from_jsonable, parse_json, to_jsonable


@root.command("decode")
@click.argument("source", metavar="FILE|-")
@click.option("--compact", is_flag=True, help="One line of JSON instead of indented.")
@click.option(
    "--diag",
    "as_diag",
    is_flag=True,
    help="Print CBOR diagnostic notation (RFC 8949 §8) with CDDL names as comments; any CBOR item.",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON (the default output).")
def decode_cmd(source: str, compact: bool, as_diag: bool, as_json: bool) -> None:
    """Decode a TEEP message (raw CBOR, hex text, or COSE-wrapped) and print it as JSON.

    With --diag: diagnostic notation instead, which `encode --diag` turns back into the same bytes.
    """
    if as_diag and as_json:
        raise click.UsageError("--diag and --json are two different outputs: give one")
    data = read_cbor_source(source)
    if as_diag:
        sys.stdout.buffer.write(cbor_to_diag(data).encode("utf-8") + b"\n")
        sys.stdout.buffer.flush()
        return
    doc: dict[str, Any]
    if is_cose(data):
        view, payload = split_cose(data)
        try:
            message = cbor_decode(payload)
        except TeepDecodeError as exc:
            raise type(exc)(f"{view['type']} payload: {exc}") from None
        doc = {"cose": view, "message": to_jsonable(message)}
    else:
        doc = to_jsonable(cbor_decode(data))
    text = json.dumps(doc, indent=None if compact else 2, ensure_ascii=False)
    sys.stdout.buffer.write(text.encode("utf-8") + b"\n")  # UTF-8 whatever the locale says
    sys.stdout.buffer.flush()


@root.command("encode")
@click.argument("source", metavar="FILE.json|-")
@click.option(
    "-o", "--output", type=click.Path(dir_okay=False, writable=True), help="Write here, not stdout."
)
@click.option("--hex", "as_hex", is_flag=True, help="Write hex text instead of binary.")
@click.option(
    "--diag", "from_diag", is_flag=True, help="The input is CBOR diagnostic notation (`decode --diag`)."
)
def encode_cmd(source: str, output: str | None, as_hex: bool, from_diag: bool) -> None:
    """Encode the JSON form of a TEEP message (as `decode` prints it) into CBOR bytes.

    With --diag: the input is diagnostic notation (any CBOR item), encoded exactly as written.
    """
    raw = read_source(source)
    if from_diag:
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise InputError(f"{source}: diagnostic notation must be UTF-8 text") from None
        _write(diag_to_cbor(text), output, as_hex)
        return
    try:
        doc = parse_json(raw)
    except TeepJsonError as exc:
        raise TeepJsonError(f"{source}: {exc}") from None
    if isinstance(doc, dict) and "message" in doc and "type" not in doc:
        data = cbor_encode(from_jsonable(doc["message"]))
        if "cose" in doc:
            data = join_cose(doc["cose"], data)
    else:
        data = cbor_encode(from_jsonable(doc))
    _write(data, output, as_hex)


def _write(data: bytes, output: str | None, as_hex: bool) -> None:
    out = (data.hex() + "\n").encode() if as_hex else data
    if output:
        try:
            Path(output).write_bytes(out)
        except OSError as exc:
            raise InputError(f"cannot write {output}: {exc.strerror or exc}") from None
    else:
        sys.stdout.buffer.write(out)
        sys.stdout.buffer.flush()
