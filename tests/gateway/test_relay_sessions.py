"""GatewayRelay's session table: one upstream client per device session, bounded and expiring.

The upstream here is an in-memory MessageClient (this checks the relay's bookkeeping; the sockets are
in test_gateway_relay.py).
"""

from __future__ import annotations

import pytest

from teep_coap.transport.base import PeerInfo, PeerRejected, Rejection, RequestRejected, TransportError
from teep_coap.transport.gateway import GatewayRelay


class Upstream:
    """Answers b"next" to every message, None (done) to b"last"; records what it saw."""

    made: list[Upstream]

    def __init__(self) -> None:
        self.posts: list[bytes] = []
        self.closed = False
        Upstream.made.append(self)

    async def post(self, payload: bytes) -> bytes | None:
        self.posts.append(payload)
        if payload == b"refuse":
            raise PeerRejected("403", "not yours")
        if payload == b"broken":
            raise TransportError("connection reset")
        return None if payload == b"last" else b"next"

    async def close(self) -> None:
        self.closed = True


def peer(name: str) -> PeerInfo:
    return PeerInfo("coaps", "127.0.0.1:1", identity=name, authenticated=True)


@pytest.fixture
def clock() -> list[float]:
    Upstream.made = []
    return [0.0]


async def test_one_upstream_client_per_device_session(clock: list[float]) -> None:
    relay = GatewayRelay(Upstream, upstream_timeout=1.0, clock=lambda: clock[0])
    assert await relay(b"", peer("a")) == b"next"
    assert await relay(b"", peer("b")) == b"next"
    assert await relay(b"qr", peer("a")) == b"next"
    assert await relay(b"last", peer("a")) is None  # a's session is done: its client is closed
    assert [u.posts for u in Upstream.made] == [[b"", b"qr", b"last"], [b""]]
    assert Upstream.made[0].closed and not Upstream.made[1].closed
    assert relay.open_sessions == 1 and relay.stats.sessions_done == 1
    await relay(b"", peer("b"))  # b starts again: a fresh client, the old one closed
    assert Upstream.made[1].closed and len(Upstream.made) == 3
    await relay.close()
    assert all(u.closed for u in Upstream.made)


async def test_sessions_are_bounded_and_expire(clock: list[float]) -> None:
    relay = GatewayRelay(
        Upstream, upstream_timeout=1.0, max_sessions=2, idle_timeout=10.0, clock=lambda: clock[0]
    )
    await relay(b"", peer("a"))
    await relay(b"", peer("b"))
    await relay(b"", peer("c"))  # over the bound: a (least recently used) goes
    assert relay.open_sessions == 2 and Upstream.made[0].closed
    clock[0] = 11.0
    await relay(b"", peer("d"))  # b and c idle for 11 s: expired
    assert relay.open_sessions == 1 and relay.stats.sessions_expired == 3
    await relay(b"qr", peer("d"))  # d's session goes on with its client
    assert Upstream.made[-1].posts == [b"", b"qr"]
    await relay.close()


async def test_upstream_statuses_map_to_device_rejections(clock: list[float]) -> None:
    relay = GatewayRelay(Upstream, upstream_timeout=1.0, clock=lambda: clock[0])
    with pytest.raises(RequestRejected) as refused:
        await relay(b"refuse", peer("a"))
    assert refused.value.rejection is Rejection.FORBIDDEN
    with pytest.raises(RequestRejected) as broken:
        await relay(b"broken", peer("a"))
    assert broken.value.rejection is Rejection.BAD_GATEWAY
    assert relay.open_sessions == 0 and relay.stats.sessions_failed == 2
    assert relay.stats.upstream_errors == {"forbidden": 1, "bad-gateway": 1}
    with pytest.raises(TransportError, match="positive"):
        GatewayRelay(Upstream, upstream_timeout=0)
