"""SUIT data model: digests, command sequences, common, manifest, envelope (frozen dataclasses).

The model keeps the exact bytes it was decoded from (`raw`), because SUIT authenticates bytes, not
values: the manifest digest and severable-member digests are taken over the encoded bstr.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import cbor2

from teep_coap.security.suit.constants import DigestAlg, ManifestKey
from teep_coap.security.suit.errors import UnsupportedAlgorithm

ComponentId = tuple[bytes, ...]

# hashlib constructors for the SUIT digest algorithms (called directly: hashlib.new(name) costs a
# name lookup per envelope); SHAKE variants use their RFC 8702 output sizes.
_HASHES: dict[int, tuple[Callable[[bytes], Any], int | None]] = {
    DigestAlg.SHA256: (hashlib.sha256, None),
    DigestAlg.SHA384: (hashlib.sha384, None),
    DigestAlg.SHA512: (hashlib.sha512, None),
    DigestAlg.SHAKE128: (hashlib.shake_128, 32),
    DigestAlg.SHAKE256: (hashlib.shake_256, 64),
}


def digest_bytes(algorithm: int, data: bytes) -> bytes:
    """Hash `data` with a SUIT digest algorithm id."""
    try:
        new, size = _HASHES[algorithm]
    except KeyError:
        raise UnsupportedAlgorithm(f"digest algorithm {algorithm} not supported") from None
    h = new(data)
    if size is not None:
        return h.digest(size)
    return h.digest()


@dataclass(frozen=True)
class SuitDigest:
    """SUIT_Digest = [algorithm-id, bytes]."""

    algorithm: int
    value: bytes

    @classmethod
    def of(cls, data: bytes, algorithm: int = DigestAlg.SHA256) -> SuitDigest:
        return cls(int(algorithm), digest_bytes(algorithm, data))

    def matches(self, data: bytes) -> bool:
        return digest_bytes(self.algorithm, data) == self.value

    def to_cbor(self) -> list[Any]:
        return [self.algorithm, self.value]

    def encode(self) -> bytes:
        return cbor2.dumps(self.to_cbor())


@dataclass(frozen=True)
class SuitCommand:
    """One (command, argument) pair of a sequence.

    `arg` is the decoded argument: an int reporting policy, a parameter dict, a component index
    (int / True / tuple), a nested `CommandSequence` (run-sequence) or a tuple of them (try-each,
    where None stands for the optional trailing nil). `offset` is the byte offset of the command in
    its sequence's encoding (suit-record-section-offset).
    """

    code: int
    arg: Any
    offset: int = 0


@dataclass(frozen=True)
class CommandSequence:
    commands: tuple[SuitCommand, ...]
    raw: bytes = b""

    def __iter__(self) -> Iterator[SuitCommand]:
        return iter(self.commands)

    def __len__(self) -> int:
        return len(self.commands)

    def walk(self) -> Iterator[SuitCommand]:
        """Every command, nested ones (run-sequence, try-each) included."""
        for cmd in self.commands:
            yield cmd
            if isinstance(cmd.arg, CommandSequence):
                yield from cmd.arg.walk()
            elif (
                isinstance(cmd.arg, tuple)
                and cmd.arg
                and all(a is None or isinstance(a, CommandSequence) for a in cmd.arg)
            ):
                for alt in cmd.arg:
                    if alt is not None:
                        yield from alt.walk()


@dataclass(frozen=True)
class Common:
    components: tuple[ComponentId, ...]
    shared_sequence: CommandSequence | None = None
    dependencies: Mapping[int, Any] | None = None
    extensions: Mapping[int, Any] = field(default_factory=dict)
    raw: bytes = b""


@dataclass(frozen=True)
class Manifest:
    version: int
    sequence_number: int
    common: Common
    reference_uri: str | None = None
    manifest_component_id: ComponentId | None = None
    sequences: Mapping[int, CommandSequence] = field(default_factory=dict)
    severed: Mapping[int, SuitDigest] = field(default_factory=dict)
    text: Mapping[Any, Any] | None = None
    extensions: Mapping[int, Any] = field(default_factory=dict)
    raw: bytes = b""

    def sequence(self, key: int) -> CommandSequence | None:
        return self.sequences.get(key)

    @property
    def install(self) -> CommandSequence | None:
        return self.sequences.get(ManifestKey.INSTALL)

    @property
    def uninstall(self) -> CommandSequence | None:
        return self.sequences.get(ManifestKey.UNINSTALL)

    @property
    def validate(self) -> CommandSequence | None:
        return self.sequences.get(ManifestKey.VALIDATE)

    @property
    def invoke(self) -> CommandSequence | None:
        return self.sequences.get(ManifestKey.INVOKE)

    @property
    def payload_fetch(self) -> CommandSequence | None:
        return self.sequences.get(ManifestKey.PAYLOAD_FETCH)


# How `Envelope.manifest` decodes: the codec module sets it when it is imported (every Envelope is
# made by that codec), so this model module does not import the codec that imports it.
ManifestDecoder = Callable[[bytes, Mapping[int, bytes]], "Manifest"]
_manifest_decoder: list[ManifestDecoder] = []


def set_manifest_decoder(decoder: ManifestDecoder) -> None:
    """Called once by security.suit.codec at import."""
    _manifest_decoder[:] = [decoder]


@dataclass(frozen=True)
class Envelope:
    """A decoded SUIT_Envelope. `manifest_bstr` is the encoded bstr the auth digest covers.

    The manifest itself is decoded on first access of `manifest` (SUIT: authenticate before
    interpreting): `verify_envelope` checks digest and signature on the top-level members only, and
    a malformed manifest inside an authentic envelope raises `SuitParseError` where it is first read.
    `parse_envelope` reads `manifest` at once, so it still fails early on a bad manifest.
    """

    digest: SuitDigest
    digest_raw: bytes
    auth_blocks: tuple[bytes, ...]
    manifest_bstr: bytes
    severable: Mapping[int, bytes] = field(default_factory=dict)
    integrated: Mapping[str, bytes] = field(default_factory=dict)
    extensions: Mapping[Any, Any] = field(default_factory=dict)
    tagged: bool = False
    raw: bytes = b""
    # Set by verify_envelope only: which trusted key signed it.
    verified: bool = False
    signer_kid: bytes | None = None
    signer_alg: int | None = None

    @cached_property
    def manifest(self) -> Manifest:
        """The decoded manifest (cached; cached_property writes the instance dict, frozen or not)."""
        if not _manifest_decoder:
            raise RuntimeError("import teep_coap.security.suit.codec to decode manifests")
        return _manifest_decoder[0](_bstr_content(self.manifest_bstr), self.severable)

    @property
    def manifest_decoded(self) -> bool:
        """True once `manifest` has been decoded (for tests and for carrying it across copies)."""
        return "manifest" in self.__dict__


_ENVELOPE_FIELDS = frozenset(Envelope.__dataclass_fields__)


def assemble_envelope(**values: Any) -> Envelope:
    """An `Envelope` from every one of its fields, without the generated frozen `__init__`.

    That `__init__` sets each of the 12 fields through object.__setattr__ (~1.1 µs against ~0.4 µs
    here, 1% of an envelope verify). Only for the codec's hot path, which passes all fields; a
    missing or unknown name is an AssertionError (a bug), and a test compares with `Envelope(...)`.
    """
    assert values.keys() == _ENVELOPE_FIELDS, sorted(values.keys() ^ _ENVELOPE_FIELDS)
    env = object.__new__(Envelope)
    env.__dict__.update(values)
    return env


def _bstr_content(encoded: bytes) -> bytes:
    """Content of a definite-length CBOR bstr (the header is 1-9 bytes; see `bstr_header`)."""
    info = encoded[0] & 0x1F
    skip = 1 if info < 24 else 1 + (1 << (info - 24))
    return encoded[skip:]


def bstr_header(length: int) -> bytes:
    """Preferred-encoding CBOR bstr header (RFC 8949 §3): hand-written because cbor2.dumps of the
    whole manifest bstr costs ~2 µs per envelope, about 5% of a signature check."""
    if length < 24:
        return bytes((0x40 | length,))
    if length < 0x100:
        return bytes((0x58, length))
    if length < 0x10000:
        return b"\x59" + length.to_bytes(2, "big")
    if length < 0x100000000:
        return b"\x5a" + length.to_bytes(4, "big")
    return b"\x5b" + length.to_bytes(8, "big")
