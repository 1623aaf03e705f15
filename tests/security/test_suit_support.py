"""Shared bits of the SUIT tests (no tests here): keys, identities, the SUIT examples key, CDDL check."""

from __future__ import annotations

import subprocess
from pathlib import Path

import cbor2
from cryptography.hazmat.primitives.asymmetric import ec

from teep_coap.security.keys import SigningKey, VerifyingKey, generate_key
from teep_coap.security.suit import DeviceIdentity, build_envelope, teep_component_id
from teep_coap.security.suit.build import sign_manifest
from tests.conftest import CDDL_FILE, venv_tool

# Public key the SUIT working group signs its examples with (draft-ietf-suit-manifest examples; the
# same P-256 key ships as the "trust anchor" of libcsuit). The TEEP draft's Appendix E envelopes
# (suit_uri, suit_integrated, suit_personalization) verify with it.
SUIT_EXAMPLES_X = bytes.fromhex("8496811AAE0BAAABD26157189EECDA26BEAA8BF11B6F3FE6E2B5659C85DBC0AD")
SUIT_EXAMPLES_Y = bytes.fromhex("3B1F2A4B6C098131C0A36DACD1D78BD381DCDFB09C052DB33991DB7338B4A896")
SUIT_EXAMPLES_KEY = VerifyingKey(
    ec.EllipticCurvePublicNumbers(
        int.from_bytes(SUIT_EXAMPLES_X, "big"), int.from_bytes(SUIT_EXAMPLES_Y, "big"), ec.SECP256R1()
    ).public_key()
)

VENDOR = bytes.fromhex("C0DDD5F15243566087DB4F5B0AA26C2F")
CLASS = bytes.fromhex("DB42F7093D8C55BAA8C5265FC5820F4E")
TC_UUID = bytes.fromhex("8D82573A926D4754935332DC29997F74")
CID = teep_component_id(TC_UUID)
DEVICE = DeviceIdentity(VENDOR, CLASS)
PAYLOAD = b"Hello, Secure World!"

TAM_SUIT_KEY: SigningKey = generate_key("esp256")
TAM_SUIT_KEY_ED: SigningKey = generate_key("ed25519")
STRANGER: SigningKey = generate_key("esp256")


def envelope(seq: int, payload: bytes = PAYLOAD, *, key: SigningKey = TAM_SUIT_KEY, **kw: object) -> bytes:
    return build_envelope(
        payload,
        key=key,
        component_id=kw.pop("component_id", CID),  # type: ignore[arg-type]
        sequence_number=seq,
        vendor_id=kw.pop("vendor_id", VENDOR),  # type: ignore[arg-type]
        class_id=kw.pop("class_id", CLASS),  # type: ignore[arg-type]
        **kw,  # type: ignore[arg-type]
    )


def resign(
    manifest: bytes, *, key: SigningKey = TAM_SUIT_KEY, extra: dict[object, bytes] | None = None
) -> bytes:
    """An envelope around an arbitrary (possibly hostile) manifest, properly signed."""
    env: dict[object, object] = {2: sign_manifest(manifest, key), 3: manifest}
    env.update(extra or {})
    return cbor2.dumps(env)


def cddl_valid(data: bytes, rule: str, tmp_path: Path) -> tuple[bool, str]:
    """Validate with cddl-verifier against tests/cddl/teep-all.cddl."""
    tool = venv_tool("cddl-verify")
    assert tool, "cddl-verify (PyPI cddl-verifier) is not installed"
    f = tmp_path / f"item-{abs(hash(data))}.cbor"
    f.write_bytes(data)
    p = subprocess.run(
        [tool, "--no-annotate", "-t", rule, str(CDDL_FILE), str(f)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    return p.returncode == 0, p.stdout + p.stderr
