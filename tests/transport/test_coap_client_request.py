"""The CoAP client's request: aiocoap copies it for every Block2 follow-up (`Message.copy`), and those
copies must not deep-copy its options (~0.1 ms each) nor share the lists a copy may change."""

from __future__ import annotations

from aiocoap.numbers.optionnumbers import OptionNumber
from aiocoap.optiontypes import BlockOption

from teep_coap.profiles import load_profile
from teep_coap.profiles.stack import coap_options
from teep_coap.transport.coap import CoapClient


def test_copies_of_a_request_share_option_objects_but_not_lists() -> None:
    client = CoapClient(coap_options(load_profile("coap")), "coap://127.0.0.1:5683/tc")
    request = client._request(b"\xa0" * 2000)  # Block1-sized: a block option is set
    before = request.opt.encode()
    follow_up = request.copy(payload=b"", mid=None, token=None)  # what aiocoap does for a next block
    assert follow_up.opt.encode() == before
    path = OptionNumber.URI_PATH
    assert follow_up.opt.get_option(path)[0] is request.opt.get_option(path)[0]  # shared, not copied
    follow_up.opt.block2 = BlockOption.BlockwiseTuple(1, False, 6)
    follow_up.opt.add_option(path.create_option(value="more"))
    assert request.opt.encode() == before  # the original's lists are its own
    assert follow_up.opt.uri_path == (*request.opt.uri_path, "more")
