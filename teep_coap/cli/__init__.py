"""The `teep-coap` command.

Each area registers its commands in its own module under `teep_coap.cli` (imported when a command of it
is looked up, `teep_coap.cli.groups`); this module only runs the top-level group and turns deliberate
errors into one line on stderr and exit status 2.
"""

from __future__ import annotations

import sys
import warnings

import click

from teep_coap import __version__
from teep_coap.cli.groups import root
from teep_coap.errors import TeepCoapError

# The command modules are imported on demand: see `ROOT_COMMANDS` in teep_coap.cli.groups.


def main(argv: list[str] | None = None) -> None:
    """Entry point of the console script."""
    # aiocoap's DTLS transport warns on every close of a finished client session; it is noise for users.
    warnings.filterwarnings("ignore", message="DTLS module did not shut down", category=UserWarning)
    try:
        # Without standalone mode click returns the code of `ctx.exit(n)` instead of raising it.
        code = root.main(args=argv, prog_name="teep-coap", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        sys.exit(2)
    except TeepCoapError as exc:
        click.echo(f"teep-coap: error: {exc}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)
    if isinstance(code, int) and code != 0:
        sys.exit(code)


__all__ = ["__version__", "main", "root"]
