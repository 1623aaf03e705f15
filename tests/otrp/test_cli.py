"""`teep-coap otrp session` and `teep-coap otrp decode`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from teep_coap.cli import main

from .conftest import REPO_SAMPLES


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    main(list(argv))
    return capsys.readouterr().out


@pytest.mark.parametrize("encoding", ["json", "cbor"])
def test_session_writes_messages_that_decode(
    encoding: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = _run(
        capsys,
        "otrp",
        "session",
        "--encoding",
        encoding,
        "--ta-size",
        "300",
        "--json",
        "--out",
        str(tmp_path),
    )
    records = json.loads(out)
    assert [r["message"] for r in records][-2:] == ["InstallTARequest", "InstallTAResponse"]
    files = sorted(tmp_path.iterdir())
    assert len(files) == 6
    assert [f.stat().st_size for f in files] == [r["wire_size"] for r in records]
    doc = json.loads(_run(capsys, "otrp", "decode", str(files[4])))
    assert doc["unverified"] is True and doc["encoding"] == encoding
    assert "InstallTATBSRequest" in json.dumps(doc)


def test_session_lifecycle_table(capsys: pytest.CaptureFixture[str]) -> None:
    out = _run(capsys, "otrp", "session", "--lifecycle", "--ta-size", "64", "--key-type", "EC")
    for name in (
        "CreateSDRequest",
        "InstallTARequest",
        "UpdateTARequest",
        "DeleteTARequest",
        "DeleteSDRequest",
    ):
        assert name in out


def test_decode_bare_sample(capsys: pytest.CaptureFixture[str]) -> None:
    doc = json.loads(_run(capsys, "otrp", "decode", str(REPO_SAMPLES / "A18-InstallTARequest-1.json")))
    assert doc["bare_tbs"] is True
    assert doc["message"]["InstallTATBSRequest"]["encrypted_ta"]["iv"] == "4f5472504973426f726e496e32303135"


def test_decode_garbage_is_one_line_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"x": 1}')
    with pytest.raises(SystemExit) as info:
        main(["otrp", "decode", str(bad)])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not an OTrP message" in err


@pytest.mark.parametrize("profile", ["otrp-json-https", "otrp-cbor-coaps"])
def test_init_serve_run_across_processes(
    profile: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`otrp serve` in its own process, `otrp run` against it over loopback (TLS / DTLS PSK)."""
    import os
    import select
    import subprocess
    import sys

    folder = tmp_path / "otrp"
    _run(capsys, "otrp", "init", str(folder), "--ta-size", "5000")
    assert json.loads((folder / "tam" / "policy.json").read_text())["tas"][0]["taid"] == "sp.example.ta1"
    argv = ["otrp", "serve", "--profile", profile, "--dir", str(folder)]
    with (tmp_path / "serve.err").open("wb") as err:  # a file: a full pipe would stall the server
        server = subprocess.Popen(
            [sys.executable, "-c", "from teep_coap.cli import main; main()", *argv],
            stdout=subprocess.PIPE,
            stderr=err,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    try:
        ready, _, _ = select.select([server.stdout], [], [], 30)
        assert ready, f"the TAM did not start within 30 s: {(tmp_path / 'serve.err').read_text()[-500:]}"
        assert server.stdout is not None
        line = server.stdout.readline().decode()
        assert line.startswith("OTrP TAM serving "), line
        uri = line.split()[-1]
        report = json.loads(
            _run(capsys, "otrp", "run", "--profile", profile, "--uri", uri, "--dir", str(folder))
        )
        assert report["ok"] is True
        assert report["installed"] == {"sd.sp.example": {"sp.example.ta1": 5000}}
        # second session: nothing to do, GetDeviceState only
        again = json.loads(
            _run(capsys, "otrp", "run", "--profile", profile, "--uri", uri, "--dir", str(folder))
        )
        assert again["ok"] is True and again["rounds"] == 2
    finally:
        server.terminate()
        server.wait(timeout=15)
        if server.stdout is not None:
            server.stdout.close()


@pytest.mark.parametrize("encoding", ["json", "cbor"])
def test_decode_with_keys_verifies_and_decrypts(
    encoding: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder, out = tmp_path / "setup", tmp_path / "msgs"
    _run(capsys, "otrp", "init", str(folder))
    _run(
        capsys, "otrp", "session", "--encoding", encoding, "--keys", str(folder), "--out", str(out), "--json"
    )
    files = sorted(out.iterdir())
    for f in files:
        doc = json.loads(_run(capsys, "otrp", "decode", "--keys", str(folder), str(f)))
        assert doc["verified"] is True
    install = json.loads(_run(capsys, "otrp", "decode", "--keys", str(folder), str(files[4])))
    assert install["decrypted"] == ["content"]
    assert "sp.example.ta1" in json.dumps(install["message"])  # the taid is inside the encrypted content
    data = bytearray(files[4].read_bytes())
    data[len(data) // 2] ^= 0x01  # one flipped bit somewhere in the middle
    bad = tmp_path / "bad"
    bad.write_bytes(bytes(data))
    with pytest.raises(SystemExit) as info:
        main(["otrp", "decode", "--keys", str(folder), str(bad)])
    assert info.value.code == 2
