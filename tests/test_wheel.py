"""The wheel stands alone: scripts/wheel_check.sh builds it, installs it into a fresh virtualenv
outside the checkout and runs `teep-coap profiles` and `teep-coap demo` there.

.ci/run runs the script itself and deselects this test (`-m "not wheel"`) so the check runs once.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.wheel
@pytest.mark.slow
@pytest.mark.timeout(900)
def test_wheel_installs_and_runs_outside_the_checkout() -> None:
    done = subprocess.run(
        ["bash", str(REPO / "scripts" / "wheel_check.sh")],
        capture_output=True,
        text=True,
        timeout=880,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "wheel-check: ok" in done.stdout
    assert "coaps-psk" in done.stdout  # `teep-coap profiles` listed the shipped profiles by name
