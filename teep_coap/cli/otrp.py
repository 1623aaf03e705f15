"""`teep-coap otrp decode` and `teep-coap otrp session`.

decode: any OTrP message (JSON/JOSE or the CBOR/COSE mapping, signed or bare) → its structure as JSON.
No key is used: signatures are NOT verified and encrypted members stay encrypted; the output says so.
session: the in-memory reference session (GetDeviceState → CreateSD → InstallTA) with the sizes of each
message, or with --lifecycle the whole life of one TA (install, update, delete).
"""

from __future__ import annotations

import base64
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import click

from teep_coap.cli.groups import otrp
from teep_coap.encoding import otrp_cbor, otrp_json
from teep_coap.model.otrp import BY_TBS_NAME, OtrpDecodeError, OtrpError
from teep_coap.protocol.otrp_session import (
    MessageRecord,
    make_engines,
    reference_policy,
    run_reference_session,
    run_session,
)
from teep_coap.security import otrp_cose, otrp_jose
from teep_coap.security.otrp_pki import make_pki


def _read(source: str) -> bytes:
    if source == "-":
        return sys.stdin.buffer.read()
    try:
        return Path(source).read_bytes()
    except OSError as exc:
        raise OtrpError(f"{source}: {exc.strerror}") from None


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, bytes):
        return {"bstr": obj.hex()} if len(obj) <= 64 else {"bstr": obj[:32].hex() + "…", "length": len(obj)}
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    return obj


def describe(data: bytes, encoding: str = "auto") -> dict[str, Any]:
    """Structure of an OTrP message without keys (JSON if it starts with `{`, else CBOR)."""
    if encoding == "auto":
        encoding = "json" if data.lstrip()[:1] == b"{" else "cbor"
    if encoding == "json":
        tree = otrp_json.loads(data, "message")
        if isinstance(tree, dict) and len(tree) == 1 and next(iter(tree)) in BY_TBS_NAME:
            msg = otrp_json.decode_tbs(data)
            return {"encoding": "json", "bare_tbs": True, "message": msg.tbs_tree(text=True)}
        return {"encoding": "json", **otrp_jose.describe_unverified(data)}
    item = otrp_cbor.loads(data, "message")
    if isinstance(item, list) and len(item) == 2 and isinstance(item[1], dict):
        msg = otrp_cbor.decode_tbs(data)
        return {"encoding": "cbor", "bare_tbs": True, "message": _jsonable(msg.tbs_tree(text=False))}
    return {"encoding": "cbor", **_jsonable(otrp_cose.describe_unverified(data))}


@otrp.command("decode")
@click.argument("source", metavar="FILE|-")
@click.option("--encoding", type=click.Choice(["auto", "json", "cbor"]), default="auto", show_default=True)
@click.option("--hex", "is_hex", is_flag=True, help="The file holds hex text (whitespace ignored).")
def decode_cmd(source: str, encoding: str, is_hex: bool) -> None:
    """Show the structure of an OTrP message. Signatures are not verified; JWE/COSE_Encrypt stay closed."""
    data = _read(source)
    if is_hex:
        try:
            data = bytes.fromhex("".join(data.decode("ascii").split()))
        except (UnicodeDecodeError, ValueError):
            raise OtrpDecodeError(source, "not hex text") from None
    click.echo(json.dumps(describe(data, encoding), indent=2, ensure_ascii=False))


def _table(title: str, records: list[MessageRecord]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for col in ("message", "direction", "bare TBS bytes", "signed+encrypted bytes"):
        table.add_column(col, justify="right" if "bytes" in col else "left")
    for r in records:
        table.add_row(r.name, r.direction, str(r.tbs_size), str(r.wire_size))
    table.add_row(
        "session", "", str(sum(r.tbs_size for r in records)), str(sum(r.wire_size for r in records))
    )
    Console().print(table)


@otrp.command("session")
@click.option("--encoding", type=click.Choice(["json", "cbor"]), default="json", show_default=True)
@click.option("--ta-size", type=click.IntRange(0, 64 * 1024 * 1024), default=1024, show_default=True)
@click.option(
    "--key-type",
    type=click.Choice(["RSA", "EC"]),
    default="RSA",
    show_default=True,
    help="RSA-2048 (RS256, RSA1_5 / RSA-OAEP: the draft's MUST) or P-256 (ES256, ECDH-ES+A128KW).",
)
@click.option("--lifecycle", is_flag=True, help="Install, then update, then delete the TA (three sessions).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON records instead of a table.")
@click.option("--out", type=click.Path(file_okay=False), help="Write each message's wire bytes here.")
def session_cmd(
    encoding: str, ta_size: int, key_type: str, lifecycle: bool, as_json: bool, out: str | None
) -> None:
    """Run the OTrP reference session in memory and show every message with its sizes."""
    pki = make_pki(key_type)
    runs: list[tuple[str, list[MessageRecord]]] = []
    if not lifecycle:
        runs.append(("install", run_reference_session(encoding, ta_size, pki=pki)))  # type: ignore[arg-type]
    else:
        with tempfile.TemporaryDirectory(prefix="otrp-agent-") as tmp:
            policy = reference_policy(pki, ta_size)
            tam, agent = make_engines(encoding, pki, Path(tmp), policy)  # type: ignore[arg-type]
            runs.append(("install", run_session(tam, agent)))
            tam.config.policy = reference_policy(pki, ta_size, seed=b"v2")
            runs.append(("update", run_session(tam, agent)))
            tam.config.policy = type(policy)()
            runs.append(("delete", run_session(tam, agent)))
    if out:
        folder = Path(out)
        folder.mkdir(parents=True, exist_ok=True)
        ext = "json" if encoding == "json" else "cbor"
        n = 0
        for _, records in runs:
            for r in records:
                n += 1
                (folder / f"{n:02d}-{r.name}.{ext}").write_bytes(r.wire)
    if as_json:
        doc = [
            {
                "session": label,
                "message": r.name,
                "direction": r.direction,
                "tbs_size": r.tbs_size,
                "wire_size": r.wire_size,
                "wire_b64": base64.b64encode(r.wire).decode() if out is None else None,
            }
            for label, records in runs
            for r in records
        ]
        click.echo(json.dumps(doc, indent=1))
        return
    for label, records in runs:
        _table(f"OTrP {encoding} ({key_type}), TA {ta_size} bytes: {label}", records)
