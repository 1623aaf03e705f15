"""Cheaper copies of requests and responses, and the Site that serves exact paths."""

from __future__ import annotations

import copy
import logging
from typing import Any

import aiocoap
import aiocoap.error
import aiocoap.meta
import aiocoap.resource
from aiocoap import Message
from aiocoap.numbers.optionnumbers import OptionNumber
from aiocoap.options import Options

log = logging.getLogger("teep_coap.transport.coap")


# --- cheaper copies of requests and responses ----------------------------------------------------

_URI_PATH = OptionNumber.URI_PATH


class _SharedOptions(Options):
    """Options whose (deep) copy shares the option objects and copies only the per-number lists.

    aiocoap copies messages with `Message.copy`, which deep-copies the options: the Site's path
    strip (twice per request) and each Block2 chunk of a response; ≈ 1 ms of the TAM's CPU per
    session in all. aiocoap replaces options, it never changes an option object in place, so
    sharing them is safe; the lists are copied so that adding an option to one message does not
    add it to the other.
    """

    __slots__ = ()

    def __deepcopy__(self, memo: dict[int, Any]) -> _SharedOptions:
        new = _SharedOptions()
        new._options = {k: list(v) for k, v in self._options.items()}
        return new


def with_shared_options(msg: Message) -> Message:
    """`msg` with options that copy cheaply (same slots, so the class can be swapped in place)."""
    msg.opt.__class__ = _SharedOptions
    return msg


def _without_path(request: Message) -> Message:
    """`request.copy(uri_path=())` without a deep copy of every option."""
    new = copy.copy(request)
    opts = _SharedOptions()
    opts._options = {k: list(v) for k, v in request.opt._options.items() if k != _URI_PATH}
    new.opt = opts
    return new


class _StrippedRequest(Message):
    """A request with its path stripped for the resource, whose URI is still the whole request's,
    worked out only if asked for: aiocoap's Site stores it on every stripped copy, and composing it
    from the options cost ≈ 6 % of a coap-constrained TAM's instructions (the TEEP resource never
    asks). The path is kept, not the request: a reference back would make a cycle per request."""

    _teep_path: tuple[str, ...]

    def get_request_uri(self, *, local_is_server: bool | None = None) -> str:
        whole = copy.copy(self)
        whole.__class__ = Message
        whole.opt = copy.deepcopy(self.opt)  # _SharedOptions: the lists copied, the options shared
        whole.opt.uri_path = self._teep_path
        if local_is_server is None:
            return whole.get_request_uri()
        return whole.get_request_uri(local_is_server=local_is_server)


class ExactPathSite(aiocoap.resource.Site):
    """aiocoap's Site with a cheaper path strip for exact matches (the TEEP resource's path)."""

    def _find_child_and_pathstripped_message(self, request: Message) -> tuple[Any, Message]:
        child = self._resources.get(request.opt.uri_path)
        if child is None:
            return super()._find_child_and_pathstripped_message(request)
        stripped = getattr(request, "_teep_stripped", None)
        if stripped is None:  # the same request is looked up twice (block-wise check, then render)
            stripped = _without_path(request)
            stripped.__class__ = _StrippedRequest
            stripped._teep_path = request.opt.uri_path
            request._teep_stripped = stripped
        return child, stripped
