"""`--pcap FILE`: a relay on loopback in front of a TAM writes every datagram / TCP segment it moves.

Used by `teep-coap session`, `agent run` and `tam serve`. For DTLS profiles the PSK goes to
`FILE.psk` as hex, the form of Wireshark's `dtls.psk` preference, so
`tshark -o dtls.psk:$(cat FILE.psk) -r FILE` decrypts the records (docs/toolkit.md); for HTTPS
profiles the TLS secrets go to `FILE.keylog` (`tshark -o tls.keylog_file:FILE.keylog -r FILE`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from teep_coap.profiles.schema import Profile
from teep_coap.transport.base import TransportError
from teep_coap.transport.pcap import PcapWriter
from teep_coap.transport.relay import LOOPBACK, UP, UdpRelay
from teep_coap.transport.tcp_relay import C2S, TcpCountingRelay

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


def keylog_path(pcap: str | os.PathLike[str]) -> Path:
    return Path(f"{os.fspath(pcap)}.keylog")


def log_tls_keys(pcap: str | os.PathLike[str]) -> Path:
    """TLS contexts made from now on log their secrets to FILE.keylog (NSS key log format), so
    `tshark -o tls.keylog_file:FILE.keylog -r FILE` decrypts an HTTPS capture: Python's ssl reads
    the SSLKEYLOGFILE variable when a context is created."""
    path = keylog_path(pcap)
    path.unlink(missing_ok=True)
    os.environ["SSLKEYLOGFILE"] = os.fspath(path)
    return path


@contextlib.contextmanager
def tls_keys_logged(pcap: str | os.PathLike[str]) -> Iterator[Path]:
    """`log_tls_keys` for the block only; the process's setting is restored after it."""
    before = os.environ.get("SSLKEYLOGFILE")
    path = log_tls_keys(pcap)
    try:
        yield path
    finally:
        if before is None:
            os.environ.pop("SSLKEYLOGFILE", None)
        else:
            os.environ["SSLKEYLOGFILE"] = before


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

    if target[0] not in LOOPBACK or listen[0] not in LOOPBACK:
        raise TransportError(
            f"--pcap records through a relay on loopback, and {target[0]} is not a loopback address "
            "(capture that link with tcpdump instead)"
        )
    if profile.transport.is_coap:
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


def relayed_uri(uri: str, port: int) -> str:
    """`uri` with its port replaced (the relay's), host kept."""

    parts = urlsplit(uri)
    host = parts.hostname or "127.0.0.1"
    netloc = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return urlunsplit(parts._replace(netloc=netloc))


def uri_address(uri: str) -> tuple[str, int]:
    """(host, port) of a TAM URI; the scheme's usual port when it names none."""

    parts = urlsplit(uri)
    try:
        port = parts.port
    except ValueError:
        raise TransportError(f"bad port in {uri!r}") from None
    scheme = "coap" if parts.scheme == "coap+oscore" else parts.scheme
    if parts.hostname is None or (port is None and scheme not in USUAL_PORTS):
        raise TransportError(f"cannot tell the TAM's address from {uri!r}")
    return parts.hostname, port if port is not None else USUAL_PORTS[scheme]


def tshark_command(profile: Profile, pcap: str | os.PathLike[str], server_port: int) -> str:
    """The tshark command line that dissects the capture: the PSK for DTLS, and "Decode As" when the
    server is not on its scheme's usual port."""
    scheme = "coap" if profile.transport.scheme == "coap+oscore" else profile.transport.scheme
    args = ["tshark"]
    if profile.security.mode == "dtls-psk":
        args += ["-o", f"dtls.psk:$(cat {os.fspath(pcap)}.psk)"]
    elif profile.security.mode == "tls":
        args += ["-o", f"tls.keylog_file:{keylog_path(pcap)}"]
    if server_port != USUAL_PORTS.get(scheme):
        if scheme == "coaps":
            args += ["-d", f"udp.port=={server_port},dtls", "-d", f"dtls.port=={server_port},coap"]
        elif scheme == "coap":
            args += ["-d", f"udp.port=={server_port},coap"]
        elif scheme == "http":
            args += ["-d", f"tcp.port=={server_port},http"]
        elif scheme == "https":
            args += ["-d", f"tcp.port=={server_port},tls"]
    return " ".join([*args, "-r", os.fspath(pcap)])
