"""The console script starts and lists its command groups."""

import subprocess
import sys


def test_help_lists_groups() -> None:
    out = subprocess.run(
        [sys.executable, "-c", "from teep_coap.cli import main; main(['--help'])"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    for group in ("agent", "tam", "keys", "suit", "bench"):
        assert group in out
