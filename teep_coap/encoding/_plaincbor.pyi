def plain(data: bytes, /) -> bool:
    """True if `data` is one plain deterministic CBOR item and nothing else (see _plaincbor.c)."""

def untrusted_ok(data: bytes, allowed_tags: frozenset[int], max_depth: int, /) -> bool:
    """True if `check_untrusted_cbor(data, allowed_tags=..., max_depth=...)` would accept `data`."""
