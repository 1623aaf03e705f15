"""Build signed SUIT envelopes of the shape TEEP's examples use (suit_uri, suit_integrated).

Layout (draft-ietf-suit-manifest-37 + trust-domains): shared sequence sets vendor/class/image
digest/size and checks vendor and class; install sets the URI ("#tc" for an integrated payload),
fetches and checks image-match; uninstall unlinks. Emitted with ESP256 (-9) or Ed25519 (-19).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import cbor2

from teep_coap.security import cose
from teep_coap.security.suit.constants import (
    ENVELOPE_TAG,
    INTEGRATED_TC_KEY,
    REP_ALL,
    Command,
    CommonKey,
    DigestAlg,
    EnvelopeKey,
    ManifestKey,
    Parameter,
)
from teep_coap.security.suit.errors import SuitError
from teep_coap.security.suit.model import ComponentId, SuitDigest


def default_manifest_component_id(component_id: ComponentId) -> ComponentId:
    """TEEP convention: the TC's id ends in 'ta', its manifest's in 'suit' (NOTES §6.2)."""
    if component_id and component_id[-1] == b"ta":
        return (*component_id[:-1], b"suit")
    return (*component_id, b"suit")


def teep_component_id(
    tc_uuid: bytes, *, device: bytes = b"TEEP-Device", storage: bytes = b"SecureFS"
) -> ComponentId:
    """['TEEP-Device', 'SecureFS', <tc-uuid>, 'ta'] as in the TEEP examples."""
    if len(tc_uuid) != 16:
        raise SuitError(f"tc-uuid must be 16 bytes, got {len(tc_uuid)}")
    return (device, storage, tc_uuid, b"ta")


def _seq(*pairs: Any) -> bytes:
    return cbor2.dumps(list(pairs))


def _text_map(text: Mapping[Any, Any]) -> dict[Any, Any]:
    """Accept {lang: {key: str}} (draft -37) or a bare {key: str} map, which goes under "en"."""
    if text and all(isinstance(k, int) for k in text):
        return {"en": dict(text)}
    return dict(text)


def build_manifest(
    *,
    component_id: ComponentId,
    sequence_number: int,
    vendor_id: bytes,
    class_id: bytes,
    image_digest: SuitDigest,
    image_size: int,
    uri: str,
    text: Mapping[Any, Any] | None = None,
    manifest_component_id: ComponentId | None = None,
    with_uninstall: bool = True,
    reference_uri: str | None = None,
) -> bytes:
    """The encoded SUIT_Manifest (the content of the suit-manifest bstr)."""
    if len(vendor_id) != 16 or len(class_id) != 16:
        raise SuitError("vendor-id and class-id must be 16-byte UUIDs")
    if sequence_number < 0 or image_size < 0:
        raise SuitError("sequence number and image size must be unsigned")
    shared = _seq(
        Command.DIRECTIVE_OVERRIDE_PARAMETERS,
        {
            Parameter.VENDOR_IDENTIFIER: vendor_id,
            Parameter.CLASS_IDENTIFIER: class_id,
            Parameter.IMAGE_DIGEST: image_digest.encode(),
            Parameter.IMAGE_SIZE: image_size,
        },
        Command.CONDITION_VENDOR_IDENTIFIER,
        REP_ALL,
        Command.CONDITION_CLASS_IDENTIFIER,
        REP_ALL,
    )
    common = cbor2.dumps({CommonKey.COMPONENTS: [list(component_id)], CommonKey.SHARED_SEQUENCE: shared})
    install = _seq(
        Command.DIRECTIVE_OVERRIDE_PARAMETERS,
        {Parameter.URI: uri},
        Command.DIRECTIVE_FETCH,
        REP_ALL,
        Command.CONDITION_IMAGE_MATCH,
        REP_ALL,
    )
    mcid = (
        manifest_component_id
        if manifest_component_id is not None
        else default_manifest_component_id(component_id)
    )
    manifest: dict[int, Any] = {
        ManifestKey.VERSION: 1,
        ManifestKey.SEQUENCE_NUMBER: sequence_number,
        ManifestKey.COMMON: common,
    }
    if reference_uri is not None:
        manifest[ManifestKey.REFERENCE_URI] = reference_uri
    manifest[ManifestKey.MANIFEST_COMPONENT_ID] = list(mcid)
    manifest[ManifestKey.INSTALL] = install
    if text:
        manifest[ManifestKey.TEXT] = cbor2.dumps(_text_map(text))
    if with_uninstall:
        manifest[ManifestKey.UNINSTALL] = _seq(Command.DIRECTIVE_UNLINK, REP_ALL)
    return cbor2.dumps({int(k): v for k, v in manifest.items()})


def sign_manifest(manifest: bytes, key: Any, *, digest_alg: int = DigestAlg.SHA256) -> bytes:
    """The authentication wrapper: [bstr SUIT_Digest(manifest bstr), bstr COSE_Sign1(detached)]."""

    digest_raw = SuitDigest.of(cbor2.dumps(manifest), digest_alg).encode()
    block = cose.sign1(None, key, detached_payload=digest_raw, include_kid=True, tagged=True)
    return cbor2.dumps([digest_raw, block])


def build_envelope(
    payload: bytes | None,
    *,
    key: Any,
    component_id: ComponentId,
    sequence_number: int,
    vendor_id: bytes,
    class_id: bytes,
    uri: str | None = None,
    integrated: bool = True,
    text: Mapping[Any, Any] | None = None,
    manifest_component_id: ComponentId | None = None,
    with_uninstall: bool = True,
    image_digest: SuitDigest | None = None,
    image_size: int | None = None,
    payload_key: str = INTEGRATED_TC_KEY,
    reference_uri: str | None = None,
    tagged: bool = False,
) -> bytes:
    """A signed SUIT_Envelope for one Trusted Component.

    integrated=True puts `payload` in the envelope under `payload_key` ("#tc") and the install
    sequence fetches "#tc"; otherwise it fetches `uri`. Without a payload (URI only), give
    `image_digest` and `image_size`.
    """
    if integrated and uri is None:
        if payload is None:
            raise SuitError("an integrated envelope needs the payload")
        fetch_uri = payload_key
    elif uri is not None:
        fetch_uri = uri
        integrated = False
    else:
        raise SuitError("give a URI for a payload that is not integrated")
    if payload is not None:
        image_digest = SuitDigest.of(payload)
        image_size = len(payload)
    if image_digest is None or image_size is None:
        raise SuitError("without a payload, image_digest and image_size are required")
    manifest = build_manifest(
        component_id=tuple(component_id),
        sequence_number=sequence_number,
        vendor_id=vendor_id,
        class_id=class_id,
        image_digest=image_digest,
        image_size=image_size,
        uri=fetch_uri,
        text=text,
        manifest_component_id=manifest_component_id,
        with_uninstall=with_uninstall,
        reference_uri=reference_uri,
    )
    envelope: dict[Any, Any] = {
        EnvelopeKey.AUTHENTICATION_WRAPPER: sign_manifest(manifest, key),
        EnvelopeKey.MANIFEST: manifest,
    }
    if integrated:
        assert payload is not None
        envelope[payload_key] = payload
    env = {int(k) if isinstance(k, int) else k: v for k, v in envelope.items()}
    return cbor2.dumps(cbor2.CBORTag(ENVELOPE_TAG, env) if tagged else env)
