"""The Agent's component store: contents, restart, and atomicity under injected crashes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from teep_coap.store.components import STEPS, ComponentNotFound, ComponentStore, ComponentStoreError, Install

A = (b"TEEP-Device", b"SecureFS", b"\x01" * 16, b"ta")
B = (b"TEEP-Device", b"SecureFS", b"\x02" * 16, b"ta")
MA = (*A[:3], b"suit")


def files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_install_get_list_remove(tmp_path: Path) -> None:
    s = ComponentStore(tmp_path)
    assert s.list() == [] and s.get(A) is None and s.sequence_number(A) is None
    e = s.install(A, b"image-a", b"envelope-a", 3, manifest_component_id=MA)
    assert e.sequence_number == 3 and e.image_size == 7 and e.manifest_component_id == MA
    s.install(B, b"image-b", b"envelope-b", 1)
    assert [x.component_id for x in s.list()] == [A, B]
    assert s.image(A) == b"image-a" and s.manifest(A) == b"envelope-a"
    assert s.find_by_manifest_id(MA) == [s.get(A)]
    s.install(A, b"image-a2", b"envelope-a2", 4)
    assert s.image(A) == b"image-a2" and s.sequence_number(A) == 4
    s.remove(A)
    assert s.get(A) is None and A not in s and B in s
    with pytest.raises(ComponentNotFound):
        s.remove(A)
    with pytest.raises(ComponentNotFound):
        s.image(A)
    # old blobs are garbage-collected: only B's image and envelope remain
    assert sorted(p.name for p in (tmp_path / "images").iterdir()) == [e.image_digest.hex() for e in s.list()]
    assert len(list((tmp_path / "manifests").iterdir())) == 1


def test_survives_restart(tmp_path: Path) -> None:
    s = ComponentStore(tmp_path)
    s.install(A, b"image-a", b"env", 7)
    s2 = ComponentStore(tmp_path)
    assert s2.image(A) == b"image-a" and s2.sequence_number(A) == 7
    # a second instance sees the first one's later commits
    s.install(B, b"b", b"env-b", 1)
    assert s2.get(B) is not None


def test_identical_images_share_one_blob(tmp_path: Path) -> None:
    s = ComponentStore(tmp_path)
    s.commit([Install(A, b"same", b"e1", 1), Install(B, b"same", b"e2", 1)])
    assert len(list((tmp_path / "images").iterdir())) == 1
    s.remove(A)
    assert s.image(B) == b"same"


def test_damage_is_detected(tmp_path: Path) -> None:
    s = ComponentStore(tmp_path)
    e = s.install(A, b"image-a", b"env", 1)
    (tmp_path / "images" / e.image_digest.hex()).write_bytes(b"evil")
    with pytest.raises(ComponentStoreError, match="damaged"):
        s.image(A)
    (tmp_path / "index.json").write_text("{not json")
    with pytest.raises(ComponentStoreError, match="not valid JSON"):
        s.list()
    (tmp_path / "index.json").write_text(json.dumps({"format": 99, "components": []}))
    with pytest.raises(ComponentStoreError, match="format"):
        ComponentStore(tmp_path)


def test_batch_commit_is_all_or_nothing(tmp_path: Path) -> None:
    s = ComponentStore(tmp_path)
    s.install(A, b"a", b"ea", 1)
    before = files(tmp_path)
    with pytest.raises(ComponentNotFound):
        s.commit([Install(B, b"b", b"eb", 1)], removals=[(b"nope",)])
    assert files(tmp_path) == before


class Crash(Exception):
    pass


@pytest.mark.parametrize("step", STEPS)
def test_exception_at_each_step_leaves_old_or_new_state(tmp_path: Path, step: str) -> None:
    s = ComponentStore(tmp_path)
    s.install(A, b"old image", b"old envelope", 1)

    def hook(at: str) -> None:
        if at == step:
            raise Crash(at)

    crashing = ComponentStore(tmp_path, fault_hook=hook)
    with pytest.raises(Crash):
        crashing.install(A, b"new image", b"new envelope", 2)
    after = ComponentStore(tmp_path)  # "restart"
    committed = STEPS.index(step) >= STEPS.index("index-replaced")
    expect = (b"new image", b"new envelope", 2) if committed else (b"old image", b"old envelope", 1)
    assert (after.image(A), after.manifest(A), after.sequence_number(A)) == expect
    # restart swept what the crash left behind: exactly the blobs the index refers to
    entries = after.list()
    assert sorted(p.name for p in (tmp_path / "images").iterdir()) == sorted(
        e.image_digest.hex() for e in entries
    )
    assert not (tmp_path / ".index.json.tmp").exists()


CHILD = textwrap.dedent(
    """
    import os, signal, sys
    from teep_coap.store.components import ComponentStore
    root, step = sys.argv[1], sys.argv[2]
    def hook(at):
        if at == step:
            os.kill(os.getpid(), signal.SIGKILL)
    s = ComponentStore(root, fault_hook=hook)
    s.install((b"TEEP-Device", b"SecureFS", b"\\x01" * 16, b"ta"), b"new image" * 1000, b"new envelope", 2)
    """
)


@pytest.mark.parametrize("step", STEPS)
def test_killed_process_leaves_old_or_new_state(tmp_path: Path, step: str) -> None:
    s = ComponentStore(tmp_path)
    s.install(A, b"old image", b"old envelope", 1)
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    p = subprocess.run([sys.executable, "-c", CHILD, str(tmp_path), step], env=env, timeout=60)
    assert p.returncode == -signal.SIGKILL
    after = ComponentStore(tmp_path)
    image, seq = after.image(A), after.sequence_number(A)
    committed = STEPS.index(step) >= STEPS.index("index-replaced")
    assert (image, seq) == ((b"new image" * 1000, 2) if committed else (b"old image", 1))


def test_unusable_root_is_a_typed_error(tmp_path: Path) -> None:
    f = tmp_path / "file"
    f.write_bytes(b"")
    with pytest.raises(ComponentStoreError):
        ComponentStore(f / "sub")
