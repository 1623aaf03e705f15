"""Command groups shared by the CLI modules (one place, so modules never import each other)."""

from __future__ import annotations

import functools
import importlib
import logging
import sys
from typing import Any

import click

from teep_coap import __version__


def configure_logging(verbose: int, quiet: bool) -> None:
    """-q: errors only; -v: INFO; -vv: DEBUG (aiocoap included). Without either, logging is untouched."""
    if not verbose and not quiet:
        return
    level = logging.ERROR if quiet else logging.DEBUG if verbose > 1 else logging.INFO
    logging.basicConfig(
        level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr, force=True
    )
    logging.getLogger("coap").setLevel(
        logging.DEBUG if verbose > 1 else logging.ERROR if quiet else logging.WARNING
    )


def setup_logging(verbose: int, quiet: bool) -> None:
    """For long-running commands (servers, `agent run`): INFO with timestamps unless -q, unlike
    `configure_logging`, which leaves one-shot commands silent without -v."""
    level = logging.WARNING if quiet else logging.INFO
    logging.basicConfig(
        level=logging.DEBUG if verbose > 1 else level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # aiocoap reports every retransmission and shutdown detail at WARNING; keep them for -v.
    logging.getLogger("coap").setLevel(
        logging.DEBUG if verbose > 1 else logging.WARNING if verbose else logging.ERROR
    )
    logging.getLogger("coap-server").setLevel(logging.getLogger("coap").level)


def parse_bind(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise click.BadParameter(f"expected HOST:PORT, got {text!r}")
    host = host.strip("[]")
    if int(port) > 65535:
        raise click.BadParameter(f"port out of range: {port}")
    return host, int(port)


class Command(click.Command):
    """Every command takes -v/--verbose and -q/--quiet; those that do not define them get them here."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        opts = {o for p in self.params for o in getattr(p, "opts", [])}
        self._added: list[str] = []
        if "-v" not in opts and "--verbose" not in opts:
            self.params.append(
                click.Option(["-v", "--verbose"], count=True, help="More logging (-vv: debug).")
            )
            self._added.append("verbose")
        if "-q" not in opts and "--quiet" not in opts:
            self.params.append(click.Option(["-q", "--quiet"], is_flag=True, help="Only errors on stderr."))
            self._added.append("quiet")

    def invoke(self, ctx: click.Context) -> Any:
        if self._added:
            verbose = ctx.params.pop("verbose", 0) if "verbose" in self._added else 0
            quiet = ctx.params.pop("quiet", False) if "quiet" in self._added else False
            configure_logging(verbose, quiet)
        return super().invoke(ctx)


class Group(click.Group):
    """Commands made from a group are `Command`s; groups made from it are `Group`s."""

    command_class = Command
    group_class: type[click.Group] | type[type] | None = type


# The one lazy-loading place of the CLI. Each CLI module imports what it needs at module level; the groups
# import a module only when one of its commands is looked up. Measured with `/usr/bin/time`, 10 runs of
# `teep-coap --help` each (2 cores): 0.05 s with this lazy loading; 0.34-0.35 s with the former imports
# inside functions; 0.9-1.1 s with module-level imports and every CLI module imported up front
# (SQLAlchemy, aiohttp, aiocoap, cwt, rich). The root commands below are listed by the summaries kept
# here; tests/test_cli_lazy.py checks each summary is its command's own.
ROOT_COMMANDS: dict[str, tuple[str, str]] = {
    "certs": (
        "http",
        "X.509 for HTTPS: a project CA, a server certificate for loopback, an optional client certificate.",
    ),
    "decode": ("codec", "Decode a TEEP message (raw CBOR, hex text, or COSE-wrapped) and print it as JSON."),
    "demo": (
        "demo",
        "Install one Trusted Component over TEEP/CoAP/DTLS-PSK on loopback, showing every layer's bytes.",
    ),
    "encode": ("codec", "Encode the JSON form of a TEEP message (as `decode` prints it) into CBOR bytes."),
    "gateway": (
        "gateway",
        "A TEEP gateway: devices over CoAP (coaps-psk, OSCORE), the TAM over HTTP(S) or CoAP.",
    ),
    "profiles": (
        "session",
        "List the profiles (protocol × encoding × transport × security) that --profile NAME finds.",
    ),
    "session": (
        "session",
        "One complete provisioning session over ANY profile, on loopback, in temporary folders.",
    ),
    "sign": (
        "keys",
        "Wrap a TEEP message (raw CBOR or hex text) in COSE_Sign1 (one --key) or COSE_Sign (several).",
    ),
    "verify": ("keys", "Verify a COSE_Sign1/COSE_Sign TEEP message; print the message as JSON."),
}
# The CLI module that registers the commands of each group below.
GROUP_MODULES: dict[str, str] = {
    "agent": "agent",
    "bench": "bench",
    "check": "check",
    "keys": "keys",
    "otrp": "otrp",
    "suit": "suit",
    "tam": "tam",
}


def load_module(name: str) -> None:
    """Import `teep_coap.cli.NAME`, whose decorators register its commands on the groups."""
    importlib.import_module(f"teep_coap.cli.{name}")


class LazyGroup(Group):
    """A group of `GROUP_MODULES` whose commands come from their CLI module, imported on first look-up."""

    def _load(self) -> None:
        if self.name in GROUP_MODULES:
            load_module(GROUP_MODULES[self.name])

    def list_commands(self, ctx: click.Context) -> list[str]:
        self._load()
        return super().list_commands(ctx)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        self._load()
        return super().get_command(ctx, cmd_name)


class RootGroup(Group):
    """The `teep-coap` group: root commands of `ROOT_COMMANDS` are imported when run or asked for help."""

    group_class: type[click.Group] | type[type] | None = LazyGroup

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(self.commands) | set(ROOT_COMMANDS))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in ROOT_COMMANDS:
            load_module(ROOT_COMMANDS[cmd_name][0])
        return super().get_command(ctx, cmd_name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """As click's, but a root command not imported yet is listed by its summary in `ROOT_COMMANDS`."""
        names = self.list_commands(ctx)
        limit = formatter.width - 6 - max(len(name) for name in names)
        rows = []
        for name in names:
            cmd = self.commands.get(name) or click.Command(name, help=ROOT_COMMANDS[name][1])
            if not cmd.hidden:
                rows.append((name, cmd.get_short_help_str(limit)))
        with formatter.section("Commands"):
            formatter.write_dl(rows)


def load_all() -> None:
    """Import every CLI module (for tools that walk the whole command tree)."""
    for module in sorted({m for m, _ in ROOT_COMMANDS.values()} | set(GROUP_MODULES.values())):
        load_module(module)


@click.group(cls=RootGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="teep-coap")
def root() -> None:
    """TEEP and OTrP over CoAP (DTLS, OSCORE) and HTTP(S): messages, keys, SUIT, TAM and Agent."""


@root.group()
def keys() -> None:
    """Generate and inspect signing keys (COSE_Key, PEM, JWK; kid = RFC 9679 thumbprint)."""


@root.group()
def suit() -> None:
    """Build and inspect SUIT envelopes that carry Trusted Components."""


@root.group()
def agent() -> None:
    """The TEEP Agent (simulated TEE) and its Broker."""


@root.group()
def tam() -> None:
    """The Trusted Application Manager."""


@root.group()
def bench() -> None:
    """Benchmarks: codec, crypto, engine, sessions, sizes, hostile."""


@root.group()
def otrp() -> None:
    """The Open Trust Protocol (OTrP) with JSON/JOSE and its CBOR/COSE mapping."""


@root.group()
def check() -> None:
    """Conformance checks against any TAM or Agent (each names its draft section; --json for a report)."""


def json_is_default(func: Any) -> Any:
    """`--json` on a command whose output is JSON anyway, so every command that prints a result takes it."""

    @click.option("--json", "_json_flag", is_flag=True, help="Print JSON (this command's output always is).")
    @functools.wraps(func)
    def wrapper(*args: Any, _json_flag: bool = False, **kwargs: Any) -> Any:
        return func(*args, **kwargs)

    return wrapper
