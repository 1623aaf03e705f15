"""`teep-coap otrp decode` and `teep-coap otrp session`.

decode: any OTrP message (JSON/JOSE or the CBOR/COSE mapping, signed or bare) → its structure as JSON.
No key is used: signatures are NOT verified and encrypted members stay encrypted; the output says so.
session: the in-memory reference session (GetDeviceState → CreateSD → InstallTA) with the sizes of each
message, or with --lifecycle the whole life of one TA (install, update, delete).
"""

from __future__ import annotations

import asyncio
import base64
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.table import Table

from teep_coap.cli.groups import json_is_default, otrp
from teep_coap.cli.serving import parse_bind, serve_tam
from teep_coap.otrp.encoding import cbor as otrp_cbor
from teep_coap.otrp.encoding import json as otrp_json
from teep_coap.otrp.encoding.tree import tbs_tree, to_tree
from teep_coap.otrp.model import BY_TBS_NAME, GetDeviceStateResponse, OtrpDecodeError, OtrpError, OtrpMessage
from teep_coap.otrp.profiles import POLICY_FILE
from teep_coap.otrp.protocol.session import (
    MessageRecord,
    make_engines,
    reference_policy,
    run_reference_session,
    run_session,
)
from teep_coap.otrp.protocol.wire import codec_for
from teep_coap.otrp.security import cose as otrp_cose
from teep_coap.otrp.security import jose as otrp_jose
from teep_coap.otrp.security.pki import OtrpPki, load_certs_pem, load_identity, make_pki, save_identity
from teep_coap.profiles import load_profile
from teep_coap.profiles.runtime import run_agent
from teep_coap.security.certs import write_bundle
from teep_coap.transport.coap.credentials import provision_device


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
            return {"encoding": "json", "bare_tbs": True, "message": tbs_tree(msg, text=True)}
        return {"encoding": "json", **otrp_jose.describe_unverified(data)}
    item = otrp_cbor.loads(data, "message")
    if isinstance(item, list) and len(item) == 2 and isinstance(item[1], dict):
        msg = otrp_cbor.decode_tbs(data)
        return {"encoding": "cbor", "bare_tbs": True, "message": _jsonable(tbs_tree(msg, text=False))}
    return {"encoding": "cbor", **_jsonable(otrp_cose.describe_unverified(data))}


def open_with_keys(data: bytes, folder: Path, encoding: str = "auto") -> dict[str, Any]:
    """Verify and decrypt with the keys of an `otrp init` folder: requests as the TEE, responses as the
    TAM (both trust `pki/root.pem`)."""

    if encoding == "auto":
        encoding = "json" if data.lstrip()[:1] == b"{" else "cbor"
    codec = codec_for(encoding)
    pki = folder / "pki"
    anchors = load_certs_pem(pki / "root.pem")
    tam, tee = load_identity(pki, "tam"), load_identity(pki, "tee")
    cls, _rid, _tid = codec.peek(data)
    is_request = cls is not None and cls.IS_REQUEST
    me = tee if is_request else tam
    peer_keys = (tam.public_key,) if is_request else (tee.public_key,)  # used when no x5c is sent
    opened = codec.open(data, me.private_key, verify_keys=peer_keys, anchors=anchors)
    msg = opened.msg
    text = encoding == "json"
    if isinstance(msg, GetDeviceStateResponse):
        tree: Any = {msg.OUTER_NAME: [tbs_tree(t, text) for t in msg.tees]}
    elif isinstance(msg, OtrpMessage):
        tree = tbs_tree(msg, text)
    else:
        tree = {msg.OUTER_NAME: to_tree(msg, text)}
    return {
        "encoding": encoding,
        "verified": opened.signed,
        "decrypted": sorted(opened.plaintexts),
        "message": tree if text else _jsonable(tree),
    }


@otrp.command("decode")
@json_is_default
@click.argument("source", metavar="FILE|-")
@click.option("--encoding", type=click.Choice(["auto", "json", "cbor"]), default="auto", show_default=True)
@click.option("--hex", "is_hex", is_flag=True, help="The file holds hex text (whitespace ignored).")
@click.option(
    "--keys",
    type=click.Path(exists=True, file_okay=False),
    help="An `otrp init` folder: verify and decrypt with its keys instead of showing it unverified.",
)
def decode_cmd(source: str, encoding: str, is_hex: bool, keys: str | None) -> None:
    """Show an OTrP message. Without --keys: structure only, signatures NOT verified, JWE/COSE_Encrypt
    closed. With --keys: verified (chain to the folder's root) and decrypted, or a one-line error."""
    data = _read(source)
    if is_hex:
        try:
            data = bytes.fromhex("".join(data.decode("ascii").split()))
        except (UnicodeDecodeError, ValueError):
            raise OtrpDecodeError(source, "not hex text") from None
    doc = open_with_keys(data, Path(keys), encoding) if keys else describe(data, encoding)
    click.echo(json.dumps(doc, indent=2, ensure_ascii=False))


def _table(title: str, records: list[MessageRecord]) -> None:

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
@click.option(
    "--keys",
    type=click.Path(exists=True, file_okay=False),
    help="Use the PKI of an `otrp init` folder (so `otrp decode --keys` can open the messages).",
)
def session_cmd(
    encoding: str,
    ta_size: int,
    key_type: str,
    lifecycle: bool,
    as_json: bool,
    out: str | None,
    keys: str | None,
) -> None:
    """Run the OTrP reference session in memory and show every message with its sizes."""
    if keys:
        folder = Path(keys) / "pki"
        pki = OtrpPki(**{n: load_identity(folder, n) for n in ("root", "tam", "tee", "sp")})
    else:
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


# ---------------------------------------------------------------------------------------------- network
# A folder made by `otrp init` holds everything both roles need:
#   pki/     root.pem, tam.pem+key, tee.pem+key, sp.pem+key (the OTrP signer certificates)
#   tam/     policy.json, TA binaries, credentials.toml (DTLS PSK / OSCORE of the device)
#   agent/   transport.toml + oscore/ (the device's transport credentials), otrp/ (the simulated TEE)
#   certs/   the HTTPS CA and server certificate (security/certs.py)


@otrp.command("init")
@click.argument("folder", type=click.Path(file_okay=False))
@click.option("--key-type", type=click.Choice(["RSA", "EC"]), default="RSA", show_default=True)
@click.option("--ta-size", type=click.IntRange(0, 64 * 1024 * 1024), default=1024, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print what was made as JSON.")
def init_cmd(folder: str, key_type: str, ta_size: int, as_json: bool) -> None:
    """Make a folder for `otrp serve` and `otrp run`: PKI, a policy with one SD and one TA, credentials."""

    base = Path(folder)
    if (base / "pki").exists():
        raise OtrpError(f"{base} already holds an OTrP setup (pki/ exists)")
    pki = make_pki(key_type)
    for name in ("root", "tam", "tee", "sp"):
        save_identity(getattr(pki, name), base / "pki", name)
    tam_dir = base / "tam"
    tam_dir.mkdir(parents=True, exist_ok=True)
    (tam_dir / "ta1.bin").write_bytes((b"TA" * (ta_size // 2 + 1))[:ta_size])
    policy = {
        "sds": [{"spid": "sp.example", "sdname": "sd.sp.example"}],
        "tas": [{"sdname": "sd.sp.example", "taid": "sp.example.ta1", "file": "ta1.bin"}],
    }
    (tam_dir / POLICY_FILE).write_text(json.dumps(policy, indent=2) + "\n")
    provision_device(tam_dir, base / "agent", "otrp-device")
    write_bundle(base / "certs")
    if as_json:
        click.echo(
            json.dumps({"folder": str(base), "key_type": key_type, "policy": str(tam_dir / POLICY_FILE)})
        )
        return
    click.echo(f"OTrP setup in {base} ({key_type}); edit {tam_dir / POLICY_FILE} to change what is installed")


@otrp.command("serve")
@click.option("--profile", "profile_name", required=True, help="An otrp-* profile (teep-coap profiles).")
@click.option("--dir", "folder", required=True, type=click.Path(exists=True, file_okay=False))
@click.option("--bind", default="127.0.0.1:0", show_default=True, help="HOST:PORT (port 0 = any free port).")
def serve_cmd(profile_name: str, folder: str, bind: str) -> None:
    """Serve the OTrP TAM until SIGINT/SIGTERM; the first line on stdout is the TAM URI.

    The same as `teep-coap tam serve --profile P --dir FOLDER` (which serves every profile)."""

    if load_profile(profile_name).protocol != "otrp":
        raise OtrpError(f"profile {profile_name!r} is not an OTrP profile (use `teep-coap tam serve`)")
    asyncio.run(serve_tam(profile_name, folder, None, None, parse_bind(bind), banner="OTrP TAM serving"))


async def _run(profile_name: str, uri: str, folder: Path) -> dict[str, Any]:

    profile = load_profile(profile_name)
    if profile.protocol != "otrp":
        raise OtrpError(f"profile {profile.name!r} is for {profile.protocol}, not otrp")
    return await run_agent(profile, uri, folder)


@otrp.command("run")
@json_is_default
@click.option("--profile", "profile_name", required=True, help="The otrp-* profile the TAM serves.")
@click.option("--uri", required=True, help="TAM URI (as `otrp serve` printed it).")
@click.option("--dir", "folder", required=True, type=click.Path(exists=True, file_okay=False))
def run_cmd(profile_name: str, uri: str, folder: str) -> None:
    """One Broker session of the device against an OTrP TAM; prints a JSON report, exit 1 on failure.

    Like `teep-coap agent run --profile P --tam URI --state FOLDER` (which exits 2 on failure)."""

    report = asyncio.run(_run(profile_name, uri, Path(folder)))
    click.echo(json.dumps(report, indent=2))
    if not report["ok"]:
        sys.exit(1)
