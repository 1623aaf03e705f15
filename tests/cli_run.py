"""`teep-coap ARGS` in a child process, as a user runs it: how the tests call the CLI."""

from __future__ import annotations

import subprocess
import sys


def run_cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", "from teep_coap.cli import main; main()", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
