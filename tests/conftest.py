"""Shared fixtures: where the working group's spec files are (tests/vectors/, tests/cddl/)."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
# The working group's CDDL and example messages, copied into the repository with their sources named
# in each folder's README.md. TEEP_SPEC_DIR (a folder holding vectors/ and cddl/) overrides both, to
# run the suite against another copy (e.g. a newer editor's draft).
SPEC_DIR = Path(os.environ["TEEP_SPEC_DIR"]) if os.environ.get("TEEP_SPEC_DIR") else REPO / "tests"
VECTORS_DIR = SPEC_DIR / "vectors"
CDDL_FILE = SPEC_DIR / "cddl" / "teep-all.cddl"


def venv_tool(name: str) -> str | None:
    """Path of a console script installed next to this Python (the venv's bin/), else from PATH.

    `make test` runs `.venv/bin/python -m pytest` without activating the venv, so PATH alone may miss it.
    """
    beside = Path(sys.executable).parent / name
    return str(beside) if beside.exists() else shutil.which(name)


def read_hex_vector(name: str) -> bytes:
    """Bytes of `vectors/<name>.hex.txt`: everything after `#` on a line is a comment."""
    text = (VECTORS_DIR / f"{name}.hex.txt").read_text()
    return bytes.fromhex("".join("".join(line.split("#", 1)[0].split()) for line in text.splitlines()))


@pytest.fixture(scope="session")
def spec_dir() -> Path:
    if not VECTORS_DIR.is_dir():
        pytest.fail(f"vectors folder not found: {VECTORS_DIR} (check TEEP_SPEC_DIR, or unset it)")
    return SPEC_DIR


@pytest.fixture(scope="session")
def vectors_dir(spec_dir: Path) -> Path:
    return spec_dir / "vectors"


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """With TEEP_COAP_NO_SKIP=1 (set by .ci/run) a skipped test fails the run.

    Tests skip only when a real peer (PostgreSQL, curl, …) is missing; CI installs all of them, so a skip
    there means an install step is broken, not that the check may be left out.
    """
    if os.environ.get("TEEP_COAP_NO_SKIP") != "1":
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = reporter.stats.get("skipped", []) if reporter is not None else []
    if skipped:
        for rep in skipped:
            reporter.write_line(f"NOT ALLOWED IN CI: skipped {rep.nodeid}: {rep.longrepr}")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
