"""A bounded cache shared by engine calls that may run on several threads (profiles.session.TamHandler).

The engine keeps a few pure functions of stored bytes (PEM → key, envelope → digest) and device rows
by kid; each needs "least recently used goes first, one lock". `functools.lru_cache` fits only
functions of hashable arguments that may be computed twice; these are filled where the value is
found (a device read by kid or by transport identity), so the cache is an object of its own.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class LruCache(Generic[K, V]):
    """At most `size` entries; the least recently used is dropped first."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._items: OrderedDict[K, V] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: K) -> tuple[bool, V | None]:
        """(True, value) if `key` is kept (it becomes the most recently used), else (False, None):
        a kept value may itself be None."""
        with self._lock:
            if key not in self._items:
                return False, None
            self._items.move_to_end(key)
            return True, self._items[key]

    def put(self, key: K, value: V) -> None:
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            if len(self._items) > self.size:
                self._items.popitem(last=False)

    def __len__(self) -> int:
        return len(self._items)
