"""Shared fixtures: where the working group's spec files are."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SPEC_DIR = Path(os.environ.get("TEEP_SPEC_DIR", REPO.parent / "shared" / "spec"))
VECTORS_DIR = SPEC_DIR / "vectors"
CDDL_FILE = SPEC_DIR / "cddl" / "teep-all.cddl"


def read_hex_vector(name: str) -> bytes:
    """Bytes of `vectors/<name>.hex.txt`: everything after `#` on a line is a comment."""
    text = (VECTORS_DIR / f"{name}.hex.txt").read_text()
    return bytes.fromhex("".join("".join(line.split("#", 1)[0].split()) for line in text.splitlines()))


@pytest.fixture(scope="session")
def spec_dir() -> Path:
    if not SPEC_DIR.is_dir():
        pytest.fail(f"spec folder not found at {SPEC_DIR}; set TEEP_SPEC_DIR")
    return SPEC_DIR


@pytest.fixture(scope="session")
def vectors_dir(spec_dir: Path) -> Path:
    return spec_dir / "vectors"
