"""Shared fixtures: where the working group's spec files are (tests/vectors/, tests/cddl/), and one
throwaway PostgreSQL server for the tests that need a real one."""

from __future__ import annotations

import itertools
import os
import shutil
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from teep_coap.store.throwaway_pg import postgres_binaries, throwaway_postgres

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


@pytest.fixture(scope="session")
def pg_server() -> Iterator[str]:
    """A throwaway PostgreSQL server (initdb + pg_ctl, loopback) for the whole test session; its URL.
    Tests make their own database on it (`new_pg_database`)."""
    if postgres_binaries() is None:
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) are not installed")
    with throwaway_postgres(durable=False) as url:
        yield url


_PG_DATABASES = itertools.count()


@pytest.fixture
def new_pg_database(pg_server: str) -> Callable[[str], str]:
    """`new_pg_database(name)`: a new empty database on the session's server (the name gets a
    number, so it is unique in the session); its SQLAlchemy URL."""

    def make(name: str) -> str:
        import psycopg  # the PostgreSQL driver, only where a test uses PostgreSQL

        unique = f"{name}_{next(_PG_DATABASES)}"
        plain = pg_server.replace("postgresql+psycopg://", "postgresql://")
        with psycopg.connect(plain, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{unique}"')
        return pg_server.rsplit("/", 1)[0] + "/" + unique

    return make
