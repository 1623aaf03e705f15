"""Fixtures of the transport tests (helpers live in coap_helpers.py), and the event loops they run on."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping

import pytest
import uvloop
from coap_helpers import creds

__all__ = ["creds"]


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> Mapping[str, Callable[[], asyncio.AbstractEventLoop]]:
    """asyncio's loop; and uvloop too for the tests marked `both_event_loops` (the CoAP servers'):
    `tam serve` runs a CoAP profile on uvloop where it is installed (profiles/event_loop.py)."""
    factories: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {"asyncio": asyncio.new_event_loop}
    if item.get_closest_marker("both_event_loops") is not None:
        factories["uvloop"] = uvloop.new_event_loop
    return factories
