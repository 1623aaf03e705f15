"""Arrows point down (docs/design.md §1): no module imports a layer above its own.

Read from the source with `ast`, so lazy imports inside functions count too. `store` sits above
`protocol`: the engines declare what they need of persistence as ports (`teep_coap.protocol.ports`) and
`store` implements them. Allowed on purpose: `transport` → `security.certs` (TLS certificate files are
transport material; nothing there parses messages).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "teep_coap"

FORBIDDEN: dict[str, set[str]] = {
    "model": {"encoding", "security", "protocol", "transport", "store", "profiles", "bench", "cli"},
    "encoding": {"security", "protocol", "transport", "store", "profiles", "bench", "cli"},
    "security": {"protocol", "transport", "store", "profiles", "bench", "cli"},
    "protocol": {"transport", "store", "profiles", "bench", "cli"},
    "transport": {"encoding", "protocol", "store", "profiles", "bench", "cli"},
    "store": {"transport", "profiles", "bench", "cli"},
    "profiles": {"bench", "cli"},
    "bench": {"cli"},
}


def _imports(path: Path) -> list[tuple[int, str, list[str]]]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("teep_coap"):
            found.append((node.lineno, node.module, [a.name for a in node.names]))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("teep_coap"):
                    found.append((node.lineno, alias.name, []))
    return found


def _violations(layer: str) -> list[str]:
    bad = []
    for path in sorted((PACKAGE / layer).rglob("*.py")):
        for line, module, names in _imports(path):
            parts = module.split(".")
            target = parts[1] if len(parts) > 1 else ""
            if layer == "transport" and target == "security":
                if module == "teep_coap.security.certs" or (
                    module == "teep_coap.security" and names == ["certs"]
                ):
                    continue
                bad.append(f"{path.relative_to(PACKAGE)}:{line} imports {module}")
            elif target in FORBIDDEN[layer]:
                bad.append(f"{path.relative_to(PACKAGE)}:{line} imports {module}")
    return bad


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_no_upward_import(layer: str) -> None:
    assert _violations(layer) == []


def test_the_check_sees_a_violation(tmp_path: Path) -> None:
    """The walker finds lazy imports inside functions (so an empty list above means something)."""
    sample = tmp_path / "m.py"
    sample.write_text("def f():\n    from teep_coap.profiles.schema import Profile\n    return Profile\n")
    assert _imports(sample) == [(2, "teep_coap.profiles.schema", ["Profile"])]


def test_component_store_satisfies_the_suit_processor_protocol(tmp_path: Path) -> None:
    """The processor's `ComponentStoreApi` is met by the real store, and a staged install commits."""
    from teep_coap.security.suit.store_api import ComponentStoreApi, StagedInstall
    from teep_coap.store.components import ComponentStore

    store: ComponentStoreApi = ComponentStore(tmp_path / "store")  # mypy checks this line's type
    store.commit([StagedInstall((b"tc",), b"image", b"envelope", 3, None)], [])
    entry = store.get((b"tc",))
    assert entry is not None and entry.sequence_number == 3 and store.image((b"tc",)) == b"image"
    assert store.manifest((b"tc",)) == b"envelope"
