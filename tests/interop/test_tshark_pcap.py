"""`--pcap`: Wireshark's tshark, an independent dissector, reads our captures and sees our messages.

A real session runs over coap, coaps-psk (decrypted with FILE.psk), coap-constrained (64-byte blocks,
so Block1 and Block2) and teep-cbor-http; tshark dissects every CoAP message / HTTP request, and the
TEEP payloads it reassembles from what it dissected equal, in order, the bytes our Broker sent and got.
"""

from __future__ import annotations

import functools
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from cli_run import run_cli

from teep_coap.model.codes import MEDIA_TYPE_TEEP_CBOR
from teep_coap.profiles import load_profile
from teep_coap.profiles.capture import keylog_path, psk_path, session_front, tls_keys_logged
from teep_coap.profiles.scenario import ScenarioRun, run_local_session, run_scenario
from teep_coap.transport.pcap import PcapWriter

pytestmark = [pytest.mark.interop, pytest.mark.timeout(180)]
CODE_POST, CODE_CHANGED, CODE_CONTINUE, CODE_UNAUTHORIZED = 2, 68, 95, 129
CONTENT_FORMAT = "65000"


def tshark(pcap: Path, *extra: str) -> list[dict[str, Any]]:
    """Every frame's layers, as tshark dissects them (raw bytes of each field with -x)."""
    binary = shutil.which("tshark")
    if binary is None:
        pytest.fail("tshark not installed (scripts/setup.sh installs it; Debian package tshark)")
    psk = psk_path(pcap)
    if psk.exists():
        extra = ("-o", f"dtls.psk:{psk.read_text().strip()}", *extra)
    keylog = keylog_path(pcap)
    if keylog.exists():
        extra = ("-o", f"tls.keylog_file:{keylog}", *extra)
    done = subprocess.run(
        [binary, "-n", "-r", str(pcap), "-T", "json", "-x", "--no-duplicate-keys", *extra],
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode()
    return [frame["_source"]["layers"] for frame in json.loads(done.stdout)]


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [] if value is None else [value]


def raw(field: Any) -> bytes:
    """tshark's `_raw` form: [hex, offset, length, ...]."""
    return bytes.fromhex(field[0]) if field else b""


async def captured_session(profile_name: str, pcap: Path, payload_size: int) -> list[bytes]:
    """Run the session with the capture in front; return the non-empty TEEP messages in wire order."""
    profile = load_profile(profile_name)
    writer = PcapWriter(pcap)

    async def collect(run: ScenarioRun) -> list[bytes]:
        if profile.security.mode == "dtls-psk":
            from teep_coap.profiles.capture import write_psk_file
            from teep_coap.transport.coap.credentials import load_tam_credentials

            write_psk_file(pcap, load_tam_credentials(run.world.tam_dir)[0].psk)
        return [m for pair in run.exchanges for m in pair if m]

    try:
        if profile.security.mode == "tls":
            with tls_keys_logged(pcap):
                return await run_scenario(profile, payload_size, collect, front=session_front(writer))
        return await run_scenario(profile, payload_size, collect, front=session_front(writer))
    finally:
        writer.close()


def has_echo(coap: dict[str, Any]) -> bool:
    """Echo (RFC 9175, option 252): tshark 4.0 does not know its name and shows it by number."""
    trees = as_list(coap.get("coap.opt.name_tree"))
    return any(str(t.get("coap.opt.desc", "")).startswith("Type 252,") for t in trees if isinstance(t, dict))


def coap_messages(frames: list[dict[str, Any]]) -> list[bytes]:
    """TEEP payloads rebuilt from tshark's CoAP fields; asserts the binding's rules on each message."""
    messages: list[bytes] = []
    partial: dict[bool, bytes] = {True: b"", False: b""}
    echo_asked = echoed = False
    for layers in frames:
        coap = layers.get("coap")
        if coap is None:
            assert "dtls" not in layers or "dtls.app_data" not in json.dumps(layers["dtls"]), (
                "a DTLS application-data record that tshark did not dissect as CoAP"
            )
            continue
        code = int(coap["coap.code"])
        if coap["coap.type"] in ("2", "3") and code == 0:
            continue  # empty ACK / RST
        request = code < 32
        # each option's name ("#2: Block2") and its subtree, as tshark shows them
        names = [n.split(": ", 1)[1] for n in as_list(coap.get("coap.opt.name"))]
        options = dict(zip(names, as_list(coap.get("coap.opt.name_tree")), strict=True))
        if request:
            assert code == CODE_POST, f"request code {code}"
            assert "Uri-Path" in options and coap["coap.opt.uri_path_recon"] == "/teep"
            echoed = echoed or (echo_asked and has_echo(coap))
        elif code == CODE_UNAUTHORIZED:  # RFC 9175: the TAM asks an unproven address to echo first
            assert has_echo(coap), "4.01 without an Echo option"
            echo_asked = True
            continue
        else:
            assert code in (CODE_CHANGED, CODE_CONTINUE), f"response code {code}"
        block = options.get("Block1" if request else "Block2")
        piece = raw(coap.get("coap.block_payload_raw" if block else "coap.payload_raw"))
        if piece:
            assert options["Content-Format"]["coap.opt.ctype"].endswith(CONTENT_FORMAT)
        if block:
            if block["coap.opt.block_number"] == "0":
                partial[request] = b""
            partial[request] += piece
            if block["coap.opt.block_mflag"] == "1":
                continue
            piece, partial[request] = partial[request], b""
        if piece:
            messages.append(piece)
    assert echoed or not echo_asked, "the TAM asked for an Echo that no request carried"
    return messages


def http_messages(frames: list[dict[str, Any]], path: str) -> list[bytes]:
    messages: list[bytes] = []
    for layers in frames:
        http = layers.get("http")
        if http is None:
            continue
        if "http.request.method" in http:
            assert http["http.request.method"] == "POST"
            assert http["http.request.uri"] == path
        body = raw(http.get("http.file_data_raw"))
        if body:
            assert http["http.content_type"] == MEDIA_TYPE_TEEP_CBOR
            messages.append(body)
    return messages


@pytest.mark.parametrize(
    ("profile_name", "payload_size", "need_blocks"),
    [
        ("coap", 3000, {"Block2"}),
        ("coaps-psk", 3000, {"Block2"}),
        ("coap-constrained", 300, {"Block1", "Block2"}),
        ("teep-cbor-http", 3000, set()),
        ("teep-cbor-https", 3000, set()),
    ],
)
async def test_tshark_dissects_what_we_sent(
    profile_name: str, payload_size: int, need_blocks: set[str], tmp_path: Path
) -> None:
    pcap = tmp_path / f"{profile_name}.pcap"
    ours = await captured_session(profile_name, pcap, payload_size)
    assert len(ours) == 4  # QueryRequest, QueryResponse, Update, Success
    frames = tshark(pcap)
    if profile_name.startswith("teep-cbor-http"):
        assert http_messages(frames, "/tam") == ours
        if profile_name == "teep-cbor-https":  # decrypted only with the key log beside the capture
            assert any("tls" in f for f in frames)
            copy = pcap.with_name("no-keys.pcap")
            copy.write_bytes(pcap.read_bytes())
            assert http_messages(tshark(copy), "/tam") == []
        return
    seen_blocks = {
        n.split(": ", 1)[1] for f in frames if "coap" in f for n in as_list(f["coap"].get("coap.opt.name"))
    } & {"Block1", "Block2"}
    assert need_blocks <= seen_blocks
    assert coap_messages(frames) == ours


def test_dtls_capture_without_the_psk_shows_no_coap(tmp_path: Path) -> None:
    """The PSK file is what makes the difference: without it tshark sees encrypted records only."""
    import asyncio

    pcap = tmp_path / "s.pcap"
    asyncio.run(run_local_session(load_profile("coaps-psk"), 100, pcap=pcap))
    assert len(psk_path(pcap).read_text().strip()) == 32  # 16-byte PSK in hex
    hidden = pcap.with_name("copy.pcap")
    hidden.write_bytes(pcap.read_bytes())  # no copy.pcap.psk beside it
    frames = tshark(hidden)
    assert any("dtls" in f for f in frames)
    assert not any("coap" in f for f in frames)
    assert any("coap" in f for f in tshark(pcap))


cli = functools.partial(run_cli, timeout=90)


def test_agent_run_and_tam_serve_write_pcaps(tmp_path: Path) -> None:
    """`agent run --pcap` (PSK given on the command line) and `tam serve --pcap` against each other:
    both captures hold the same CoAP exchanges, dissected with the tshark command `agent run` prints."""
    from teep_coap.bench.sessions import make_world, tam_process
    from teep_coap.transport.coap.credentials import load_agent_credentials

    world = make_world(tmp_path / "tam", tmp_path / "agents", 1, 2000)
    agent_dir = world.agent_dirs[0]
    creds = load_agent_credentials(agent_dir)
    (agent_dir / "transport.toml").unlink()  # only --psk-hex/--psk-identity can work now
    served = tmp_path / "served.pcap"
    with tam_process("coaps-psk", world.tam_dir, extra=("--pcap", str(served))) as (uri, _pid):
        client = tmp_path / "client.pcap"
        run = cli(
            "agent", "run", "--profile", "coaps-psk", "--tam", uri, "--state", str(agent_dir),
            "--pcap", str(client), "--psk-hex", creds.psk.hex(), "--psk-identity", creds.psk_identity,
        )  # fmt: skip
        assert run.returncode == 0, run.stderr
        summary = json.loads(run.stdout)
        assert summary["tam"] == uri and len(summary["installed"]) == 1
    command = summary["pcap"]["tshark"].split()
    port = uri.rsplit(":", 1)[1].split("/")[0]
    assert f"udp.port=={port},dtls" in command and f"dtls.port=={port},coap" in command
    decode_as = [a for i, a in enumerate(command) if command[i - 1] == "-d"]
    extra = [x for d in decode_as for x in ("-d", d)]
    client_msgs = coap_messages(tshark(client, *extra))
    served_msgs = coap_messages(tshark(served, *extra))
    assert len(client_msgs) >= 4  # QueryRequest, QueryResponse, Update, Success (+ a second session)
    assert client_msgs == served_msgs
    assert psk_path(served).read_text().strip() == creds.psk.hex()


def test_pcap_refuses_a_tam_off_loopback(tmp_path: Path) -> None:
    run = cli(
        "agent", "run", "--profile", "coap", "--tam", "coap://192.0.2.1/teep", "--state", str(tmp_path),
        "--pcap", str(tmp_path / "x.pcap"),
    )  # fmt: skip
    assert run.returncode == 2
    assert "teep-coap: error: --pcap records through a relay on loopback" in run.stderr


def test_https_session_writes_its_tls_key_log(tmp_path: Path) -> None:
    """`session --pcap` over HTTPS: FILE.keylog holds the secrets, and the process's setting is restored."""
    import asyncio
    import os

    pcap = tmp_path / "s.pcap"
    asyncio.run(run_local_session(load_profile("teep-cbor-https"), 100, pcap=pcap))
    lines = keylog_path(pcap).read_text().splitlines()
    assert any(line.startswith(("CLIENT_TRAFFIC_SECRET_0 ", "CLIENT_RANDOM ")) for line in lines)
    assert "SSLKEYLOGFILE" not in os.environ
    assert http_messages(tshark(pcap), "/tam")
