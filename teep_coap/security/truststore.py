"""Whom a TAM, an Agent or a Verifier accepts: trusted public keys indexed by kid.

A trust store is built from a folder of public key files (PEM, COSE_Key, JWK) or X.509 certificates
(only the public key is taken: TEEP identifies peers by the RFC 9679 thumbprint of the key, not by a
certificate chain), or in code with `add()`. Several files of the same key collapse into one entry.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from pathlib import Path

from teep_coap.security.errors import KeyFileError
from teep_coap.security.keys import VerifyingKey, load_verifying_key

# Files that are never keys (editor and VCS leftovers, notes).
_SKIP_SUFFIXES = {".md", ".txt", ".swp", ".bak", ".orig"}


class TrustStore:
    """kid -> trusted `VerifyingKey` (several keys may share a kid only if they differ in alg)."""

    def __init__(self, keys: Iterable[VerifyingKey] = ()) -> None:
        self._by_kid: dict[bytes, list[VerifyingKey]] = {}
        for key in keys:
            self.add(key)

    @classmethod
    def coerce(cls, trust: TrustStore | VerifyingKey | Iterable[VerifyingKey]) -> TrustStore:
        """A store from what callers pass as "trust": a store (as is), one key, or several keys."""
        if isinstance(trust, TrustStore):
            return trust
        if isinstance(trust, VerifyingKey):
            return cls((trust,))
        return cls(trust)

    def add(self, key: VerifyingKey) -> None:
        """Trust `key` (idempotent)."""
        bucket = self._by_kid.setdefault(key.kid, [])
        if key not in bucket:
            bucket.append(key)

    def remove(self, kid: bytes) -> None:
        """Stop trusting every key with this kid."""
        self._by_kid.pop(kid, None)

    @classmethod
    def from_dir(cls, folder: str | os.PathLike[str], *, strict: bool = True) -> TrustStore:
        """Load every file in `folder` (not recursive). With `strict`, an unreadable file is an error
        (a trust store that silently drops a key is worse than one that refuses to start)."""
        path = Path(folder)
        if not path.is_dir():
            raise KeyFileError(f"trust store {path} is not a folder")
        store = cls()
        for entry in sorted(path.iterdir()):
            if not entry.is_file() or entry.name.startswith(".") or entry.suffix in _SKIP_SUFFIXES:
                continue
            try:
                store.add(load_verifying_key(entry))
            except KeyFileError:
                if strict:
                    raise
        return store

    @classmethod
    def from_paths(cls, paths: Iterable[str | os.PathLike[str]]) -> TrustStore:
        """Trust the keys in these files and folders."""
        store = cls()
        for item in paths:
            if Path(item).is_dir():
                for key in cls.from_dir(item):
                    store.add(key)
            else:
                store.add(load_verifying_key(item))
        return store

    def get(self, kid: bytes) -> list[VerifyingKey]:
        """Keys with this kid (empty if none)."""
        return list(self._by_kid.get(kid, ()))

    def resolve(self, kid: bytes | None, alg: int) -> list[VerifyingKey]:
        """Candidate keys for a signature: those with `kid` that accept `alg`; without a kid, or with
        the empty kid h'' (legal COSE, sent by some peers), every key that accepts `alg`."""
        if kid:
            return [k for k in self._by_kid.get(kid, ()) if k.accepts_alg(alg)]
        return [k for bucket in self._by_kid.values() for k in bucket if k.accepts_alg(alg)]

    def __contains__(self, kid: object) -> bool:
        return kid in self._by_kid

    def __iter__(self) -> Iterator[VerifyingKey]:
        for bucket in self._by_kid.values():
            yield from bucket

    def __len__(self) -> int:
        return sum(len(b) for b in self._by_kid.values())

    def __repr__(self) -> str:
        return f"TrustStore({len(self)} keys)"
