"""The repository stands alone: no file points outside it, and what the README names exists."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# Built by concatenation so this file does not match itself. TEEP_SPEC_DIR is not listed: it is an
# opt-in override (tests against another copy of the vectors); the default is inside the repository.
OUTSIDE = ("../" + "shared", "DESIGN" + ".md", "NOTES" + ".md", "OTRP" + ".md")
SCANNED = ("teep_coap", "tests", "interop", "scripts", "docs", "examples")
SUFFIXES = {".py", ".md", ".toml", ".sh", ".js", ".json", ".c", ".pyi", ".txt", ".cfg"}


def _text_files() -> list[Path]:
    files = [REPO / "README.md", REPO / "Makefile", REPO / "pyproject.toml", REPO / ".ci" / "run"]
    for top in SCANNED:
        for path in (REPO / top).rglob("*"):
            if path.is_file() and path.suffix in SUFFIXES and "node_modules" not in path.parts:
                files.append(path)
    return files


def test_no_reference_outside_the_repository() -> None:
    hits = [
        f"{path.relative_to(REPO)}:{n}: {line.strip()}"
        for path in _text_files()
        if path.exists()
        for n, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1)
        if any(word in line for word in OUTSIDE)
    ]
    assert not hits, "\n".join(hits)


def test_readme_decode_example_names_an_existing_vector() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    paths = re.findall(r"teep-coap decode (\S+\.hex\.txt)", readme)
    assert paths and all((REPO / p).is_file() for p in paths)
