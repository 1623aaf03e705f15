"""scripts/bench_against.sh: an earlier commit checked out beside this tree, `bench sessions` run
from each in turns, and the ratio of the TAM's CPU per session per pair; bad arguments refused."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "scripts" / "bench_against.sh"

pytestmark = pytest.mark.timeout(240)


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=200, check=False
    )


def _git_checkout() -> bool:
    done = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, check=False)
    return done.returncode == 0 and (shutil.which("cc") or shutil.which("gcc")) is not None


@pytest.mark.skipif(not _git_checkout(), reason="needs a git checkout of the project and a C compiler")
def test_two_pairs_against_this_very_commit_print_four_runs_and_the_ratios() -> None:
    done = _run("HEAD", "2", "--", "--profile", "coap", "--devices", "3", "--concurrency", "1")
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    runs = re.findall(r"^(rev|head) ([0-9.]+) ([0-9.]+) \S+ 0 ", done.stdout, re.M)
    assert [side for side, *_ in runs] == ["rev", "head", "head", "rev"]  # turns swap each pair
    ratios = re.search(r"by pair: ([0-9.]+), ([0-9.]+)\n", done.stdout)
    assert ratios is not None
    by_side = {(i // 2, side): float(ms) for i, (side, ms, _rate) in enumerate(runs)}
    for pair in (0, 1):
        assert float(ratios.group(pair + 1)) == pytest.approx(
            by_side[pair, "head"] / by_side[pair, "rev"], abs=0.002
        )
    worktrees = subprocess.run(["git", "-C", str(REPO), "worktree", "list"], capture_output=True, text=True)
    assert "teep-coap-against" not in worktrees.stdout  # the checkout of REV is gone again


def test_a_name_that_is_no_commit_and_a_bad_count_are_refused() -> None:
    done = _run("no-such-commit-here")
    assert done.returncode == 2 and "'no-such-commit-here' is not a commit of this repository" in done.stderr
    done = _run("HEAD", "two")
    assert done.returncode == 2 and "PAIRS must be a positive whole number, not 'two'" in done.stderr
