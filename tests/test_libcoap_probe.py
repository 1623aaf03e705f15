"""scripts/libcoap_probe: whole TEEP sessions through libcoap's C stack in front of the TAM engine.

The probe backs a figure of docs/scale.md (session 18); this keeps it runnable: both servers finish
every session, batched and one commit per request, and the script prints its ratio.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(240)
SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "libcoap_probe" / "compare.py"


@pytest.mark.parametrize("sync", ["0", "1"])
def test_the_probe_and_tam_serve_finish_every_session(sync: str) -> None:
    run = subprocess.run(
        [sys.executable, str(SCRIPT), "--sessions", "60", "--rounds", "1", "--devices", "60"],
        capture_output=True,
        text=True,
        timeout=200,
        env={**os.environ, "PROBE_SYNC": sync},
    )
    assert run.returncode == 0, run.stderr[-1500:]
    runs = re.findall(r"round 1 (tam serve|probe\s*): (\d+) ok, (\d+) failed", run.stdout)
    assert sorted(name.strip() for name, _, _ in runs) == ["probe", "tam serve"], run.stdout
    assert all((ok, failed) == ("60", "0") for _, ok, failed in runs), run.stdout
    calls = int(re.search(r"probe: (\d+) engine calls", run.stdout).group(1))  # type: ignore[union-attr]
    assert calls == (60 + 50) * 3  # warm-up and measured sessions, three engine calls each
    assert re.search(r"mean ratio \d+\.\d{3}", run.stdout)
