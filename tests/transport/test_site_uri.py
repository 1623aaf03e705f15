"""The Site's stripped copy of a request still knows the whole request's URI, worked out when asked
(the TAM's path never asks; composing it for every request was ≈ 6 % of a coap-constrained TAM)."""

from __future__ import annotations

import gc

import aiocoap.resource
from aiocoap import POST, Message

from teep_coap.transport.coap.aiocoap_compat.site import ExactPathSite


def _stripped(uri: str) -> tuple[Message, Message]:
    site = ExactPathSite()
    site.add_resource(["teep"], aiocoap.resource.Resource())
    request = Message(code=POST, uri=uri)
    _child, stripped = site._find_child_and_pathstripped_message(request)
    return request, stripped


def test_the_stripped_request_has_no_path_and_the_whole_uri() -> None:
    for uri in ("coap://127.0.0.1:5683/teep", "coap://[::1]:61616/teep?x=1&y=2"):
        request, stripped = _stripped(uri)
        assert stripped.opt.uri_path == () and request.opt.uri_path == ("teep",)
        assert stripped.get_request_uri() == request.get_request_uri() == uri
        assert stripped.opt.uri_query == request.opt.uri_query  # the rest of the options kept


def test_the_stripped_copy_holds_no_reference_back_to_its_request() -> None:
    """A reference back would make a reference cycle per request, freed only by a full collection."""
    request, stripped = _stripped("coap://127.0.0.1:5683/teep")
    assert request not in gc.get_referents(stripped)
    assert all(request not in gc.get_referents(r) for r in gc.get_referents(stripped))
