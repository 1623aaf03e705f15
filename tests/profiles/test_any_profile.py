"""One command per role for every profile: `teep-coap session --profile P` runs a whole provisioning
session over P on loopback; `tam serve` + `agent run` (as processes) serve JSON/JWS and OTrP too."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from cli_run import run_cli
from click.testing import CliRunner

from teep_coap.bench.sessions import COMPONENT_ID, make_world, tam_process
from teep_coap.cli import root
from teep_coap.profiles import load_profile, profile_names
from teep_coap.profiles.scenario import COMPONENT_ID as SESSION_TC

pytestmark = pytest.mark.timeout(120)

TEEP_NAMES = ["QueryRequest", "QueryResponse", "Update", "Success"]
OTRP_NAMES = [
    "GetDeviceStateRequest",
    "GetDeviceStateResponse",
    "CreateSDRequest",
    "CreateSDResponse",
    "InstallTARequest",
    "InstallTAResponse",
]


cli = run_cli


def test_the_parametrized_list_is_what_profiles_lists() -> None:
    listed = [p["name"] for p in json.loads(cli("profiles", "--json").stdout)]
    assert sorted(listed) == profile_names() and len(listed) >= 13


@pytest.mark.parametrize("name", profile_names())
def test_session_over_every_profile(name: str) -> None:
    profile = load_profile(name)
    result = CliRunner().invoke(root, ["session", "--profile", name, "--payload-size", "700", "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert (summary["profile"], summary["protocol"], summary["encoding"], summary["scheme"]) == (
        name,
        profile.protocol,
        profile.encoding,
        profile.transport.scheme,
    )
    names = [m["name"] for m in summary["messages"]]
    directions = [m["direction"] for m in summary["messages"]]
    assert directions == ["tam->agent", "agent->tam"] * (len(names) // 2)
    assert all(m["size"] > 0 for m in summary["messages"])
    assert summary["total_message_bytes"] == sum(m["size"] for m in summary["messages"])
    if profile.protocol == "teep":
        assert names == TEEP_NAMES
        assert summary["installed"] == [{"component_id": [SESSION_TC[0].hex()], "sequence_number": 1}]
        update = summary["messages"][2]["size"]
        assert update > 700  # the payload travels inside the Update's SUIT envelope
    else:
        assert sorted(names) == sorted(OTRP_NAMES)
        assert summary["installed"] == [{"sd": "sd.sp.example", "ta": "sp.example.ta1", "size": 700}]


def test_json_messages_are_bigger_than_cbor_ones() -> None:
    """The wire really changes with the profile's encoding (JWS + base64url vs COSE + CBOR)."""
    sizes = {}
    for name in ("teep-cbor-http", "teep-json-http"):
        result = CliRunner().invoke(root, ["session", "--profile", name, "--payload-size", "100", "--json"])
        assert result.exit_code == 0, result.output
        sizes[name] = json.loads(result.output)["total_message_bytes"]
    assert sizes["teep-json-http"] > 1.3 * sizes["teep-cbor-http"]


def test_session_human_output_and_errors() -> None:
    run = cli("session", "--profile", "coap", "--payload-size", "50")
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith("session over coap (teep/cbor over coap): ok in ")
    for needle in ("QueryRequest", "Success", "total", "installed:", SESSION_TC[0].hex()):
        assert needle in run.stdout
    bad = cli("session", "--profile", "no-such-profile")
    assert bad.returncode == 2 and "unknown profile 'no-such-profile'" in bad.stderr


def test_tam_serve_and_agent_run_for_a_json_profile(tmp_path: Path) -> None:
    profile = "teep-json-http"
    world = make_world(tmp_path / "tam", tmp_path / "agents", 1, 900)
    with tam_process(profile, world.tam_dir) as (uri, _pid):
        assert uri.startswith("http://127.0.0.1:")
        run = cli("agent", "run", "--profile", profile, "--tam", uri, "--state", str(world.agent_dirs[0]))
        assert run.returncode == 0, run.stderr
        summary = json.loads(run.stdout)
        assert summary["installed"] == [{"component_id": [COMPONENT_ID[0].hex()], "sequence_number": 1}]
        # a CBOR Agent against the JSON TAM is refused (media type), not silently served
        mismatch = cli(
            "agent", "run", "--profile", "teep-cbor-http", "--tam", uri, "--state", str(world.agent_dirs[0]),
            "--timeout", "5",
        )  # fmt: skip
        assert mismatch.returncode == 2 and "406" in mismatch.stderr


def test_tam_serve_and_agent_run_for_an_otrp_profile(tmp_path: Path) -> None:
    profile = "otrp-cbor-coap"
    folder = tmp_path / "otrp"
    init = cli("otrp", "init", str(folder), "--key-type", "EC", "--ta-size", "333")
    assert init.returncode == 0, init.stderr
    proc = subprocess.Popen(
        [sys.executable, "-c", "from teep_coap.cli import main; main()", "tam", "serve", "--profile", profile,
         "--dir", str(folder / "tam")],  # the tam/ subfolder of the OTrP folder works too
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("TAM serving coap://127.0.0.1:") and f"(profile {profile})" in line
        uri = line.split()[2]
        run = cli("agent", "run", "--profile", profile, "--tam", uri, "--state", str(folder))
        assert run.returncode == 0, run.stderr
        summary = json.loads(run.stdout)
        assert summary["ok"] is True and summary["installed"] == {"sd.sp.example": {"sp.example.ta1": 333}}
    finally:
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    assert "TAM stopped: 1 sessions done, 0 failed" in err
    (folder / "policy.toml").write_text("")
    refused = cli(
        "tam", "serve", "--profile", profile, "--dir", str(folder), "--policy", str(folder / "policy.toml")
    )
    assert refused.returncode == 2 and "--db and --policy apply to TEEP profiles" in refused.stderr


def test_tam_serve_refuses_a_teep_folder_for_otrp(tmp_path: Path) -> None:
    world = make_world(tmp_path / "tam", tmp_path / "agents", 1, 10)
    run = cli("tam", "serve", "--profile", "otrp-json-http", "--dir", str(world.tam_dir))
    assert run.returncode == 2 and "not an OTrP folder" in run.stderr
    assert len(run.stderr.strip().splitlines()) == 1
