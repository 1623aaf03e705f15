"""Options decoded with the memo are what aiocoap decodes, for good and malformed headers alike."""

from __future__ import annotations

import random

import pytest
from aiocoap import POST, Message
from aiocoap.numbers.optionnumbers import OptionNumber
from aiocoap.options import Options

from teep_coap.transport.coap.aiocoap_compat import option_memo
from teep_coap.transport.coap.aiocoap_compat.option_memo import (
    MEMO_NUMBERS,
    MEMO_VALUE_MAX,
    OPTION_MEMO,
    decode_options,
    original_decode,
)


def _decoded(decode: object, raw: bytes) -> tuple[str, object]:
    """('ok', (options as (number, encoded value), payload)) or ('error', its type and text)."""
    opts = Options()
    try:
        payload = decode(opts, raw)  # type: ignore[operator]
    except Exception as exc:
        return "error", (type(exc).__name__, str(exc))
    return "ok", ([(int(o.number), o.encode()) for o in opts.option_list()], bytes(payload))


def _options_of(msg: Message) -> bytes:
    """The option header and payload of `msg` as aiocoap encodes them (after the token)."""
    return msg.opt.encode() + (b"\xff" + msg.payload if msg.payload else b"")


def _messages() -> list[bytes]:
    teep = Message(code=POST, payload=b"\xa1\x01\x02", uri_path=("teep",), content_format=19)
    teep.opt.block2 = (3, False, 6)
    teep.opt.size2 = 1400
    echo = Message(code=POST, uri_path=("tam", "teep"), echo=b"\x01" * 8)
    echo.opt.uri_query = ("a=1", "b" * 300)  # a length in two extension bytes
    odd = Message(code=POST)
    odd.opt.add_option(OptionNumber(2000).create_option(value=b"\x00" * 20))  # delta in 2 bytes
    odd.opt.add_option(OptionNumber(2015).create_option(value=b"x"))  # delta in 1 byte
    return [_options_of(m) for m in (teep, echo, odd)] + [b"", b"\xff", b"\xffpayload"]


@pytest.mark.parametrize("raw", _messages())
def test_well_formed_options_decode_as_aiocoap_decodes_them(raw: bytes) -> None:
    assert _decoded(decode_options, raw) == _decoded(original_decode(), raw)
    assert _decoded(decode_options, raw) == _decoded(decode_options, raw)  # from the memo this time


def test_malformed_and_random_option_headers_fail_or_pass_as_in_aiocoap() -> None:
    rng = random.Random(7)
    # cut short, a 15 nibble, bad UTF-8 in a Uri-Path
    cases = [b"\xd0", b"\xe0\x01", b"\x0d", b"\xf0", b"\x0f", b"\xb4te", b"\xb2\xc3\x28"]
    good = _messages()
    for _ in range(3000):
        base = bytearray(rng.choice(good) or b"\xb4teep")
        for _ in range(rng.randint(1, 4)):
            base[rng.randrange(len(base))] = rng.randrange(256)
        cases.append(bytes(base[: rng.randint(0, len(base))]))
        cases.append(bytes(rng.randrange(256) for _ in range(rng.randint(1, 12))))
    outcomes = {"ok": 0, "error": 0}
    for raw in cases:
        ours = _decoded(decode_options, raw)
        assert ours == _decoded(original_decode(), raw), raw.hex()
        outcomes[ours[0]] += 1
    assert outcomes["ok"] > 100 and outcomes["error"] > 100  # both kinds were exercised


def test_a_repeated_option_is_the_same_object_and_a_per_message_one_is_not() -> None:
    first, second = Options(), Options()
    raw = _messages()[1]  # Uri-Path (memoised) and Echo (not)
    decode_options(first, raw)
    decode_options(second, raw)
    assert first.get_option(OptionNumber.URI_PATH)[0] is second.get_option(OptionNumber.URI_PATH)[0]
    assert first.get_option(OptionNumber.ECHO)[0] is not second.get_option(OptionNumber.ECHO)[0]
    assert int(OptionNumber.ECHO) not in MEMO_NUMBERS


def test_the_memo_stays_bounded_under_made_up_values() -> None:
    for i in range(3 * OPTION_MEMO):
        msg = Message(code=POST, uri_path=(f"p{i}",))
        decode_options(Options(), _options_of(msg))
        assert option_memo.memo_size() <= OPTION_MEMO
    decode_options(Options(), _messages()[0])  # the common options come back after a flood
    assert option_memo.memo_size() >= 1


def test_long_values_are_never_kept() -> None:
    """A peer's long made-up Uri-Paths would otherwise hold up to OPTION_MEMO × 64 KiB."""
    first, second = Options(), Options()
    raw = _options_of(Message(code=POST, uri_path=("x" * (MEMO_VALUE_MAX + 1),)))
    before = option_memo.memo_size()
    decode_options(first, raw)
    decode_options(second, raw)
    assert option_memo.memo_size() == before
    assert first.get_option(OptionNumber.URI_PATH)[0] is not second.get_option(OptionNumber.URI_PATH)[0]
    assert first.uri_path == second.uri_path == ("x" * (MEMO_VALUE_MAX + 1),)


def test_installed_it_decodes_whole_messages_and_keeps_their_payload() -> None:
    assert option_memo.memoise_option_decoding() and option_memo.memoise_option_decoding()
    assert Options.decode is decode_options
    msg = Message(code=POST, payload=b"body", uri_path=("teep",), content_format=19)
    msg.mid, msg.token = 7, b"tk"
    msg.mtype = msg.mtype or 0
    back = Message.decode(msg.encode())
    assert (back.opt.uri_path, back.opt.content_format, back.payload) == (("teep",), 19, b"body")
