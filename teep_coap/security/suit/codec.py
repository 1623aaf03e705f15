"""Strict SUIT decoding (bytes → model) and the encoders the builder uses.

Every failure is a `SuitParseError` (reason 1) naming what is wrong; cbor2's own exceptions never
leak. Command sequences are decoded item by item so each command keeps its byte offset, which SUIT
reports need (suit-record-section-offset).
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from typing import Any

import cbor2

from teep_coap.security.suit.constants import (
    CBOR_PEN_TAG,
    ENVELOPE_TAG,
    MANIFEST_TAG,
    SEQUENCE_KEYS,
    SEVERABLE_KEYS,
    Command,
    CommonKey,
    EnvelopeKey,
    ManifestKey,
    Parameter,
)
from teep_coap.security.suit.errors import SuitParseError
from teep_coap.security.suit.model import (
    CommandSequence,
    Common,
    ComponentId,
    Envelope,
    Manifest,
    SuitCommand,
    SuitDigest,
    assemble_envelope,
    bstr_header,
    set_manifest_decoder,
)

MAX_NESTING = 8
_KNOWN_MANIFEST_KEYS = frozenset(int(k) for k in ManifestKey)

# Commands whose argument is a reporting policy (uint bitmap).
_REP_POLICY_COMMANDS = frozenset(
    {
        Command.CONDITION_VENDOR_IDENTIFIER,
        Command.CONDITION_CLASS_IDENTIFIER,
        Command.CONDITION_IMAGE_MATCH,
        Command.CONDITION_COMPONENT_SLOT,
        Command.CONDITION_CHECK_CONTENT,
        Command.CONDITION_DEPENDENCY_INTEGRITY,
        Command.CONDITION_IS_DEPENDENCY,
        Command.DIRECTIVE_PROCESS_DEPENDENCY,
        Command.CONDITION_ABORT,
        Command.DIRECTIVE_WRITE,
        Command.DIRECTIVE_FETCH,
        Command.DIRECTIVE_COPY,
        Command.DIRECTIVE_INVOKE,
        Command.CONDITION_DEVICE_IDENTIFIER,
        Command.DIRECTIVE_SWAP,
        Command.DIRECTIVE_UNLINK,
    }
)


def loads_exact(data: bytes, what: str) -> Any:
    """Decode exactly one CBOR item; trailing bytes are an error."""
    if type(data) is not bytes:  # exact-type test first: this runs twice per envelope verify
        if not isinstance(data, bytes | bytearray | memoryview):
            raise SuitParseError(f"{what}: expected bytes, got {type(data).__name__}")
        data = bytes(data)
    fp = io.BytesIO(data)
    try:
        obj = cbor2.CBORDecoder(fp).decode()
    # cbor2's decoder raises many exception types on hostile input (CBORDecodeError, ValueError,
    # OverflowError, RecursionError, TypeError...); all of them mean "not valid CBOR" here.
    except Exception as exc:
        raise SuitParseError(f"{what}: not valid CBOR ({exc.__class__.__name__}: {exc})") from None
    if fp.tell() != len(data):
        raise SuitParseError(f"{what}: {len(data) - fp.tell()} trailing bytes after the CBOR item")
    return obj


def _array_header(data: bytes, what: str) -> tuple[int, int]:
    """(item count, header length) of a definite-length CBOR array.

    Hand-written because cbor2 offers no streaming array reader; we need each item's offset.
    """
    if not data:
        raise SuitParseError(f"{what}: empty")
    first = data[0]
    if first >> 5 != 4:
        raise SuitParseError(f"{what}: expected a CBOR array")
    info = first & 0x1F
    if info < 24:
        return info, 1
    sizes = {24: 1, 25: 2, 26: 4, 27: 8}
    if info not in sizes:
        raise SuitParseError(f"{what}: indefinite or reserved array length is not accepted")
    n = sizes[info]
    if len(data) < 1 + n:
        raise SuitParseError(f"{what}: truncated array header")
    return int.from_bytes(data[1 : 1 + n], "big"), 1 + n


def array_items_with_offsets(data: bytes, what: str) -> list[tuple[int, Any]]:
    """Decode a CBOR array, returning (byte offset, item) for each element."""
    count, pos = _array_header(data, what)
    if count > len(data):
        raise SuitParseError(f"{what}: array claims {count} items in {len(data)} bytes")
    fp = io.BytesIO(data)
    fp.seek(pos)
    items: list[tuple[int, Any]] = []
    decoder = cbor2.CBORDecoder(fp)
    for _ in range(count):
        start = fp.tell()
        try:
            items.append((start, decoder.decode()))
        except Exception as exc:  # see loads_exact
            raise SuitParseError(f"{what}: item at offset {start} not valid CBOR ({exc})") from None
    if fp.tell() != len(data):
        raise SuitParseError(f"{what}: trailing bytes after the array")
    return items


def _bstr(obj: Any, what: str) -> bytes:
    if not isinstance(obj, bytes):
        raise SuitParseError(f"{what}: expected a byte string, got {type(obj).__name__}")
    return obj


def _uint(obj: Any, what: str) -> int:
    if not isinstance(obj, int) or isinstance(obj, bool) or obj < 0:
        raise SuitParseError(f"{what}: expected an unsigned integer, got {obj!r:.40}")
    return obj


def _int_key_map(obj: Any, what: str) -> dict[int, Any]:
    if not isinstance(obj, dict):
        raise SuitParseError(f"{what}: expected a map, got {type(obj).__name__}")
    for k in obj:
        if not isinstance(k, int) or isinstance(k, bool):
            raise SuitParseError(f"{what}: map key {k!r:.40} is not an integer")
    return obj


def decode_digest(obj: Any, what: str) -> SuitDigest:
    if not isinstance(obj, list) or len(obj) < 2:
        raise SuitParseError(f"{what}: SUIT_Digest must be [algorithm-id, digest-bytes]")
    alg, value = obj[0], obj[1]
    if not isinstance(alg, int) or isinstance(alg, bool):
        raise SuitParseError(f"{what}: digest algorithm id must be an integer")
    return SuitDigest(alg, _bstr(value, f"{what} digest-bytes"))


def decode_digest_bstr(obj: Any, what: str) -> SuitDigest:
    return decode_digest(loads_exact(_bstr(obj, what), what), what)


def decode_component_id(obj: Any, what: str) -> ComponentId:
    if not isinstance(obj, list):
        raise SuitParseError(f"{what}: component identifier must be an array of bstr")
    return tuple(_bstr(p, f"{what} element") for p in obj)


def _uuid(obj: Any, what: str) -> bytes:
    b = _bstr(obj, what)
    if len(b) != 16:
        raise SuitParseError(f"{what}: expected a 16-byte UUID, got {len(b)} bytes")
    return b


def _p_vendor(v: Any) -> Any:
    if isinstance(v, cbor2.CBORTag) and v.tag == CBOR_PEN_TAG:
        _bstr(v.value, "PEN")
        return v
    return _uuid(v, "vendor-identifier")


def _p_uuid(v: Any) -> Any:
    return _uuid(v, "identifier")


def _p_digest(v: Any) -> Any:
    return decode_digest_bstr(v, "image-digest")


def _p_uint(v: Any) -> Any:
    return _uint(v, "value")


def _p_tstr(v: Any) -> Any:
    if not isinstance(v, str):
        raise SuitParseError("expected a text string")
    return v


def _p_bstr(v: Any) -> Any:
    return _bstr(v, "value")


def _p_bool(v: Any) -> Any:
    if not isinstance(v, bool):
        raise SuitParseError("expected a boolean")
    return v


# Parameter number -> validator returning the decoded value (table, so the hot path stays cheap).
_PARAM_CHECKS: dict[int, Any] = {
    int(Parameter.VENDOR_IDENTIFIER): _p_vendor,
    int(Parameter.CLASS_IDENTIFIER): _p_uuid,
    int(Parameter.DEVICE_IDENTIFIER): _p_uuid,
    int(Parameter.IMAGE_DIGEST): _p_digest,
    int(Parameter.IMAGE_SIZE): _p_uint,
    int(Parameter.COMPONENT_SLOT): _p_uint,
    int(Parameter.SOURCE_COMPONENT): _p_uint,
    int(Parameter.URI): _p_tstr,
    int(Parameter.CONTENT): _p_bstr,
    int(Parameter.INVOKE_ARGS): _p_bstr,
    int(Parameter.FETCH_ARGUMENTS): _p_bstr,
    int(Parameter.STRICT_ORDER): _p_bool,
    int(Parameter.SOFT_FAILURE): _p_bool,
}


def decode_parameters(obj: Any, what: str) -> dict[int, Any]:
    """Type-check the parameters we know; unknown ones are kept as they are."""
    params = dict(_int_key_map(obj, what))
    for key, value in params.items():
        check = _PARAM_CHECKS.get(key)
        if check is None:
            continue
        try:
            decoded = check(value)
        except SuitParseError as exc:
            raise SuitParseError(f"{what} parameter {key}: {exc}") from None
        if decoded is not value:
            params[key] = decoded
    return params


def _decode_index_arg(obj: Any, what: str) -> int | bool | tuple[int, ...]:
    if obj is True:
        return True
    if isinstance(obj, list):
        if not obj:
            raise SuitParseError(f"{what}: component index list is empty")
        return tuple(_uint(i, what) for i in obj)
    return _uint(obj, what)


_C_OVERRIDE = int(Command.DIRECTIVE_OVERRIDE_PARAMETERS)
_C_SET_PARAMS = int(Command.DIRECTIVE_SET_PARAMETERS)
_C_SET_INDEX = int(Command.DIRECTIVE_SET_COMPONENT_INDEX)
_C_RUN_SEQUENCE = int(Command.DIRECTIVE_RUN_SEQUENCE)
_C_TRY_EACH = int(Command.DIRECTIVE_TRY_EACH)
_REP_POLICY_CODES = frozenset(int(c) for c in _REP_POLICY_COMMANDS)


def _decode_arg(code: int, arg: Any, what: str, depth: int) -> Any:
    if code in _REP_POLICY_CODES:
        return _uint(arg, what)
    if code in (_C_OVERRIDE, _C_SET_PARAMS):
        return decode_parameters(arg, what)
    if code == _C_SET_INDEX:
        return _decode_index_arg(arg, what)
    if code == _C_RUN_SEQUENCE:
        return decode_sequence(_bstr(arg, what), what, depth=depth + 1)
    if code == _C_TRY_EACH:
        if not isinstance(arg, list) or len(arg) < 2:
            raise SuitParseError(f"{what}: try-each needs at least two sequences")
        alts: list[CommandSequence | None] = []
        for j, alt in enumerate(arg):
            if alt is None and j == len(arg) - 1:
                alts.append(None)
            else:
                alts.append(decode_sequence(_bstr(alt, what), f"{what} alternative {j}", depth=depth + 1))
        return tuple(alts)
    return arg  # unknown or custom command: kept; the processor refuses it


def decode_sequence(raw: bytes, what: str, *, depth: int = 0) -> CommandSequence:
    """Decode `bstr .cbor SUIT_Command_Sequence` content into (command, argument) pairs."""
    if depth > MAX_NESTING:
        raise SuitParseError(f"{what}: command sequences nested deeper than {MAX_NESTING}")
    items = array_items_with_offsets(raw, what)
    if not items or len(items) % 2:
        raise SuitParseError(f"{what}: a command sequence is a non-empty list of (command, argument) pairs")
    commands: list[SuitCommand] = []
    for i in range(0, len(items), 2):
        offset, code = items[i]
        arg = items[i + 1][1]
        if type(code) is not int:  # bool is an int subclass and not a command
            raise SuitParseError(f"{what}: command at offset {offset} is not an integer")
        if code in _REP_POLICY_CODES and type(arg) is int and arg >= 0:
            decoded: Any = arg  # the common case, without building a context string
        else:
            decoded = _decode_arg(code, arg, f"{what} command {code} at offset {offset}", depth)
        commands.append(SuitCommand(code, decoded, offset))
    return CommandSequence(tuple(commands), bytes(raw))


def decode_common(raw: bytes) -> Common:
    m = _int_key_map(loads_exact(raw, "common"), "common")
    comps = m.get(CommonKey.COMPONENTS)
    components: tuple[ComponentId, ...] = ()
    if comps is not None:
        if not isinstance(comps, list) or not comps:
            raise SuitParseError("common: components must be a non-empty array")
        components = tuple(decode_component_id(c, "common component") for c in comps)
    shared = None
    if CommonKey.SHARED_SEQUENCE in m:
        shared = decode_sequence(_bstr(m[CommonKey.SHARED_SEQUENCE], "shared-sequence"), "shared-sequence")
    deps = m.get(CommonKey.DEPENDENCIES)
    if deps is not None and not isinstance(deps, dict):
        raise SuitParseError("common: dependencies must be a map")
    ext = {
        k: v
        for k, v in m.items()
        if k not in (CommonKey.COMPONENTS, CommonKey.SHARED_SEQUENCE, CommonKey.DEPENDENCIES)
    }
    return Common(components, shared, deps, ext, bytes(raw))


def decode_text(raw: bytes) -> Mapping[Any, Any]:
    text = loads_exact(raw, "text")
    if not isinstance(text, dict):
        raise SuitParseError("text: expected a map")
    return text


def decode_manifest(raw: bytes, severable: Mapping[int, bytes] | None = None) -> Manifest:
    """Decode the manifest (content of the suit-manifest bstr).

    `severable` holds envelope-level severed members (key → bstr content) used where the manifest
    carries a SUIT_Digest instead of the member; their digests are checked by `verify_envelope`.
    """
    obj = loads_exact(raw, "manifest")
    if isinstance(obj, cbor2.CBORTag) and obj.tag == MANIFEST_TAG:
        obj = obj.value
    m = _int_key_map(obj, "manifest")
    for required in (ManifestKey.VERSION, ManifestKey.SEQUENCE_NUMBER, ManifestKey.COMMON):
        if required not in m:
            name = required.name.lower()
            raise SuitParseError(f"manifest: missing required member {name} ({int(required)})")
    version = _uint(m[ManifestKey.VERSION], "manifest-version")
    if version != 1:
        raise SuitParseError(f"manifest: manifest-version {version} (only 1 exists)")
    seq = _uint(m[ManifestKey.SEQUENCE_NUMBER], "manifest-sequence-number")
    common = decode_common(_bstr(m[ManifestKey.COMMON], "common"))
    ref = m.get(ManifestKey.REFERENCE_URI)
    if ref is not None and not isinstance(ref, str):
        raise SuitParseError("manifest: reference-uri must be a text string")
    mcid = None
    if ManifestKey.MANIFEST_COMPONENT_ID in m:
        mcid = decode_component_id(m[ManifestKey.MANIFEST_COMPONENT_ID], "manifest-component-id")
    sequences: dict[int, CommandSequence] = {}
    severed: dict[int, Any] = {}
    text = None
    severable = severable or {}
    for key, value in m.items():
        if key in SEQUENCE_KEYS or key == ManifestKey.TEXT:
            name = f"manifest member {key}"
            if isinstance(value, list) and key in SEVERABLE_KEYS:
                severed[key] = decode_digest(value, f"{name} (severed)")
                if key not in severable:
                    continue
                content = severable[key]
            else:
                content = _bstr(value, name)
            if key == ManifestKey.TEXT:
                text = decode_text(content)
            else:
                sequences[key] = decode_sequence(content, name)
    ext = {k: v for k, v in m.items() if k not in _KNOWN_MANIFEST_KEYS}
    return Manifest(version, seq, common, ref, mcid, sequences, severed, text, ext, bytes(raw))


_K_AUTH = int(EnvelopeKey.AUTHENTICATION_WRAPPER)
_K_MANIFEST = int(EnvelopeKey.MANIFEST)
_SEVERABLE_INTS = frozenset(int(k) for k in SEVERABLE_KEYS)
# Preferred-encoding digest-bytes header for the three fixed sizes the SUIT digest algorithms give.
_DIGEST_HEADERS = {b"\x58\x20": 32, b"\x58\x30": 48, b"\x58\x40": 64}


def _auth_digest(raw: bytes) -> SuitDigest:
    """The authentication wrapper's SUIT_Digest from its bstr content.

    Hand-written fast path for the usual shape, [small alg id, 32/48/64-byte bstr] (36-68 bytes), as
    its cbor2 decode costs about 1 µs per envelope; anything else goes through the generic decoder.
    """
    if len(raw) >= 36 and raw[0] == 0x82:
        head = raw[1]  # one-byte int: 0x00-0x17 is 0..23, 0x20-0x37 is -1..-24 (0x18-0x1f take more bytes)
        if head < 0x18 or 0x20 <= head < 0x38:
            size = _DIGEST_HEADERS.get(raw[2:4])
            if size is not None and len(raw) == 4 + size:
                return SuitDigest(head if head < 0x18 else 0x1F - head, raw[4:])
    return decode_digest(loads_exact(raw, "authentication-wrapper digest"), "authentication digest")


def _bstr_array(raw: bytes) -> list[bytes] | None:
    """Items of a definite-length CBOR array of definite-length bstrs spanning all of `raw`, or None
    when `raw` has any other shape (the caller then decodes it with cbor2 for the precise error).

    Hand-written for the authentication wrapper, [digest bstr, block bstr, ...], read once per
    envelope verify: slicing the few heads costs half of a cbor2 decoder's set-up.
    """
    n = len(raw)
    if n == 0 or not 0x81 <= raw[0] <= 0x97:  # array of 1-23 items, the only sizes a wrapper has
        return None
    items: list[bytes] = []
    pos = 1
    for _ in range(raw[0] - 0x80):
        if pos >= n:
            return None
        head = raw[pos]
        if 0x40 <= head <= 0x57:
            size, pos = head - 0x40, pos + 1
        elif head == 0x58 and pos + 1 < n:
            size, pos = raw[pos + 1], pos + 2
        elif head == 0x59 and pos + 2 < n:
            size, pos = (raw[pos + 1] << 8) | raw[pos + 2], pos + 3
        else:
            return None
        if pos + size > n:
            return None
        items.append(raw[pos : pos + size])
        pos += size
    return items if pos == n else None


def parse_envelope_header(data: bytes) -> Envelope:
    """Decode a SUIT_Envelope's top-level map only (tag 107 optional), no cryptographic check.

    Checks the shapes of the authentication wrapper, the manifest bstr and the severable and
    integrated members; the manifest is decoded later, on first access of `Envelope.manifest`, so
    `verify_envelope` can authenticate it before anything interprets it.
    """
    obj = loads_exact(data, "envelope")
    tagged = False
    if type(obj) is not dict:
        if isinstance(obj, cbor2.CBORTag):
            if obj.tag != ENVELOPE_TAG:
                raise SuitParseError(f"envelope: unexpected CBOR tag {obj.tag} (SUIT_Envelope is tag 107)")
            obj, tagged = obj.value, True
        if not isinstance(obj, dict):
            raise SuitParseError("envelope: expected a map")
    for k in obj:
        if not (type(k) is int or isinstance(k, str) or (isinstance(k, int) and not isinstance(k, bool))):
            raise SuitParseError(f"envelope: key {k!r:.40} is neither an integer nor a text string")
    if _K_AUTH not in obj:
        raise SuitParseError("envelope: no authentication-wrapper (2)")
    if _K_MANIFEST not in obj:
        raise SuitParseError("envelope: no manifest (3)")
    wrapper_raw = _bstr(obj[_K_AUTH], "authentication-wrapper")
    wrapper = _bstr_array(wrapper_raw) or loads_exact(wrapper_raw, "authentication-wrapper")
    if not isinstance(wrapper, list) or not wrapper:
        raise SuitParseError("authentication-wrapper: expected [digest, *authentication-block]")
    digest_raw = _bstr(wrapper[0], "authentication-wrapper digest")
    digest = _auth_digest(digest_raw)
    blocks = tuple(wrapper[1:])
    for block in blocks:  # a loop, not a generator into tuple(): this runs once per envelope
        if type(block) is not bytes:
            _bstr(block, "authentication block")  # raises with the type named
    manifest_content = _bstr(obj[_K_MANIFEST], "manifest")
    severable: dict[int, bytes] = {}
    integrated: dict[str, bytes] = {}
    ext: dict[Any, Any] = {}
    if len(obj) > 2:
        for k, v in obj.items():
            if k in (_K_AUTH, _K_MANIFEST):
                continue
            if isinstance(k, str):
                integrated[k] = _bstr(v, f"integrated payload {k!r}")
            elif k in _SEVERABLE_INTS:
                severable[k] = _bstr(v, f"severable member {k}")
            else:
                ext[k] = v
    return assemble_envelope(
        digest=digest,
        digest_raw=digest_raw,
        auth_blocks=blocks,
        manifest_bstr=bstr_header(len(manifest_content)) + manifest_content,
        severable=severable,
        integrated=integrated,
        extensions=ext,
        tagged=tagged,
        raw=data if type(data) is bytes else bytes(data),
        verified=False,
        signer_kid=None,
        signer_alg=None,
    )


def parse_envelope(data: bytes) -> Envelope:
    """Decode a SUIT_Envelope (tag 107 optional) and its manifest without any cryptographic check.

    For inspection and for reading already-verified (stored) envelopes; a recipient of new
    envelopes calls `verify_envelope`, which authenticates before the manifest is decoded.
    """
    env = parse_envelope_header(data)
    env.manifest  # noqa: B018 - decode now, so a bad manifest fails here as it always did
    return env


set_manifest_decoder(decode_manifest)  # Envelope.manifest decodes through this module
