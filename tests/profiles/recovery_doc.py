"""The measured recovery tables of docs/engines.md, read by the tests that measure them: a test
asserts that every row it measures says exactly what it measured, so the doc cannot drift."""

from __future__ import annotations

from pathlib import Path

DOC = Path(__file__).resolve().parents[2] / "docs" / "engines.md"


def doc_table(name: str) -> dict[tuple[str, str], dict[str, str]]:
    """The Markdown table right after the line `<!-- name -->`: {(1st cell, 2nd cell): {header: cell}}."""
    lines = DOC.read_text(encoding="utf-8").splitlines()
    i = lines.index(f"<!-- {name} -->") + 1
    rows: list[list[str]] = []
    while i < len(lines) and lines[i].startswith("|"):
        rows.append([cell.strip() for cell in lines[i].strip().strip("|").split("|")])
        i += 1
    header, _rule, *body = rows
    table = {(r[0], r[1]): dict(zip(header, r, strict=True)) for r in body}
    assert len(table) == len(body), f"two rows of {name} have the same first two cells"
    return table
