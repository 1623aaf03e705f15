"""Every command takes -v/-q, every command that prints a result takes --json, and --json gives JSON."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import click

from teep_coap.cli import root

# Commands whose output is not a result: bytes (sign, encode), a server's log (serve), a show (demo).
NO_JSON = {"sign", "encode", "demo", "tam serve", "otrp serve", "gateway serve"}
CLI = [sys.executable, "-c", "from teep_coap.cli import main; main()"]


def commands() -> dict[str, click.Command]:
    found: dict[str, click.Command] = {}

    ctx = click.Context(root)

    def walk(cmd: click.Command, path: list[str]) -> None:
        if isinstance(cmd, click.Group):
            for name in cmd.list_commands(ctx):  # the groups import their CLI modules on demand
                sub = cmd.get_command(ctx, name)
                assert sub is not None, name
                walk(sub, [*path, name])
        else:
            found[" ".join(path)] = cmd

    walk(root, [])
    return found


def options(cmd: click.Command) -> set[str]:
    return {o for p in cmd.params for o in getattr(p, "opts", [])}


def test_every_command_has_verbose_quiet_and_json() -> None:
    all_commands = commands()
    assert len(all_commands) > 35
    for name, cmd in all_commands.items():
        opts = options(cmd)
        assert {"-v", "--verbose", "-q", "--quiet"} <= opts, name
        if name not in NO_JSON:
            assert "--json" in opts, name
    assert {"agent run", "check tam", "check agent", "session"} <= set(all_commands)
    assert {"--psk-hex", "--psk-identity", "--pcap"} <= options(all_commands["agent run"])


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=60, check=False)


def test_json_is_json(tmp_path: Path) -> None:
    generated = run("keys", "generate", "--out", str(tmp_path / "k"), "--json", "-q")
    assert generated.returncode == 0, generated.stderr
    doc = json.loads(generated.stdout)
    assert len(doc["kid"]) == 64 and Path(doc["files"]["public_pem"]).is_file()
    certs = run("certs", "generate", "--out", str(tmp_path / "c"), "--json")
    assert certs.returncode == 0, certs.stderr
    server = json.loads(certs.stdout)["files"][1]
    shown = json.loads(run("certs", "show", server, "--json").stdout)
    assert "subject_alt_names" in shown
    # a command whose output is JSON anyway takes --json too
    listed = run("tam", "init", "--dir", str(tmp_path / "tam"), "--json")
    assert listed.returncode == 0 and isinstance(json.loads(listed.stdout), dict)


def test_verbose_logs_and_quiet_silences(tmp_path: Path) -> None:
    loud = run("session", "--profile", "coap", "--payload-size", "10", "-v")
    assert loud.returncode == 0 and "INFO" in loud.stderr
    quiet = run("session", "--profile", "coap", "--payload-size", "10", "-q")
    assert quiet.returncode == 0 and "INFO" not in quiet.stderr
