"""OTrP ↔ JSON text: compact serialization and a strict reader that only raises `OtrpDecodeError`.

The JSON layer knows nothing of JOSE: `teep_coap.otrp.security.jose` signs and encrypts the trees
this module writes. Binary members are already text in the tree (`to_tree(text=True)`).
"""

from __future__ import annotations

import json
from typing import Any

from teep_coap.otrp.encoding.tree import parse_tbs, tbs_tree
from teep_coap.otrp.model import OtrpDecodeError, OtrpMessage

MAX_JSON_DEPTH = 32


def dumps(tree: Any) -> bytes:
    """Compact UTF-8 JSON (no spaces), the form we sign and count."""
    return json.dumps(tree, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise OtrpDecodeError(key, "duplicate member")
        out[key] = value
    return out


def _reject_constant(name: str) -> Any:
    raise OtrpDecodeError("JSON", f"{name} is not JSON")


def _depth(value: Any, limit: int) -> int:
    stack = [(value, 1)]
    deepest = 0
    while stack:
        item, level = stack.pop()
        deepest = max(deepest, level)
        if level > limit:
            break
        if isinstance(item, dict):
            stack.extend((v, level + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, level + 1) for v in item)
    return deepest


def loads(data: bytes | str, what: str = "JSON") -> Any:
    """Parse JSON text; duplicate members, NaN/Infinity, bad UTF-8 and deep nesting are errors."""
    try:
        text = data.decode("utf-8") if isinstance(data, bytes) else data
        tree = json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_reject_constant)
    except OtrpDecodeError:
        raise
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise OtrpDecodeError(what, f"not valid JSON: {str(exc)[:120]}") from None
    if _depth(tree, MAX_JSON_DEPTH) > MAX_JSON_DEPTH:
        raise OtrpDecodeError(what, f"nested deeper than {MAX_JSON_DEPTH}")
    return tree


def encode_tbs(msg: OtrpMessage) -> bytes:
    """The bare to-be-signed object with its encrypted members in clear."""
    return dumps(tbs_tree(msg, text=True))


def decode_tbs(data: bytes | str) -> OtrpMessage:
    """Parse a bare (unsigned, decrypted) TBS object, e.g. the cleaned appendix samples."""
    return parse_tbs(loads(data, "TBS"), text=True)
