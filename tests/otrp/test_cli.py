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
