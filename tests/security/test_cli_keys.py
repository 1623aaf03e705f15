"""`teep-coap keys|sign|verify|bench crypto` as a user runs them (subprocess, real files)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cbor2
import pytest

from tests.conftest import VECTORS_DIR, read_hex_vector

CLI = [sys.executable, "-c", "from teep_coap.cli import main; main()"]


def run(*args: str | Path, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([*CLI, *map(str, args)], input=stdin, capture_output=True, timeout=60, check=False)


@pytest.fixture(scope="module")
def keydirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("keys")
    out = {}
    for name, alg in (("tam_esp", "esp256"), ("tam_ed", "ed25519"), ("other", "esp256")):
        proc = run("keys", "generate", "--alg", alg, "--out", base / name)
        assert proc.returncode == 0, proc.stderr
        kid = proc.stdout.decode().strip()
        assert len(bytes.fromhex(kid)) == 32
        (base / name / "kid.txt").write_text(kid)
        out[name] = base / name
    return out


def test_generate_writes_all_formats_and_refuses_overwrite(keydirs: dict[str, Path]) -> None:
    d = keydirs["tam_esp"]
    names = {p.name for p in d.iterdir()}
    assert {
        "private.pem",
        "public.pem",
        "private.cose_key",
        "public.cose_key",
        "private.jwk",
        "public.jwk",
    } <= names
    assert (d / "private.pem").stat().st_mode & 0o077 == 0
    proc = run("keys", "generate", "--out", d)
    assert proc.returncode == 2 and b"exists" in proc.stderr and b"Traceback" not in proc.stderr


@pytest.mark.parametrize(
    "fmt", ["private.pem", "public.pem", "private.cose_key", "public.cose_key", "public.jwk"]
)
def test_show_reports_the_same_kid_for_every_format(keydirs: dict[str, Path], fmt: str) -> None:
    d = keydirs["tam_ed"]
    proc = run("keys", "show", "--json", d / fmt)
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    assert info["kid"] == (d / "kid.txt").read_text()
    assert info["alg"] == -19 and info["private"] == fmt.startswith("private")


def test_sign_then_verify_prints_the_message(keydirs: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "qr.cose"
    vector = VECTORS_DIR / "query_request.hex.txt"  # hex text with '#' comments
    proc = run("sign", "--key", keydirs["tam_esp"] / "private.pem", vector, "-o", out)
    assert proc.returncode == 0, proc.stderr
    signed = out.read_bytes()
    assert signed[0] == 0xD2 and cbor2.loads(signed).value[2] == read_hex_vector("query_request")
    proc = run("verify", "--key", keydirs["tam_esp"] / "public.cose_key", out)
    assert proc.returncode == 0, proc.stderr
    message = json.loads(proc.stdout)
    assert message["type"] == 1 and message["data-item-requested"] == 3
    assert b"ESP256" in proc.stderr
    # the trust-folder form, reading hex from stdin
    proc = run("verify", "--trust", keydirs["tam_esp"], "-", stdin=signed.hex().encode())
    assert proc.returncode == 0, proc.stderr


def test_verify_exit_codes(keydirs: dict[str, Path], tmp_path: Path) -> None:
    signed = tmp_path / "s.cose"
    assert (
        run(
            "sign",
            "--key",
            keydirs["tam_ed"] / "private.jwk",
            VECTORS_DIR / "teep_success.hex.txt",
            "-o",
            signed,
        ).returncode
        == 0
    )
    public = keydirs["tam_ed"] / "public.pem"
    # unknown key -> 1
    proc = run("verify", "--key", keydirs["other"] / "public.pem", signed)
    assert proc.returncode == 1 and b"no trusted key" in proc.stderr
    # tampered signature -> 1
    bad = bytearray(signed.read_bytes())
    bad[-1] ^= 1
    (tmp_path / "bad.cose").write_bytes(bytes(bad))
    proc = run("verify", "--key", public, tmp_path / "bad.cose")
    assert proc.returncode == 1 and b"not valid" in proc.stderr and proc.stdout == b""
    # algorithm not allowed -> 1
    proc = run("verify", "--key", public, "--alg", "esp256", signed)
    assert proc.returncode == 1
    # malformed inputs -> 2, one line, no traceback
    for blob in (b"garbage", b"\xd2\x84", cbor2.dumps(cbor2.CBORTag(17, [b"", {}, b"", b""]))):
        (tmp_path / "m").write_bytes(blob)
        proc = run("verify", "--key", public, tmp_path / "m")
        assert proc.returncode == 2, (blob, proc.stderr)
        assert proc.stderr.count(b"\n") == 1 and b"Traceback" not in proc.stderr
    # a missing key file -> 2
    proc = run("verify", "--key", tmp_path / "nope.pem", signed)
    assert proc.returncode == 2 and b"cannot read" in proc.stderr


def test_sign_refuses_a_malformed_message_and_multi_key_gives_cose_sign(
    keydirs: dict[str, Path], tmp_path: Path
) -> None:
    (tmp_path / "notteep").write_bytes(cbor2.dumps({"a": 1}))
    proc = run("sign", "--key", keydirs["tam_esp"] / "private.pem", tmp_path / "notteep")
    assert proc.returncode == 2 and b"Traceback" not in proc.stderr
    proc = run(
        "sign",
        "--key",
        keydirs["tam_esp"] / "private.pem",
        "--key",
        keydirs["tam_ed"] / "private.pem",
        VECTORS_DIR / "query_request.hex.txt",
    )
    assert proc.returncode == 0
    data = bytes.fromhex(proc.stdout.decode())
    assert cbor2.loads(data).tag == 98
    (tmp_path / "multi").write_bytes(data)
    proc = run("verify", "--key", keydirs["tam_ed"] / "public.jwk", "--alg", "ed25519", tmp_path / "multi")
    assert proc.returncode == 0 and b"Ed25519" in proc.stderr


def test_bench_crypto_json() -> None:
    proc = run("bench", "crypto", "--seconds", "0.2", "--json")
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)
    ops = {(r["operation"], r["alg"]) for r in rows}
    assert ("COSE_Sign1 sign", "ESP256") in ops and ("COSE_Sign1 verify", "Ed25519") in ops
    for row in rows:
        assert row["cose_per_s"] > 0 and row["raw_per_s"] > 0 and row["ratio"] > 0
