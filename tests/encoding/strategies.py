"""Hypothesis strategies for valid TEEP message models (shared by the property tests)."""

from __future__ import annotations

from typing import Any

import cbor2
from cbor2 import CBORSimpleValue, CBORTag, undefined
from hypothesis import strategies as st

from teep_coap.encoding.fields import OPTION_FIELDS
from teep_coap.model import (
    Error,
    QueryRequest,
    QueryResponse,
    RequestedTcInfo,
    Success,
    SystemPropertyClaims,
    Update,
)

U64 = (1 << 64) - 1
uint = st.integers(0, U64)
uint32 = st.integers(0, (1 << 32) - 1)
cbor_int = st.integers(-(1 << 64), U64)
token = st.binary(min_size=8, max_size=64)
challenge = st.binary(min_size=8, max_size=80)
short_text = st.text(min_size=1, max_size=30)
lang = st.text(min_size=1, max_size=8)
compid = st.lists(st.binary(max_size=12), max_size=4).map(tuple)
suites = st.lists(
    st.lists(st.tuples(uint, cbor_int), min_size=1, max_size=2).map(tuple), min_size=1, max_size=3
).map(tuple)
profiles = st.lists(st.tuples(cbor_int, cbor_int, cbor_int, cbor_int), min_size=1, max_size=4).map(tuple)
# tags cbor2 leaves alone (not 0-5, 25, 28-30, 35-37, 100, 256, 258, 260, 261, 1004, 43000, 55799)
free_tag = st.one_of(st.integers(6, 24), st.integers(38, 99), st.integers(1005, 40000))

leaf = st.one_of(
    cbor_int,
    st.binary(max_size=16),
    st.text(max_size=8),
    st.booleans(),
    st.none(),
    st.floats(allow_nan=False),
    st.just(undefined),
    st.one_of(st.integers(0, 19), st.integers(32, 255)).map(CBORSimpleValue),
)
hashable_leaf = st.one_of(cbor_int, st.binary(max_size=8), st.text(max_size=6), st.booleans())


def _containers(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(hashable_leaf, children, max_size=4),
        st.builds(CBORTag, free_tag, children),
    )


generic = st.recursive(leaf, _containers, max_leaves=8)


def extensions(mtype: int) -> st.SearchStrategy[dict[int, Any]]:
    known = {label for label, _a, _k in OPTION_FIELDS[mtype]}  # type: ignore[index]
    labels = st.one_of(st.integers(0, 23).filter(lambda x: x not in known), st.integers(24, 1 << 32))
    return st.dictionaries(labels, generic, max_size=3)


def opt(s: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(st.none(), s)


claims = st.builds(
    SystemPropertyClaims,
    component_id=compid,
    parameters=st.dictionaries(st.integers(1, 30), generic, min_size=1, max_size=3),
)
rtc = st.builds(
    RequestedTcInfo,
    component_id=compid,
    tc_manifest_sequence_number=opt(uint),
    have_binary=opt(st.booleans()),
)
bstr_list = st.lists(st.binary(max_size=40), min_size=1, max_size=3).map(tuple)

messages = st.one_of(
    st.builds(
        QueryRequest,
        token=opt(token),
        supported_freshness_mechanisms=opt(st.lists(uint, min_size=1, max_size=3).map(tuple)),
        challenge=opt(challenge),
        versions=opt(st.lists(uint32, min_size=1, max_size=3).map(tuple)),
        attestation_payload_format=opt(st.text(max_size=20)),
        attestation_payload=opt(st.binary(max_size=40)),
        suit_reports=opt(bstr_list),
        supported_teep_cipher_suites=suites,
        supported_suit_cose_profiles=profiles,
        data_item_requested=uint,
        extra_positional=st.lists(generic, max_size=2).map(tuple),
        extensions=extensions(1),
    ),
    st.builds(
        QueryResponse,
        token=opt(token),
        selected_version=opt(uint32),
        attestation_payload_format=opt(st.text(max_size=20)),
        attestation_payload=opt(st.binary(max_size=40)),
        suit_reports=opt(bstr_list),
        tc_list=opt(st.lists(claims, min_size=1, max_size=2).map(tuple)),
        requested_tc_list=opt(st.lists(rtc, min_size=1, max_size=2).map(tuple)),
        unneeded_manifest_list=opt(st.lists(compid, min_size=1, max_size=2).map(tuple)),
        ext_list=opt(st.lists(uint32, min_size=1, max_size=3).map(tuple)),
        selected_teep_cipher_suite=opt(generic),
        extensions=extensions(2),
    ),
    st.builds(
        Update,
        token=opt(token),
        unneeded_manifest_list=opt(st.lists(compid, min_size=1, max_size=2).map(tuple)),
        manifest_list=opt(bstr_list),
        attestation_payload_format=opt(st.text(max_size=20)),
        attestation_payload=opt(st.binary(max_size=40)),
        err_code=opt(uint),
        err_msg=opt(short_text),
        err_lang=opt(lang),
        extensions=extensions(3),
    ),
    st.builds(
        Success, token=opt(token), msg=opt(short_text), suit_reports=opt(bstr_list), extensions=extensions(5)
    ),
    st.builds(
        Error,
        err_code=uint,
        token=opt(token),
        err_msg=opt(short_text),
        err_lang=opt(lang),
        supported_teep_cipher_suites=opt(suites),
        supported_freshness_mechanisms=opt(st.lists(uint, min_size=1, max_size=3).map(tuple)),
        supported_suit_cose_profiles=opt(profiles),
        challenge=opt(challenge),
        versions=opt(st.lists(uint32, min_size=1, max_size=3).map(tuple)),
        suit_reports=opt(bstr_list),
        extra_positional=st.lists(generic, max_size=2).map(tuple),
        extensions=extensions(6),
    ),
)

# messages that use only values the CDDL knows (for the cddl-verifier check)
SUITES_OK = (((18, -9),), ((18, -19),))
PROFILES_OK = ((-16, -9, -29, -65534), (-16, -19, -29, -65534), (-16, -9, -29, 1), (-16, -19, -29, 24))
ERR_CODES = (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 17)
# system-property-claims with SUIT parameters the CDDL types: 3 image-digest (bstr .cbor
# SUIT_Digest) and 14 image-size (uint)
cddl_claims = st.builds(
    lambda compid, digest, size: SystemPropertyClaims(
        component_id=compid,
        parameters={3: cbor2.dumps([-16, digest]), **({14: size} if size is not None else {})},
    ),
    compid,
    st.binary(min_size=32, max_size=32),
    opt(st.integers(0, 1 << 40)),
)
cddl_messages = st.one_of(
    st.builds(
        QueryRequest,
        token=opt(token),
        supported_freshness_mechanisms=opt(
            st.lists(st.sampled_from((0, 1)), min_size=1, max_size=2).map(tuple)
        ),
        challenge=opt(challenge),
        versions=opt(st.lists(uint32, min_size=1, max_size=3).map(tuple)),
        attestation_payload_format=opt(st.text(max_size=20)),
        attestation_payload=opt(st.binary(max_size=40)),
        supported_teep_cipher_suites=st.lists(st.sampled_from(SUITES_OK), min_size=1, max_size=2).map(tuple),
        supported_suit_cose_profiles=st.lists(st.sampled_from(PROFILES_OK), min_size=1, max_size=4).map(
            tuple
        ),
        data_item_requested=st.integers(0, 15),
    ),
    st.builds(
        QueryResponse,
        token=opt(token),
        selected_version=opt(uint32),
        attestation_payload=opt(st.binary(max_size=40)),
        tc_list=opt(st.lists(cddl_claims, min_size=1, max_size=2).map(tuple)),
        requested_tc_list=opt(st.lists(rtc, min_size=1, max_size=2).map(tuple)),
        unneeded_manifest_list=opt(st.lists(compid, min_size=1, max_size=2).map(tuple)),
        ext_list=opt(st.lists(uint32, min_size=1, max_size=3).map(tuple)),
    ),
    st.builds(
        Update,
        token=opt(token),
        err_code=opt(st.sampled_from(ERR_CODES)),
        err_msg=opt(short_text),
        err_lang=opt(lang),
        unneeded_manifest_list=opt(st.lists(compid, min_size=1, max_size=2).map(tuple)),
    ),
    st.builds(Success, token=opt(token), msg=opt(short_text)),
    st.builds(
        Error,
        err_code=st.sampled_from(ERR_CODES),
        token=opt(token),
        err_msg=opt(short_text),
        err_lang=opt(lang),
        challenge=opt(challenge),
        supported_teep_cipher_suites=opt(
            st.lists(st.sampled_from(SUITES_OK), min_size=1, max_size=2).map(tuple)
        ),
        versions=opt(st.lists(uint32, min_size=1, max_size=2).map(tuple)),
    ),
)
