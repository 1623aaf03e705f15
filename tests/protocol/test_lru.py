"""LruCache: bounded, least recently used dropped first, a kept None told apart from a miss."""

from __future__ import annotations

import threading

from teep_coap.protocol.lru import LruCache


def test_the_least_recently_used_goes_first() -> None:
    cache: LruCache[str, int] = LruCache(2)
    cache.put("a", 1)
    cache.put("b", 2)
    assert cache.get("a") == (True, 1)  # "a" is now the most recently used
    cache.put("c", 3)
    assert cache.get("b") == (False, None) and cache.get("a") == (True, 1) and len(cache) == 2


def test_a_kept_none_is_not_a_miss() -> None:
    cache: LruCache[bytes, str | None] = LruCache(4)
    cache.put(b"unreadable", None)
    assert cache.get(b"unreadable") == (True, None)
    assert cache.get(b"never") == (False, None)


def test_threads_never_exceed_the_bound() -> None:
    cache: LruCache[int, int] = LruCache(50)

    def fill(base: int) -> None:
        for i in range(2000):
            cache.put(base + i, i)
            cache.get(base + i // 2)

    threads = [threading.Thread(target=fill, args=(n * 10_000,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(cache) == 50
