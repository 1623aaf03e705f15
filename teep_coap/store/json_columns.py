"""JSON text of the TAM store's JSON columns (outstanding.data, devices.attested_claims, .negotiated).

Each TEEP session writes three of these and reads up to three on the engine's hot path; with the
standard library that was about 5 % of a coaps-psk TAM's CPU (py-spy), most of it building a new
encoder per `json.dumps(sort_keys=True)`. orjson does the same in C. The text is the same JSON
(sorted keys, non-string keys written as strings) without the blanks after `:` and `,`, so rows
written before or by either read alike. What orjson would get wrong is left to `json`: integers
beyond 64 bits (orjson refuses to write them and reads them as floats), and NaN or infinities
that older rows may hold. A NaN or an infinity written now becomes null, valid JSON, where `json`
wrote `NaN` or `Infinity` (which no strict JSON reader takes).
"""

from __future__ import annotations

import json
import re
from typing import Any

import orjson

_OPTIONS = orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS
# a number orjson might read as a float: 19 digits or more (2**63 has 19); digits in strings too,
# which only costs them the slower reader
_LONG_DIGITS = re.compile(r"\d{19}")


def dumps(value: Any) -> str:
    """`value` as JSON text with sorted keys."""
    try:
        return orjson.dumps(value, option=_OPTIONS).decode()
    except orjson.JSONEncodeError:  # an integer beyond 64 bits, nesting deeper than 255, ...
        return json.dumps(value, sort_keys=True)


def loads(text: str) -> Any:
    """The value JSON `text` holds, exactly as `json.loads` gives it."""
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:  # NaN or Infinity that `json` wrote: `json` reads them
        return json.loads(text)
    # Text this module wrote comes back byte for byte from a value read exactly (an integer orjson
    # read as a float would be written as a float): then the search below, ten times the cost of
    # reading, is not needed. Rows `json` wrote (blanks after `:` and `,`) take it.
    try:
        if orjson.dumps(value, option=_OPTIONS) == text.encode():
            return value
    except orjson.JSONEncodeError:  # nesting deeper than orjson writes
        pass
    return value if _LONG_DIGITS.search(text) is None else json.loads(text)


__all__ = ["dumps", "loads"]
