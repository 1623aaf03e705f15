"""`aiocoap_compat.block_key` tells two requests apart exactly when aiocoap's `_extract_block_key`
does: the fast path's Block2 cache and the Block1 spool use it in its place."""

from __future__ import annotations

from typing import Any

from aiocoap import GET, POST, Message
from aiocoap.blockwise import _extract_block_key
from hypothesis import given, settings
from hypothesis import strategies as st

from teep_coap.transport.coap.aiocoap_compat import block_key


class _Remote:
    def __init__(self, key: Any) -> None:
        self.blockwise_key = key


_SETTERS = {
    "uri_path": st.lists(st.sampled_from(["teep", "tp", "a"]), min_size=1, max_size=2).map(tuple),
    "uri_query": st.lists(st.sampled_from(["q=1", "q=2"]), max_size=2).map(tuple),
    "content_format": st.sampled_from([0, 60, 65000]),
    "accept": st.sampled_from([60, 65000]),
    "size1": st.integers(0, 3),  # NoCacheKey: never part of either key
    "size2": st.integers(0, 3),
    "block1": st.tuples(st.integers(0, 2), st.booleans(), st.just(2)),
    "block2": st.tuples(st.integers(0, 2), st.booleans(), st.just(2)),
    "observe": st.integers(0, 1),
    "request_tag": st.lists(st.sampled_from([b"", b"a", b"b"]), max_size=2).map(tuple),
    "echo": st.sampled_from([b"e1", b"e2"]),
}


@st.composite
def _requests(draw: st.DrawFn) -> Message:
    msg = Message(code=draw(st.sampled_from([POST, GET])), payload=draw(st.binary(max_size=4)))
    msg.remote = _Remote(draw(st.sampled_from([("p", 1), ("p", 2)])))
    for name in draw(st.sets(st.sampled_from(sorted(_SETTERS)))):
        setattr(msg.opt, name, draw(_SETTERS[name]))
    return msg


@settings(max_examples=400, deadline=None)
@given(_requests(), _requests())
def test_the_same_requests_share_a_key_as_in_aiocoap(a: Message, b: Message) -> None:
    assert (block_key(a) == block_key(b)) == (_extract_block_key(a) == _extract_block_key(b))
    assert block_key(a) == block_key(a) and hash(block_key(a)) == hash(block_key(a))


def test_blocks_of_one_upload_share_a_key_and_other_uploads_do_not() -> None:
    def request(number: int, **options: Any) -> Message:
        msg = Message(code=POST, uri_path=("teep",), content_format=65000, **options)
        msg.opt.block1 = (number, True, 2)
        msg.opt.size1 = 100 + number  # NoCacheKey: ignored
        msg.remote = _Remote(("p", 1))
        return msg

    assert block_key(request(0)) == block_key(request(3))
    assert block_key(request(0)) != block_key(request(0, uri_query=("q=1",)))
    assert block_key(request(0)) != block_key(request(0, request_tag=(b"t",)))
