"""scripts/tam_instructions.py: the TAM's instructions per session under valgrind, the same from run
to run and from the same code run as another checkout; bad arguments refused."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import teep_coap

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "scripts" / "tam_instructions.py"

pytestmark = pytest.mark.timeout(300)


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=280, check=False
    )


@pytest.mark.skipif(shutil.which("valgrind") is None, reason="needs valgrind (scripts/setup.sh full)")
def test_the_count_per_session_does_not_drift_between_runs(tmp_path: Path) -> None:
    counts = []
    other = tmp_path / "checkout"  # the second run's TAM from a named checkout: a copy of this one
    shutil.copytree(REPO / "teep_coap", other / "teep_coap", ignore=shutil.ignore_patterns("__pycache__"))
    for extra in ((), ("--tam-code", str(other))):
        done = _run("--sessions", "40", "--concurrency", "2", "--json", *extra)
        assert done.returncode == 0, done.stdout[-1500:] + done.stderr[-1500:]
        figures = json.loads(done.stdout)
        assert figures["sessions"] == 40 and figures["profile"] == "coaps-psk"
        counts.append(figures["instructions_per_session"])
        # the TAM ran the code asked for (the checkout's root once shadowed `--tam-code`)
        expected = other / "teep_coap" if extra else Path(teep_coap.__path__[0])
        assert Path(figures["tam_package"]).resolve() == expected.resolve()
    # a whole coaps-psk session is millions of instructions (two signatures, three verifications)
    assert all(2e6 < c < 50e6 for c in counts), counts
    assert abs(counts[0] - counts[1]) / counts[0] < 0.01, counts  # time in this VM moves by 5-15 %


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (("--sessions", "0"), "at least 1"),
        (("--tam-code", "/nonexistent"), "no teep_coap package"),
    ],
)
def test_bad_arguments_are_refused(args: tuple[str, ...], said: str) -> None:
    done = _run(*args)
    assert done.returncode == 2 and said in done.stderr
