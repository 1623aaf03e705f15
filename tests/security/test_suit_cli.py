"""`teep-coap suit build` / `suit inspect` as a user runs them (real subprocess, real files)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cli_run import run_cli

from teep_coap.security.keys import generate_key, write_key_files
from teep_coap.security.suit import parse_envelope, verify_envelope
from tests.conftest import read_hex_vector

VENDOR = "c0ddd5f1-5243-5660-87db-4f5b0aa26c2f"
CLASS = "db42f709-3d8c-55ba-a8c5-265fc5820f4e"
TC = "8d82573a-926d-4754-9353-32dc29997f74"


cli = run_cli


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("suitcli")
    tam = write_key_files(generate_key("esp256"), d / "tam")
    other = write_key_files(generate_key("ed25519"), d / "other")
    payload = d / "tc.ta"
    payload.write_bytes(b"Hello, Secure World!")
    out = d / "tc.suit"
    p = cli(
        "suit", "build", str(payload), "--key", str(tam["private_pem"]), "--tc-uuid", TC, "--seq", "3",
        "--vendor-id", VENDOR, "--class-id", CLASS, "--description", "demo TC", "-o", str(out),
    )  # fmt: skip
    assert p.returncode == 0, p.stderr
    assert "sequence number 3" in p.stderr
    return {"envelope": out, "tam_pub": tam["public_pem"], "other_pub": other["public_pem"], "dir": d}


def test_build_output_verifies_and_matches_the_example_manifest(built: dict[str, Path]) -> None:
    from teep_coap.security.keys import load_verifying_key

    data = built["envelope"].read_bytes()
    env = verify_envelope(data, load_verifying_key(built["tam_pub"]))
    example = parse_envelope(read_hex_vector("suit_integrated"))
    assert env.manifest.common.raw == example.manifest.common.raw
    assert env.manifest.install is not None and example.manifest.install is not None
    assert env.manifest.install.raw == example.manifest.install.raw
    assert env.manifest.text == {"en": {1: "demo TC"}}


def test_inspect_valid(built: dict[str, Path]) -> None:
    p = cli("suit", "inspect", str(built["envelope"]), "--key", str(built["tam_pub"]))
    assert p.returncode == 0, p.stderr
    doc = json.loads(p.stdout)
    assert doc["verified"]["valid"] is True
    assert doc["manifest"]["sequence_number"] == 3
    assert doc["manifest"]["components"] == [["TEEP-Device", "SecureFS", "hex:" + TC.replace("-", ""), "ta"]]
    assert doc["integrated_payloads"]["#tc"]["size"] == 20
    assert doc["manifest"]["sequences"]["install"][1]["command"] == "directive-fetch"


def test_inspect_with_trust_folder(built: dict[str, Path]) -> None:
    trust = built["dir"] / "trust"
    trust.mkdir(exist_ok=True)
    (trust / "tam.pem").write_bytes(built["tam_pub"].read_bytes())
    p = cli("suit", "inspect", str(built["envelope"]), "--trust", str(trust))
    assert p.returncode == 0, p.stderr


def test_inspect_wrong_key_exits_1(built: dict[str, Path]) -> None:
    p = cli("suit", "inspect", str(built["envelope"]), "--key", str(built["other_pub"]))
    assert p.returncode == 1
    assert json.loads(p.stdout)["verified"]["reason"] == 4


def test_inspect_tampered_digest_exits_1(built: dict[str, Path]) -> None:
    data = built["envelope"].read_bytes()
    head = b"\x01\x01\x02\x03\x03"  # manifest: version 1, sequence number 3, common...
    assert data.count(head) == 1
    bad = built["dir"] / "tampered.suit"
    bad.write_bytes(data.replace(head, b"\x01\x01\x02\x04\x03"))  # sequence number 3 -> 4
    p = cli("suit", "inspect", str(bad), "--key", str(built["tam_pub"]))
    assert p.returncode == 1, p.stderr
    doc = json.loads(p.stdout)
    assert doc["authentication"]["digest_matches_manifest"] is False
    assert doc["manifest"]["sequence_number"] == 4 and doc["verified"]["reason"] == 4


def test_inspect_malformed_exits_2(built: dict[str, Path]) -> None:
    bad = built["dir"] / "trunc.suit"
    bad.write_bytes(built["envelope"].read_bytes()[:100])
    p = cli("suit", "inspect", str(bad), "--key", str(built["tam_pub"]))
    assert p.returncode == 2 and "not valid CBOR" in p.stderr and p.stdout == ""


def test_inspect_without_key_shows_the_personalization_gaps(tmp_path: Path) -> None:
    f = tmp_path / "p.suit"
    f.write_bytes(read_hex_vector("suit_personalization"))
    p = cli("suit", "inspect", str(f))
    assert p.returncode == 0, p.stderr
    doc = json.loads(p.stdout)
    assert "verified" not in doc
    assert any("parameter 19" in u for u in doc["unsupported"])
