"""`teep-coap tam prune` as a user runs it (a subprocess per command) on a `tam init` folder's SQLite
file and, with --db, on a real PostgreSQL: the dry run's counts, what it deletes, its batches, and
the one-line error for a duration that makes no sense."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from teep_coap.store.tam_db import TamStore
from teep_coap.store.tamdir import init_tam_dir, load_tam_dir

DAY = 86400.0
CLI = [sys.executable, "-c", "from teep_coap.cli import main; main()"]


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False)


def _fill(store: TamStore) -> dict[str, Any]:
    """Two sessions that ended 40 days ago (3 audit rows, 1 answered request each), one that ended
    yesterday, one opened 40 days ago and never ended, a refused message's audit row 40 days ago."""
    now = time.time()
    ids: dict[str, Any] = {"old": []}
    for i in range(2):
        sid = store.start_session(now - 40 * DAY + i, device_id=None, transport_identity=None)
        store.audit(sid, now - 40 * DAY + i, "send-query-request")
        store.add_outstanding(
            session_id=sid, device_id=None, kind="query", token=bytes([i]), challenge=None,
            now=now - 40 * DAY, lifetime=60, cap=10, answered=True,
        )  # fmt: skip
        store.end_session(sid, now - 40 * DAY + i + 5, "success")
        ids["old"].append(sid)
    ids["recent"] = store.start_session(now - DAY, device_id=None, transport_identity=None)
    store.end_session(ids["recent"], now - DAY + 5, "success")
    ids["open"] = store.start_session(now - 40 * DAY, device_id=None, transport_identity=None)
    store.audit(None, now - 40 * DAY, "refused", "old")
    return ids


@pytest.fixture
def tam_dir(tmp_path: Path) -> Path:
    init_tam_dir(tmp_path / "tam", algs=("esp256",))
    return tmp_path / "tam"


def test_dry_run_then_prune(tam_dir: Path) -> None:
    _config, store = load_tam_dir(tam_dir)
    ids = _fill(store)
    before = store.snapshot()
    dry = run("tam", "prune", "--dir", str(tam_dir), "--older-than", "30d", "--dry-run", cwd=tam_dir.parent)
    assert dry.returncode == 0, dry.stderr
    doc = json.loads(dry.stdout)
    assert doc["older_than"] == "30d" and doc["would_delete"] == {"sessions": 2, "audit": 7, "outstanding": 2}
    assert store.snapshot() == before  # a dry run deletes nothing
    done = run(
        "tam", "prune", "--dir", str(tam_dir), "--older-than", "30d", "--batch", "1", cwd=tam_dir.parent
    )
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert doc["deleted"] == {"sessions": 2, "audit": 7, "outstanding": 2}
    assert doc["batches"] == 3  # one session per batch; the third finds nothing more
    assert [s[0] for s in store.sessions()] == sorted([ids["recent"], ids["open"]])
    assert {a[0] for a in store.audit_log()} == {ids["recent"], ids["open"]}
    assert store.outstanding() == []
    again = run("tam", "prune", "--dir", str(tam_dir), "--older-than", "30d", cwd=tam_dir.parent)
    assert json.loads(again.stdout)["deleted"] == {"sessions": 0, "audit": 0, "outstanding": 0}
    store.close()


@pytest.mark.parametrize(
    ("duration", "says"),
    [
        ("30x", "'30x' is not a duration; write a number and a unit (s, m, h, d, w), e.g. 30d or 12h"),
        ("30", "'30' has no unit; write e.g. 30d for days or 30h for hours"),
        ("0d", "'0d' is no time at all; give a duration above zero, e.g. 30d"),
        ("-5d", "'-5d' is not a duration; write a number and a unit (s, m, h, d, w), e.g. 30d or 12h"),
    ],
)
def test_a_nonsense_duration_is_one_line_and_deletes_nothing(tam_dir: Path, duration: str, says: str) -> None:
    _config, store = load_tam_dir(tam_dir)
    _fill(store)
    before = store.snapshot()
    proc = run("tam", "prune", "--dir", str(tam_dir), "--older-than", duration, cwd=tam_dir.parent)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.splitlines() == [f"teep-coap: error: --older-than: {says}"], proc.stderr
    assert store.snapshot() == before
    store.close()


def test_help_says_what_stays_and_how_to_automate(tam_dir: Path) -> None:
    proc = run("tam", "prune", "--help", cwd=tam_dir.parent)
    assert proc.returncode == 0
    text = " ".join(proc.stdout.split())
    assert "--older-than DURATION" in text and "--dry-run" in text and "--db URL" in text
    assert "Open sessions, devices, their components and the catalog stay" in text
    assert 'keep-history = "90d"' in text


def test_db_option_prunes_a_postgresql_database(tam_dir: Path, new_pg_database: Callable[[str], str]) -> None:
    url = new_pg_database("prune_cli")
    store = TamStore(url)
    ids = _fill(store)
    proc = run("tam", "prune", "--dir", str(tam_dir), "--older-than", "4w", "--db", url, cwd=tam_dir.parent)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["deleted"] == {"sessions": 2, "audit": 7, "outstanding": 2}
    assert [s[0] for s in store.sessions()] == sorted([ids["recent"], ids["open"]])
    store.close()
