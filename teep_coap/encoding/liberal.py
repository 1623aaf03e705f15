"""Liberal reading of TEEP messages from other implementations: the strict decoder first, then known,
harmless deviations rewritten and the strict decoder again.

Strict decoding stays the rule (`cbor_codec.decode`); this module only runs when it fails, so a
conforming message costs nothing extra. What is read liberally (each with its bytes in
docs/interop.md):

* always: an optional list member sent as an empty array (`tc-list: []`, `requested-tc-list`,
  `unneeded-manifest-list`, `suit-reports`, `ext-list`, `manifest-list`), which the CDDL wants
  `[+ ...]`, means "none" and is read as absent;
* only with the compatibility setting `draft-15`: SUIT COSE profiles in that era's two-element form
  `[auth-alg, encryption-alg]` (e.g. `[-7, 1]`), read as the four-element profile
  `[SHA-256, auth-alg, key-exchange, encryption-alg]` of the SUIT MTI document (key exchange
  ECDH-ES+A128KW, or A128KW for an HMAC auth-alg).

Hand-written: the rewrites are a few dictionary and list edits on the decoded CBOR; the message that
results is checked again by the strict decoder, so nothing here can let a malformed message through.
"""

from __future__ import annotations

from typing import Any

import cbor2

from teep_coap.encoding.cbor_codec import decode, decode_value
from teep_coap.encoding.errors import TeepDecodeError
from teep_coap.model.codes import Label, MessageType
from teep_coap.model.teep import TeepMessage

STRICT = ""
DRAFT_15 = "draft-15"
COMPAT_MODES = (STRICT, DRAFT_15)

# Optional `[+ ...]` members where an empty array can only mean "none".
EMPTY_MEANS_NONE = frozenset(
    {
        int(Label.SUIT_REPORTS),
        int(Label.TC_LIST),
        int(Label.REQUESTED_TC_LIST),
        int(Label.UNNEEDED_MANIFEST_LIST),
        int(Label.EXT_LIST),
        int(Label.MANIFEST_LIST),
    }
)

_SHA256 = -16
_ECDH_ES_A128KW = -29
_A128KW = -3
_HMAC_ALGS = frozenset({4, 5, 6, 7})  # HMAC 256/64, 256/256, 384/384, 512/512 (RFC 9053 §3.1)
_PROFILES_POSITION = 3  # query-request = [type, options, suites, profiles, data-item-requested]


def check_compat(mode: str) -> str:
    """`mode` if it is a known compatibility setting, else a TeepDecodeError naming the known ones."""
    if mode not in COMPAT_MODES:
        known = ", ".join(repr(m) for m in COMPAT_MODES)
        raise TeepDecodeError(f"unknown compatibility setting {mode!r} (known: {known})")
    return mode


def draft15_profile(profile: list[Any]) -> list[Any]:
    """A draft-15-era `[auth-alg, encryption-alg]` as today's four-element SUIT COSE profile."""
    auth, enc = profile
    exchange = _A128KW if auth in _HMAC_ALGS else _ECDH_ES_A128KW
    return [_SHA256, auth, exchange, enc]


def _two_element_profiles(profiles: Any) -> tuple[Any, bool]:
    if not isinstance(profiles, list):
        return profiles, False
    changed = False
    out = []
    for p in profiles:
        if isinstance(p, list) and len(p) == 2 and all(type(x) is int for x in p):
            out.append(draft15_profile(p))
            changed = True
        else:
            out.append(p)
    return out, changed


def _rewrite(obj: Any, compat: str) -> tuple[Any, list[str]]:
    """The decoded message with the tolerated deviations replaced; what was replaced, in words."""
    notes: list[str] = []
    if type(obj) is not list or len(obj) < 2 or type(obj[0]) is not int or type(obj[1]) is not dict:
        return obj, notes
    options = dict(obj[1])
    for label in sorted(EMPTY_MEANS_NONE & options.keys()):
        if options[label] == []:
            del options[label]
            notes.append(f"empty {Label(label).cddl_name} read as absent")
    out = [obj[0], options, *obj[2:]]
    if compat == DRAFT_15:
        if obj[0] == MessageType.QUERY_REQUEST and len(out) > _PROFILES_POSITION:
            out[_PROFILES_POSITION], changed = _two_element_profiles(out[_PROFILES_POSITION])
            if changed:
                notes.append("draft-15 two-element SUIT COSE profiles read as four-element ones")
        label = int(Label.SUPPORTED_SUIT_COSE_PROFILES)
        if obj[0] == MessageType.ERROR and label in options:
            options[label], changed = _two_element_profiles(options[label])
            if changed:
                notes.append("draft-15 two-element SUIT COSE profiles read as four-element ones")
    return out, notes


def decode_liberal(data: bytes, *, compat: str = STRICT) -> tuple[TeepMessage, tuple[str, ...]]:
    """Decode strictly; if that fails and a tolerated deviation explains it, decode the message with
    the deviation replaced. Returns the message and the deviations read liberally (empty when the
    message was conforming). Raises the strict decoder's TeepDecodeError for anything else."""
    try:
        return decode(data), ()
    except TeepDecodeError as strict_error:
        first = strict_error
    try:
        obj = decode_value(data)
    except TeepDecodeError:
        raise first from None
    rewritten, notes = _rewrite(obj, check_compat(compat))
    if not notes:
        raise first
    return decode(cbor2.dumps(rewritten)), tuple(notes)
