def plain(data: bytes, /) -> bool:
    """True if `data` is one plain deterministic CBOR item and nothing else (see _plaincbor.c)."""
