"""Arrows point down (docs/design.md §1): no module imports a layer above its own.

Read from the source with `ast`, so lazy imports inside functions count too. `store` sits above
`protocol`: the engines declare what they need of persistence as ports (`teep_coap.protocol.ports`) and
`store` implements them. Allowed on purpose: `transport` → `security.certs` (TLS certificate files are
transport material; nothing there parses messages).

OTrP lives in its own package `teep_coap.otrp` with the same layers inside (otrp/model/,
otrp/encoding, otrp/security, otrp/protocol, otrp/profiles.py): an OTrP module of layer L may import
teep_coap's and OTrP's layers at or below L. The TEEP path (model … store) never imports OTrP; profiles,
bench and cli choose between the two protocols, so they may.
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


TEEP_PATH = {"model", "encoding", "security", "protocol", "transport", "store"}
OTRP_LAYERS = {"model", "encoding", "security", "protocol", "profiles"}


def _target_layer(module: str) -> str:
    """The layer a `teep_coap...` import reaches: `teep_coap.otrp.security.cose` is `security`."""
    parts = module.split(".")
    if len(parts) > 2 and parts[1] == "otrp":
        return parts[2]
    return parts[1] if len(parts) > 1 else ""


def _files(layer: str, root: Path) -> list[Path]:
    if (root / f"{layer}.py").exists():
        return [root / f"{layer}.py"]
    return sorted((root / layer).rglob("*.py")) if (root / layer).is_dir() else []


def _violations(layer: str, root: Path = PACKAGE, *, teep: bool = True) -> list[str]:
    """Upward imports of `layer` under `root`; `teep`: root is the TEEP side (which never imports OTrP)."""
    bad = []
    for path in _files(layer, root):
        for line, module, names in _imports(path):
            target = _target_layer(module)
            if teep and layer in TEEP_PATH and module.startswith("teep_coap.otrp"):
                bad.append(
                    f"{path.relative_to(root)}:{line} imports {module} (the TEEP path never imports OTrP)"
                )
                continue
            if layer == "transport" and target == "security":
                if module == "teep_coap.security.certs" or (
                    module == "teep_coap.security" and names == ["certs"]
                ):
                    continue
                bad.append(f"{path.relative_to(root)}:{line} imports {module}")
            elif target in FORBIDDEN[layer]:
                bad.append(f"{path.relative_to(root)}:{line} imports {module}")
    return bad


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_no_upward_import(layer: str) -> None:
    assert _violations(layer) == []


@pytest.mark.parametrize("layer", sorted(OTRP_LAYERS))
def test_no_upward_import_inside_otrp(layer: str) -> None:
    assert _files(layer, PACKAGE / "otrp"), f"otrp has no {layer} layer: update OTRP_LAYERS"
    assert _violations(layer, PACKAGE / "otrp", teep=False) == []


def test_every_otrp_module_is_in_a_layer() -> None:
    """A new otrp/ module outside the listed layers would escape the check above."""
    root = PACKAGE / "otrp"
    layered = {path for layer in OTRP_LAYERS for path in _files(layer, root)}
    assert set(root.rglob("*.py")) - layered == {root / "__init__.py"}


def test_the_check_sees_otrp_violations(tmp_path: Path) -> None:
    """The TEEP path importing OTrP, and OTrP's model importing its own security, are both caught."""
    (tmp_path / "protocol").mkdir()
    (tmp_path / "protocol" / "m.py").write_text("from teep_coap.otrp.model import OtrpError\n")
    assert _violations("protocol", tmp_path) == [
        "protocol/m.py:1 imports teep_coap.otrp.model (the TEEP path never imports OTrP)"
    ]
    assert _violations("protocol", tmp_path, teep=False) == []  # OTrP's protocol may use OTrP's model
    (tmp_path / "model.py").write_text("from teep_coap.otrp.security import cose\n")
    assert _violations("model", tmp_path, teep=False) == ["model.py:1 imports teep_coap.otrp.security"]


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
