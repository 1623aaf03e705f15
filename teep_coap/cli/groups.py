"""Command groups shared by the CLI modules (one place, so modules never import each other)."""

from __future__ import annotations

import functools
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
    group_class = type


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
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
