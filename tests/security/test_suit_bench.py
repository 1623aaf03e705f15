"""The SUIT rate functions `teep-coap bench crypto` calls: they run and measure something real."""

from __future__ import annotations

from teep_coap.bench.suit import (
    measure_envelope_build,
    measure_envelope_parse,
    measure_envelope_verify,
    measure_envelope_verify_and_read,
    sample_envelope,
)
from teep_coap.security.suit import verify_envelope


def test_rates_are_positive_and_verify_is_slower_than_parse() -> None:
    verify = measure_envelope_verify(0.2)
    parse = measure_envelope_parse(0.2)
    assert 0 < verify < parse  # a signature check costs more than parsing alone
    assert measure_envelope_verify(0.05, alg="ed25519") > 0
    assert measure_envelope_build(0.05) > 0


def test_reading_the_manifest_after_verify_costs_extra() -> None:
    # verify_envelope leaves the manifest undecoded; reading it afterwards is a real decode.
    assert 0 < measure_envelope_verify_and_read(0.2) < measure_envelope_verify(0.2)


def test_sample_envelope_really_verifies() -> None:
    env, trust = sample_envelope()
    assert verify_envelope(env, trust).verified
