"""The TEEP Agent's installed Trusted Components, on disk, changed atomically.

Layout under `root`:
  index.json            the whole state: which component ids are installed, with sequence number,
                        image digest/size and the manifest that installed them
  images/<sha256>       image bytes, content-addressed
  manifests/<sha256>    SUIT envelope bytes, content-addressed
  .lock                 flock(2) target: one writer at a time (several processes may share a root)

A change writes new blobs first (temp file in the same folder, fsync, rename), then a new index
(temp file, fsync, os.replace, fsync of the folder), and only then deletes blobs no index refers to.
The index rename is the commit point: a crash before it leaves the old state, after it the new one,
never a mix; leftover blobs or temp files are swept by the next writer.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from teep_coap import crashpoints
from teep_coap.errors import TeepCoapError

ComponentId = tuple[bytes, ...]
_list = list  # `ComponentStore.list` shadows the builtin inside the class body
FaultHook = Callable[[str], None]

INDEX_FORMAT = 1
# Steps at which a fault hook is called (tests inject crashes there).
STEPS = ("blobs-written", "index-written", "index-replaced", "garbage-collected")


class ComponentStoreError(TeepCoapError):
    """The component store cannot do what was asked, or its files are damaged."""


class ComponentNotFound(ComponentStoreError):
    """No component with this id is installed."""


def _cid_json(cid: ComponentId) -> list[str]:
    return [p.hex() for p in cid]


def _cid_from_json(obj: Any) -> ComponentId:
    if not isinstance(obj, list) or not all(isinstance(p, str) for p in obj):
        raise ComponentStoreError("index: a component id is not a list of hex strings")
    try:
        return tuple(bytes.fromhex(p) for p in obj)
    except ValueError:
        raise ComponentStoreError("index: a component id element is not hex") from None


def _check_cid(cid: Sequence[bytes]) -> ComponentId:
    t = tuple(cid)
    if not all(isinstance(p, bytes) for p in t):
        raise ComponentStoreError("a component id is a sequence of byte strings")
    return t


@dataclass(frozen=True)
class StoreEntry:
    """One installed component."""

    component_id: ComponentId
    sequence_number: int
    image_digest: bytes  # SHA-256 of the image
    image_size: int
    manifest_digest: bytes  # SHA-256 of the SUIT envelope that installed it
    manifest_component_id: ComponentId | None
    installed_at: float

    def to_json(self) -> dict[str, Any]:
        return {
            "component_id": _cid_json(self.component_id),
            "sequence_number": self.sequence_number,
            "image_digest": self.image_digest.hex(),
            "image_size": self.image_size,
            "manifest_digest": self.manifest_digest.hex(),
            "manifest_component_id": None
            if self.manifest_component_id is None
            else _cid_json(self.manifest_component_id),
            "installed_at": self.installed_at,
        }

    @classmethod
    def from_json(cls, obj: Any) -> StoreEntry:
        try:
            mcid = obj["manifest_component_id"]
            return cls(
                component_id=_cid_from_json(obj["component_id"]),
                sequence_number=int(obj["sequence_number"]),
                image_digest=bytes.fromhex(obj["image_digest"]),
                image_size=int(obj["image_size"]),
                manifest_digest=bytes.fromhex(obj["manifest_digest"]),
                manifest_component_id=None if mcid is None else _cid_from_json(mcid),
                installed_at=float(obj["installed_at"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ComponentStoreError(f"index: damaged entry ({exc})") from None


@dataclass(frozen=True)
class Install:
    """One component to install in a `commit`."""

    component_id: ComponentId
    image: bytes
    envelope: bytes
    sequence_number: int
    manifest_component_id: ComponentId | None = None


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_atomic(path: Path, data: bytes) -> None:
    """Write via a temp file in the same folder, fsync, rename."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class ComponentStore:
    """Installed components under `root` (created if missing). Every method re-reads the index, so
    several instances (or processes) on one folder see each other's commits."""

    def __init__(self, root: str | os.PathLike[str], *, fault_hook: FaultHook | None = None) -> None:
        self.root = Path(root)
        self.fault_hook = fault_hook
        try:
            for sub in ("images", "manifests"):
                (self.root / sub).mkdir(parents=True, exist_ok=True)
            (self.root / ".lock").touch(exist_ok=True)
        except OSError as exc:
            raise ComponentStoreError(f"cannot use {self.root} as a component store: {exc}") from None
        with self._locked():
            self._sweep(self._read_index())

    # -- reading ---------------------------------------------------------------------------------

    @property
    def _index_path(self) -> Path:
        return self.root / "index.json"

    def _read_index(self) -> dict[ComponentId, StoreEntry]:
        try:
            text = self._index_path.read_text()
        except FileNotFoundError:
            return {}
        except OSError as exc:
            raise ComponentStoreError(f"cannot read {self._index_path}: {exc}") from None
        try:
            obj = json.loads(text)
        except ValueError:
            raise ComponentStoreError(f"{self._index_path} is not valid JSON (damaged store)") from None
        if (
            not isinstance(obj, dict)
            or obj.get("format") != INDEX_FORMAT
            or not isinstance(obj.get("components"), list)
        ):
            raise ComponentStoreError(f"{self._index_path}: unknown index format")
        entries = [StoreEntry.from_json(e) for e in obj["components"]]
        return {e.component_id: e for e in entries}

    def list(self) -> _list[StoreEntry]:
        """Installed components, sorted by component id."""
        return sorted(self._read_index().values(), key=lambda e: e.component_id)

    def get(self, component_id: Sequence[bytes]) -> StoreEntry | None:
        return self._read_index().get(_check_cid(component_id))

    def __contains__(self, component_id: object) -> bool:
        return isinstance(component_id, tuple) and self.get(component_id) is not None

    def sequence_number(self, component_id: Sequence[bytes]) -> int | None:
        entry = self.get(component_id)
        return None if entry is None else entry.sequence_number

    def find_by_manifest_id(self, manifest_component_id: Sequence[bytes]) -> _list[StoreEntry]:
        mcid = _check_cid(manifest_component_id)
        return [e for e in self.list() if e.manifest_component_id == mcid]

    def _blob(self, folder: str, digest: bytes, component_id: ComponentId) -> bytes:
        path = self.root / folder / digest.hex()
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise ComponentStoreError(f"{folder} blob of {component_id!r} missing: {exc}") from None
        if hashlib.sha256(data).digest() != digest:
            raise ComponentStoreError(f"{folder} blob of {component_id!r} is damaged (digest mismatch)")
        return data

    def image(self, component_id: Sequence[bytes]) -> bytes:
        """The installed image (its digest is checked on every read)."""
        entry = self._entry(component_id)
        return self._blob("images", entry.image_digest, entry.component_id)

    def manifest(self, component_id: Sequence[bytes]) -> bytes:
        """The SUIT envelope that installed the component."""
        entry = self._entry(component_id)
        return self._blob("manifests", entry.manifest_digest, entry.component_id)

    def _entry(self, component_id: Sequence[bytes]) -> StoreEntry:
        cid = _check_cid(component_id)
        entry = self._read_index().get(cid)
        if entry is None:
            raise ComponentNotFound(f"component {[p.hex() for p in cid]} is not installed")
        return entry

    # -- writing ---------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        try:
            fd = os.open(self.root / ".lock", os.O_RDWR)
        except OSError as exc:
            raise ComponentStoreError(f"cannot lock {self.root}: {exc}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _hook(self, step: str) -> None:
        if self.fault_hook is not None:
            self.fault_hook(step)
        if crashpoints.armed is not None:  # test hook: TEEP_COAP_CRASH_AT=store.<step>
            crashpoints.reached(f"store.{step}")

    def install(
        self,
        component_id: Sequence[bytes],
        image: bytes,
        envelope: bytes,
        sequence_number: int,
        *,
        manifest_component_id: Sequence[bytes] | None = None,
    ) -> StoreEntry:
        """Install or replace one component (anti-rollback is the SUIT processor's job)."""
        cid = _check_cid(component_id)
        mcid = None if manifest_component_id is None else _check_cid(manifest_component_id)
        self.commit([Install(cid, image, envelope, sequence_number, mcid)])
        return self._entry(cid)

    def remove(self, component_id: Sequence[bytes]) -> None:
        self.commit([], [_check_cid(component_id)])

    def commit(self, installs: Sequence[Install] = (), removals: Sequence[ComponentId] = ()) -> None:
        """Apply installs and removals together: all of them, or (after any failure) none."""
        with self._locked():
            current = self._read_index()
            new = dict(current)
            for cid in removals:
                if cid not in new:
                    raise ComponentNotFound(f"component {[p.hex() for p in cid]} is not installed")
                del new[cid]
            blobs: dict[Path, bytes] = {}
            now = time.time()
            for inst in installs:
                if not isinstance(inst.image, bytes) or not isinstance(inst.envelope, bytes):
                    raise ComponentStoreError("image and envelope must be bytes")
                if inst.sequence_number < 0:
                    raise ComponentStoreError("sequence number must be unsigned")
                img_d = hashlib.sha256(inst.image).digest()
                man_d = hashlib.sha256(inst.envelope).digest()
                blobs[self.root / "images" / img_d.hex()] = inst.image
                blobs[self.root / "manifests" / man_d.hex()] = inst.envelope
                new[inst.component_id] = StoreEntry(
                    inst.component_id,
                    inst.sequence_number,
                    img_d,
                    len(inst.image),
                    man_d,
                    inst.manifest_component_id,
                    now,
                )
            try:
                for path, data in blobs.items():
                    if not path.exists():
                        _write_atomic(path, data)
                for sub in ("images", "manifests"):
                    _fsync_dir(self.root / sub)
                self._hook("blobs-written")
                index = {
                    "format": INDEX_FORMAT,
                    "components": [e.to_json() for e in sorted(new.values(), key=lambda e: e.component_id)],
                }
                tmp = self.root / ".index.json.tmp"
                with open(tmp, "wb") as f:
                    f.write(json.dumps(index, indent=1).encode())
                    f.flush()
                    os.fsync(f.fileno())
                self._hook("index-written")
                os.replace(tmp, self._index_path)  # the commit point
                _fsync_dir(self.root)
            except OSError as exc:
                raise ComponentStoreError(f"cannot write the component store: {exc}") from None
            self._hook("index-replaced")
            self._sweep(new)
            self._hook("garbage-collected")

    def _sweep(self, index: dict[ComponentId, StoreEntry]) -> None:
        """Delete blobs and temp files no committed index refers to (called under the lock)."""
        keep = {("images", e.image_digest.hex()) for e in index.values()} | {
            ("manifests", e.manifest_digest.hex()) for e in index.values()
        }
        with contextlib.suppress(FileNotFoundError):
            (self.root / ".index.json.tmp").unlink()
        for sub in ("images", "manifests"):
            for path in (self.root / sub).iterdir():
                if (sub, path.name) not in keep:
                    with contextlib.suppress(FileNotFoundError):
                        path.unlink()
