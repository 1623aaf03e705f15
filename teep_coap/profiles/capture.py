"""`--pcap FILE`: a relay on loopback in front of a TAM writes every datagram / TCP segment it moves.

Used by `teep-coap session`, `agent run` and `tam serve`. For DTLS profiles the PSK goes to
`FILE.psk` as hex, the form of Wireshark's `dtls.psk` preference, so
`tshark -o dtls.psk:$(cat FILE.psk) -r FILE` decrypts the records (docs/toolkit.md).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from teep_coap.profiles.schema import Profile
from teep_coap.transport.pcap import PcapWriter
from teep_coap.transport.relay import UP

# The port each scheme usually has, which Wireshark dissects without "Decode As".
USUAL_PORTS = {"coap": 5683, "coap+oscore": 5683, "coaps": 5684, "http": 80, "https": 443}
SETTLE = 0.05  # seconds for the last datagrams (DTLS close_notify) to pass the relay before it closes


def psk_path(pcap: str | os.PathLike[str]) -> Path:
    return Path(f"{os.fspath(pcap)}.psk")


def write_psk_file(pcap: str | os.PathLike[str], psk: bytes) -> Path:
    """FILE.psk: the DTLS PSK in hex, as Wireshark's dtls.psk preference takes it."""
    path = psk_path(pcap)
    path.write_text(psk.hex() + "\n")
    path.chmod(0o600)
    return path


def session_front(
    writer: PcapWriter,
) -> Callable[[Profile, int], contextlib.AbstractAsyncContextManager[str]]:
    """A `front` for `scenario.run_scenario`: the capturing relay, server shown on its usual port."""

    @contextlib.asynccontextmanager
    async def front(profile: Profile, port: int) -> AsyncIterator[str]:
        shown = ("127.0.0.1", USUAL_PORTS.get(profile.transport.scheme, port))
        async with capturing_relay(profile, ("127.0.0.1", port), writer, shown_server=shown) as rport:
            scheme = "coap" if profile.transport.scheme == "coap+oscore" else profile.transport.scheme
            yield f"{scheme}://127.0.0.1:{rport}{profile.transport.path}"

    return front


@contextlib.asynccontextmanager
async def capturing_relay(
    profile: Profile,
    target: tuple[str, int],
    writer: PcapWriter,
    *,
    listen: tuple[str, int] = ("127.0.0.1", 0),
    shown_server: tuple[str, int] | None = None,
) -> AsyncIterator[int]:
    """A relay from `listen` to the TAM at `target` that writes what it moves; yields its port.

    `shown_server` is the server address written in the capture (default: the relay's own address,
    i.e. the one the client dialled)."""
    import asyncio

    if profile.transport.is_coap:
        from teep_coap.transport.relay import UdpRelay

        server: tuple[str, int] = shown_server or listen

        def udp_tap(direction: str, client: tuple[str, int], data: bytes) -> None:
            if direction == UP:
                writer.udp(client, server, data)
            else:
                writer.udp(server, client, data)

        relay = UdpRelay(target, listen=listen, tap=udp_tap)
        await relay.start()
        if shown_server is None:
            server = (listen[0], relay.port)
        try:
            yield relay.port
            await asyncio.sleep(SETTLE)
        finally:
            await relay.close()
            writer.flush()
        return

    from teep_coap.transport.tcp_relay import C2S, TcpCountingRelay

    ended: dict[int, int] = {}
    tcp_server: tuple[str, int] = shown_server or listen

    def tcp_tap(conn: int, client: tuple[str, int], direction: str, data: bytes) -> None:
        if data:
            writer.tcp_data(conn, client, tcp_server, direction == C2S, data)
            return
        ended[conn] = ended.get(conn, 0) + 1
        if ended[conn] == 2:  # both directions done
            writer.tcp_close(conn)

    tcp = TcpCountingRelay(
        target[0], target[1], listen_host=listen[0], listen_port=listen[1], record=False, tap=tcp_tap
    )
    port = await tcp.start()
    if shown_server is None:
        tcp_server = (listen[0], port)
    try:
        yield port
    finally:
        await tcp.stop()
        writer.flush()
