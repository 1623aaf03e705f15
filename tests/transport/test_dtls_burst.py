"""Bursts of DTLS clients: aiocoap's retransmission timer on tinydtls' clock, and a real burst.

The figure for 200 clients comes from `teep-coap bench dtls-burst` (docs/security.md); this guards
the fix with a smaller burst of real `agent run` processes, every one of which must finish.
"""

from __future__ import annotations

import time

import aiocoap.meta
import pytest

from teep_coap.bench.dtls_burst import run_burst
from teep_coap.transport.coap import aiocoap_patches


def test_patch_applies_to_the_pinned_aiocoap() -> None:
    assert aiocoap.meta.version == aiocoap_patches.WRITTEN_FOR
    assert aiocoap_patches.apply() and aiocoap_patches.applied()


def _first_retransmission_in() -> float:
    """Seconds until a fresh handshake's first retransmission, by tinydtls' due time and our clock."""
    from aiocoap.transports.tinydtls import DTLS_TICKS_PER_SECOND
    from DTLSSocket import dtls

    ctx = dtls.DTLS(
        read=lambda *_: 0, write=lambda *_: 0, event=lambda *_: 0, pskId=b"x", pskStore={b"x": b"k" * 16}
    )
    session = ctx.connect("::1", 1234)  # kept: a dropped session cancels its retransmissions
    due = ctx.checkRetransmit() / DTLS_TICKS_PER_SECOND
    assert session is not None and due > 0
    return due - aiocoap_patches.tinydtls_now()


def test_retransmission_wait_reads_tinydtls_clock() -> None:
    """tinydtls' first retransmission comes 2 s after the ClientHello; our clock must agree, also for
    a context made later (DTLSSocket restarts tinydtls' clock in every constructor)."""
    from aiocoap.transports.tinydtls import DTLS_TICKS_PER_SECOND

    aiocoap_patches.apply()
    assert 1.9 < _first_retransmission_in() <= 2.05
    time.sleep(1.1)  # aiocoap's own clock is now off by >= 1.1 s: a wait computed with it is wrong
    assert 1.9 < _first_retransmission_in() <= 2.05
    assert aiocoap_patches.RETRANSMIT_FLOOR <= aiocoap_patches.retransmission_wait(0) <= 0.05
    later = int((aiocoap_patches.tinydtls_now() + 60) * DTLS_TICKS_PER_SECOND)
    assert aiocoap_patches.retransmission_wait(later) == aiocoap_patches.RETRANSMIT_CEILING


@pytest.mark.timeout(300)
def test_burst_of_30_dtls_agents_all_complete() -> None:
    result = run_burst("coaps-psk", clients=30, bound=240)
    assert result.ok == 30, result.to_json()
    assert result.tam_sessions_done == 30
