"""The CLI's one lazy-loading place (teep_coap.cli.groups): `--help` stays light and lists the same text."""

from __future__ import annotations

import subprocess
import sys

import click
import pytest

from teep_coap.cli import root
from teep_coap.cli.groups import GROUP_MODULES, ROOT_COMMANDS, load_module


@pytest.mark.parametrize("name", sorted(ROOT_COMMANDS))
def test_root_summary_is_the_commands_own(name: str) -> None:
    """The summary `teep-coap --help` shows before importing a module is the command's own first line."""
    module, summary = ROOT_COMMANDS[name]
    load_module(module)
    cmd = root.commands[name]
    assert cmd.callback is not None and cmd.callback.__module__ == f"teep_coap.cli.{module}"
    for limit in (30, 45, 200):
        assert click.Command(name, help=summary).get_short_help_str(limit) == cmd.get_short_help_str(limit)


@pytest.mark.parametrize("group", sorted(GROUP_MODULES))
def test_each_group_finds_its_commands(group: str) -> None:
    ctx = click.Context(root)
    sub = root.get_command(ctx, group)
    assert isinstance(sub, click.Group) and sub.list_commands(ctx)


def test_help_imports_no_heavy_library() -> None:
    """`teep-coap --help` imports none of the CLI modules' libraries (the point of loading them lazily)."""
    code = (
        "import sys\n"
        "from teep_coap.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "heavy = [m for m in ('sqlalchemy', 'aiohttp', 'aiocoap', 'cwt', 'rich') if m in sys.modules]\n"
        "print('HEAVY', heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert "HEAVY []" in out.stdout, out.stdout[-300:]
    assert "session" in out.stdout and "tam" in out.stdout
