"""Fuzz the SUIT parser, verifier and processor: random and mutated input yields only typed errors."""

from __future__ import annotations

import contextlib
import tempfile
from pathlib import Path

import cbor2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from teep_coap.security.errors import SecurityError
from teep_coap.security.suit import SuitError, parse_envelope, parse_report, process_envelope, verify_envelope
from teep_coap.store.components import ComponentStore
from tests.conftest import read_hex_vector
from tests.security.test_suit_support import DEVICE, SUIT_EXAMPLES_KEY, TAM_SUIT_KEY, envelope

FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SEEDS = [
    read_hex_vector("suit_uri"),
    read_hex_vector("suit_integrated"),
    read_hex_vector("suit_personalization"),
    envelope(1),
    envelope(2, uri="coap://[::1]/x", integrated=False, tagged=True),
]
TRUST = [SUIT_EXAMPLES_KEY, TAM_SUIT_KEY.public]
TYPED = (SuitError, SecurityError)


def _check(data: bytes) -> None:
    with contextlib.suppress(TYPED):
        parse_envelope(data)
    with contextlib.suppress(TYPED):
        # verify_envelope decodes the manifest lazily: reading it must fail typed, too.
        verify_envelope(data, TRUST).manifest  # noqa: B018


@FUZZ
@given(st.binary(max_size=400))
def test_random_bytes(data: bytes) -> None:
    _check(data)
    with contextlib.suppress(TYPED):
        parse_report(data)


@FUZZ
@given(st.sampled_from(SEEDS), st.integers(min_value=0), st.binary(min_size=1, max_size=6))
def test_mutated_envelopes(seed: bytes, pos: int, patch: bytes) -> None:
    i = pos % len(seed)
    _check(seed[:i] + patch + seed[i + len(patch) :])


@FUZZ
@given(st.sampled_from(SEEDS), st.integers(min_value=0), st.integers(min_value=0, max_value=8))
def test_truncated_and_deleted(seed: bytes, pos: int, n: int) -> None:
    i = pos % len(seed)
    _check(seed[:i])
    _check(seed[:i] + seed[i + n :])


_cbor_leaf = st.one_of(
    st.integers(min_value=-(2**64), max_value=2**64 - 1),
    st.binary(max_size=20),
    st.text(max_size=10),
    st.booleans(),
    st.none(),
)
_cbor_tree = st.recursive(
    _cbor_leaf,
    lambda kids: st.one_of(
        st.lists(kids, max_size=5),
        st.dictionaries(st.one_of(st.integers(-30, 30), st.text(max_size=4)), kids, max_size=5),
    ),
    max_leaves=25,
)


@FUZZ
@given(_cbor_tree, _cbor_tree, st.dictionaries(st.integers(0, 30), _cbor_tree, max_size=4))
def test_structured_garbage_in_envelope_slots(
    wrapper: object, manifest: object, extra: dict[int, object]
) -> None:
    """Well-formed CBOR of the wrong shape in every place: wrapper, manifest, extra members."""
    env: dict[object, object] = {2: cbor2.dumps(wrapper), 3: cbor2.dumps(manifest)}
    env.update(extra)
    _check(cbor2.dumps(env))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(min_value=0), st.binary(min_size=1, max_size=4))
def test_processor_on_mutations_returns_typed_failures(pos: int, patch: bytes) -> None:
    seed = envelope(3)
    i = pos % len(seed)
    data = seed[:i] + patch + seed[i + len(patch) :]
    with tempfile.TemporaryDirectory() as d:
        store = ComponentStore(Path(d))
        r = process_envelope(data, trust=TAM_SUIT_KEY.public, store=store, device=DEVICE)
        if not r.success:
            assert isinstance(r.error, SuitError)
            assert store.list() == []


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(min_value=0), st.binary(min_size=1, max_size=4), st.booleans())
def test_signed_hostile_manifests_reach_the_interpreter(pos: int, patch: bytes, integrated: bool) -> None:
    """Mutated manifests that are properly signed: authentication passes, so parsing of the inner
    structures and the command interpreter see the garbage; still only typed failures."""
    from tests.security.test_suit_support import resign

    manifest = cbor2.loads(envelope(3))[3]
    i = pos % len(manifest)
    mutated = manifest[:i] + patch + manifest[i + len(patch) :]
    data = resign(mutated, extra={"#tc": b"Hello, Secure World!"} if integrated else None)
    with tempfile.TemporaryDirectory() as d:
        store = ComponentStore(Path(d))
        r = process_envelope(
            data, trust=TAM_SUIT_KEY.public, store=store, device=DEVICE, fetcher=lambda u: b""
        )
        assert r.success or isinstance(r.error, SuitError)
        if not r.success:
            assert store.list() == []


def _report_seeds() -> list[bytes]:
    from teep_coap.security.suit import ReportResult, SuitDigest, SuitRecord, build_report, sign_report

    rec = SuitRecord(20, 10, 0, {3: SuitDigest.of(b"x"), 14: 1})
    ok = build_report(manifest_uri="coap://tam/x.suit", manifest_digest=SuitDigest.of(b"m"), nonce=b"t" * 16)
    bad = build_report(
        manifest_uri="", manifest_digest=SuitDigest.of(b"m"), records=[rec], failure=ReportResult(3, rec, 10)
    )
    return [
        ok.encode(),
        bad.encode(),
        sign_report(ok, TAM_SUIT_KEY),
        sign_report(bad, TAM_SUIT_KEY, tagged=False),
    ]


REPORT_SEEDS = _report_seeds()


@FUZZ
@given(
    st.sampled_from(REPORT_SEEDS), st.integers(min_value=0), st.binary(min_size=1, max_size=4), st.booleans()
)
def test_mutated_reports(seed: bytes, pos: int, patch: bytes, with_trust: bool) -> None:
    from teep_coap.security.suit import SuitReportError

    i = pos % len(seed)
    data = seed[:i] + patch + seed[i + len(patch) :]
    with contextlib.suppress(SuitReportError):
        parse_report(data, TAM_SUIT_KEY.public if with_trust else None)
