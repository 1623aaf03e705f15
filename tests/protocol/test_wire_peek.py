"""`peek_signers` and `open(..., hint=)`: the signers read before verifying, and a message a TAM
receives decoded once for both."""

from __future__ import annotations

from collections import Counter
from typing import Any

import cbor2
import pytest

from teep_coap.model.teep import Success
from teep_coap.protocol.wire import CoseWire, peek_signers, seal
from teep_coap.security import cose
from teep_coap.security.errors import CoseDecodeError

from .conftest import World, key

WIRE = CoseWire()


def _counting_parses(monkeypatch: pytest.MonkeyPatch) -> Counter[bytes]:
    seen: Counter[bytes] = Counter()
    parse = cose._parse

    def counted(data: bytes, *, allow_untagged: bool) -> Any:
        seen[bytes(data)] += 1
        return parse(data, allow_untagged=allow_untagged)

    monkeypatch.setattr(cose, "_parse", counted)
    return seen


def test_the_hint_of_a_sign1_names_its_signer_and_opens_it_without_a_second_parse(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    signer = key("device")
    data = seal(Success(token=b"t" * 16), signer)
    seen = _counting_parses(monkeypatch)
    hint = WIRE.peek(data)
    assert hint.structure == "COSE_Sign1" and hint.single
    assert hint.signers == ((signer.kid, signer.alg),)
    assert hint.parsed is not None and hint.parsed.data is data
    opened = WIRE.open(data, [signer.public], hint=hint)
    assert opened.message == Success(token=b"t" * 16) and opened.kid == signer.kid
    assert seen == {data: 1}
    # without the hint: the same result, the bytes decoded again
    again = WIRE.open(data, [signer.public])
    assert (again.message, again.kid, again.key) == (opened.message, opened.kid, opened.key)
    assert seen == {data: 2}


def test_the_hint_of_a_cose_sign_names_every_signer() -> None:
    first, second = key("tam-a"), key("tam-b", "ed25519")
    data = seal(Success(token=b"u" * 8), [first, second])
    hint = peek_signers(data)
    assert hint.structure == "COSE_Sign" and not hint.single
    assert hint.signers == ((first.kid, first.alg), (second.kid, second.alg))
    opened = WIRE.open(data, [second.public], hint=hint)
    assert opened.kid == second.kid and opened.message == Success(token=b"u" * 8)


def test_a_hint_made_from_other_bytes_is_not_used() -> None:
    signer = key("device")
    mine = seal(Success(token=b"a" * 16), signer)
    other = seal(Success(token=b"b" * 16), signer)
    opened = WIRE.open(mine, [signer.public], hint=peek_signers(other))
    assert opened.message == Success(token=b"a" * 16)
    # equal bytes in another object are parsed anew rather than trusted by value
    copy = bytes(bytearray(mine))
    assert WIRE.open(copy, [signer.public], hint=peek_signers(mine)).payload == opened.payload


def _sign1_with_alg_unprotected(signer_kid: bytes, alg: int) -> bytes:
    body = [b"", {1: alg, 4: signer_kid}, cbor2.dumps({}), b"\x00" * 64]
    return cbor2.dumps(cbor2.CBORTag(18, body))


def test_what_the_strict_parser_refuses_is_peeked_leniently_and_refused_by_open() -> None:
    signer = key("device")
    data = _sign1_with_alg_unprotected(signer.kid, signer.alg)
    hint = peek_signers(data)
    assert hint.signers == ((signer.kid, signer.alg),) and hint.parsed is None
    with pytest.raises(CoseDecodeError, match="alg must be in the protected header"):
        WIRE.open(data, [signer.public], hint=hint)


def test_an_empty_kid_names_no_key_in_either_reading() -> None:
    signer = key("device")
    strict = seal(Success(token=b"c" * 16), signer)
    tagged = cbor2.loads(strict)
    assert tagged.value[1] == {4: signer.kid}  # seal puts the kid in the unprotected header
    tagged.value[1] = {4: b""}
    no_kid = cbor2.dumps(tagged)
    assert peek_signers(no_kid).signers == ((None, signer.alg),)
    assert peek_signers(no_kid).parsed is not None
    lenient = _sign1_with_alg_unprotected(b"", signer.alg)
    assert peek_signers(lenient).signers == ((None, signer.alg),)


def test_the_tam_decodes_each_message_of_a_session_once(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    world.publish(1, seq=1)
    seen = _counting_parses(monkeypatch)
    session = world.session()
    assert session.result is not None and session.result.ok
    # what the device sent (QueryResponse with its evidence, Success) and what the TAM sent (read by
    # the Agent): every COSE object parsed once, none twice
    assert seen and max(seen.values()) == 1, {len(k): v for k, v in seen.items() if v > 1}
    for sent in session.sent[1:]:
        assert seen[sent] == 1
