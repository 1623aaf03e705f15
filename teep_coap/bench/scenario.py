"""The reference provisioning scenario of the size report, run for real over one profile.

The scenario itself (worlds, server, client, Broker loop) is `teep_coap.profiles.scenario`, the one
session runner `teep-coap session` uses too; this module puts a counting relay on loopback between
Broker and TAM so every byte on the wire is logged, and returns the `SessionTrace` the report reads.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Callable
from typing import cast

from teep_coap.bench.wire import C2S, S2C, RecordingClient, SessionTrace, WireUnit
from teep_coap.profiles.scenario import (
    COMPONENT_ID,
    DEVICE_NAME,
    ScenarioError,
    ScenarioRun,
    World,
    WorldFactory,
    engine_handler,
    otrp_world,
    run_scenario,
    teep_world,
    world_for,
)
from teep_coap.profiles.schema import Profile
from teep_coap.transport.base import MessageClient
from teep_coap.transport.relay import UP, UdpRelay
from teep_coap.transport.tcp_relay import TcpCountingRelay

SETTLE = 0.05  # seconds to let teardown datagrams (close_notify) reach the relay log

__all__ = [
    "COMPONENT_ID",
    "DEVICE_NAME",
    "ScenarioError",
    "World",
    "WorldFactory",
    "engine_handler",
    "otrp_world",
    "run_session",
    "teep_world",
    "world_for",
]


@contextlib.asynccontextmanager
async def _relay(
    profile: Profile, port: int
) -> AsyncIterator[tuple[Callable[[], list[WireUnit]], Callable[[], int], str]]:
    """A counting relay in front of the TAM on `port`; yields (log, length, uri)."""
    scheme = profile.transport.scheme
    if scheme in ("http", "https"):
        relay = TcpCountingRelay("127.0.0.1", port)
        try:
            rport = await relay.start()
            uri = f"{scheme}://127.0.0.1:{rport}{profile.transport.path}"

            def log() -> list[WireUnit]:
                return [WireUnit(c.direction, c.data, c.conn) for c in relay.chunks]

            yield log, lambda: len(relay.chunks), uri
        finally:
            await relay.stop()
        return

    udp = UdpRelay(("127.0.0.1", port), record=True)
    try:
        await udp.start()
        uri = f"{'coaps' if scheme == 'coaps' else 'coap'}://127.0.0.1:{udp.port}{profile.transport.path}"

        def udp_log() -> list[WireUnit]:
            return [WireUnit(C2S if d.direction == UP else S2C, d.payload) for d in udp.datagrams]

        yield udp_log, lambda: len(udp.datagrams), uri
    finally:
        await udp.close()


async def run_session(
    profile: Profile,
    payload_size: int,
    *,
    world_factory: WorldFactory | None = None,
    workdir: str | os.PathLike[str] | None = None,
) -> SessionTrace:
    """Run the reference scenario once over `profile` and return what crossed the relay."""
    taps: dict[str, Callable[[], object]] = {}
    recorders: list[RecordingClient] = []

    @contextlib.asynccontextmanager
    async def front(prof: Profile, port: int) -> AsyncIterator[str]:
        async with _relay(prof, port) as (log, length, uri):
            taps["log"], taps["length"] = log, length
            yield uri

    def wrap(client: MessageClient) -> MessageClient:
        recorder = RecordingClient(client, taps["length"])
        recorders.append(recorder)
        return recorder

    async def collect(run: ScenarioRun) -> SessionTrace:
        await asyncio.sleep(SETTLE)
        transport = "tcp" if profile.transport.scheme in ("http", "https") else "udp"
        log = cast(list[WireUnit], taps["log"]())
        return SessionTrace(recorders[0].exchanges, log, run.seconds, transport, dict(run.world.facts or {}))

    return await run_scenario(
        profile,
        payload_size,
        collect,
        world_factory=world_factory,
        workdir=workdir,
        front=front,
        wrap_client=wrap,
    )
