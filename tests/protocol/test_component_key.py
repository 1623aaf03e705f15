"""component_key: one key per component id, whatever sequence type carries it (cached or not)."""

from __future__ import annotations

import cbor2

from teep_coap.protocol.records import component_from_key, component_key


def test_same_key_for_tuple_list_and_unhashable_parts() -> None:
    expected = cbor2.dumps([b"tee", b"\x00\x01"])
    assert component_key((b"tee", b"\x00\x01")) == expected
    assert component_key((b"tee", b"\x00\x01")) == expected  # from the cache this time
    assert component_key([b"tee", b"\x00\x01"]) == expected
    assert component_key((bytearray(b"tee"), b"\x00\x01")) == expected  # cannot be hashed: encoded
    assert component_from_key(expected) == (b"tee", b"\x00\x01")


def test_different_ids_never_share_a_key() -> None:
    keys = {component_key((bytes([i]), bytes([j]))) for i in range(40) for j in range(40)}
    assert len(keys) == 1600
