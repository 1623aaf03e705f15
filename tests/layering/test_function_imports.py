"""Imports sit at module level (issue 13), except where a measured reason keeps them in a function.

A function-level import hides a module's dependencies from the reader and from the layering tests,
and an import of a name the module also imports at top level silently shadows it for the whole
function (a bug this test found when the imports were hoisted).
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "teep_coap"

# The reasons, measured on 2026-12-05 (2-core machine):
# - cli/ has none: its modules import at module level and are themselves imported on demand in one
#   place (cli/groups.py, figures there and in docs/design.md).
# - transport/coap/aiocoap_compat/dtls.py: DTLSSocket (aiocoap's tinydtls transports) is optional
#   at run time; without it `apply_dtls_fixes()` returns False instead of failing the import.
# - profiles/runtime.py: the TAM's store (SQLAlchemy) and the OTrP package load only where used; at
#   module level they made a device's `agent run` start-up 0.9 s of CPU instead of 0.35 s.
LAZY_DIRS: tuple[str, ...] = ()
LAZY_FILES = {
    "transport/coap/aiocoap_compat/dtls.py": 5,
    "profiles/runtime.py": 4,
    "profiles/stack.py": 3,  # the HTTP binding (aiohttp: start-up CPU of every Agent) only when used
    "transport/component_cache.py": 1,  # aiohttp likewise
    "store/tam_tx.py": 1,  # psycopg and libpq (PostgreSQL's fast path): 9 MiB RSS for every SQLite TAM
    "bench/lean_dtls.py": 1,  # DTLSSocket, optional like in aiocoap_compat/dtls.py: only a coaps run needs it
}


def _function_imports(tree: ast.Module) -> list[ast.Import | ast.ImportFrom]:
    found: list[ast.Import | ast.ImportFrom] = []
    for func in ast.walk(tree):
        if isinstance(func, ast.FunctionDef | ast.AsyncFunctionDef):
            found += [n for n in ast.walk(func) if isinstance(n, ast.Import | ast.ImportFrom)]
    return found


def _bound(node: ast.Import | ast.ImportFrom) -> set[str]:
    return {(a.asname or a.name).split(".")[0] for a in node.names}


def test_imports_are_at_module_level_unless_measured() -> None:
    counts: dict[str, int] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).as_posix()
        if rel.split("/")[0] in LAZY_DIRS:
            continue
        n = len(_function_imports(ast.parse(path.read_text(encoding="utf-8"))))
        if n > LAZY_FILES.get(rel, 0):
            counts[rel] = n
    assert counts == {}, f"imports inside functions without a measured reason: {counts}"


def test_no_function_import_shadows_a_module_import() -> None:
    shadowing: list[str] = []
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        top: set[str] = set()
        for node in tree.body:
            if isinstance(node, ast.Import | ast.ImportFrom):
                top |= _bound(node)
        for node in _function_imports(tree):
            for name in _bound(node) & top:
                shadowing.append(f"{path.relative_to(PACKAGE)}:{node.lineno} {name}")
    assert shadowing == []
