"""Write what a relay forwarded as a pcap file that Wireshark and tshark open.

The relays (`transport.relay`, `transport.tcp_relay`) see UDP payloads and TCP byte chunks, not
packets, so this writer puts synthetic IPv4 + UDP/TCP headers around them: UDP datagrams one packet
each; TCP streams get a three-way handshake, consistent sequence and acknowledgement numbers and a
FIN exchange, which is what Wireshark needs to reassemble HTTP. Addresses are IPv4 (an IPv6 peer is
shown as 127.0.0.1) and ports are what the caller says (a relay on loopback may move the server to its
scheme's usual port so no "Decode As" is needed).

Hand-written: the classic libpcap format and the two headers are ~100 lines, and neither dpkt nor scapy
is a dependency of this project. Like every transport module it never looks inside a payload.
"""

from __future__ import annotations

import os
import struct
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from teep_coap.transport.base import TransportError

LINKTYPE_RAW = 101  # raw IPv4/IPv6 packets, no link-layer header
SNAPLEN = 262144
MAX_SEGMENT = 32768  # TCP payload per synthetic segment (an IPv4 packet holds at most 65,515 bytes)
_TCP_FIN, _TCP_SYN, _TCP_PSH, _TCP_ACK = 0x01, 0x02, 0x08, 0x10
_CLIENT_ISN, _SERVER_ISN = 1000, 500000


def _checksum(data: bytes) -> int:
    """The Internet checksum (RFC 1071)."""
    if len(data) % 2:
        data += b"\x00"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def _ipv4(src: str, dst: str, proto: int, body: bytes, ident: int) -> bytes:
    header = struct.pack(
        "!BBHHHBBH4s4s",
        0x45,
        0,
        20 + len(body),
        ident & 0xFFFF,
        0x4000,  # don't fragment
        64,
        proto,
        0,
        _addr(src),
        _addr(dst),
    )
    return header[:10] + struct.pack("!H", _checksum(header)) + header[12:] + body


def _addr(host: str) -> bytes:
    parts = host.split(".")
    if len(parts) == 4 and all(p.isdigit() and int(p) < 256 for p in parts):
        return bytes(int(p) for p in parts)
    return bytes((127, 0, 0, 1))  # IPv6 loopback or a name: shown as IPv4 loopback


@dataclass
class _TcpStream:
    client: tuple[str, int]
    server: tuple[str, int]
    seq: dict[bool, int] = field(default_factory=lambda: {True: _CLIENT_ISN + 1, False: _SERVER_ISN + 1})
    closed: bool = False


class PcapWriter:
    """Append packets to a pcap file as they happen; `close()` ends open TCP streams with FINs."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        try:
            self._out: BinaryIO = open(path, "wb")  # noqa: SIM115 - kept open while the session runs
        except OSError as exc:
            raise TransportError(f"cannot write pcap {path}: {exc.strerror or exc}") from None
        self.path = Path(os.fspath(path))
        self._out.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, SNAPLEN, LINKTYPE_RAW))
        self._ident = 0
        self._streams: dict[object, _TcpStream] = {}
        self.packets = 0

    def _packet(self, packet: bytes, when: float | None) -> None:
        when = time.time() if when is None else when
        sec = int(when)
        usec = min(int((when - sec) * 1_000_000), 999_999)
        self._out.write(struct.pack("<IIII", sec, usec, len(packet), len(packet)) + packet)
        self._out.flush()  # a capture must hold every packet up to a crash or a kill
        self.packets += 1
        self._ident += 1

    def udp(
        self, src: tuple[str, int], dst: tuple[str, int], payload: bytes, when: float | None = None
    ) -> None:
        """One UDP datagram (checksum 0 = not computed, which IPv4 allows)."""
        body = struct.pack("!HHHH", src[1], dst[1], 8 + len(payload), 0) + payload
        self._packet(_ipv4(src[0], dst[0], 17, body, self._ident), when)

    def _tcp(
        self,
        src: tuple[str, int],
        dst: tuple[str, int],
        seq: int,
        ack: int,
        flags: int,
        payload: bytes,
        when: float | None,
    ) -> None:
        header = struct.pack("!HHIIBBHHH", src[1], dst[1], seq, ack, 5 << 4, flags, 65535, 0, 0)
        pseudo = _addr(src[0]) + _addr(dst[0]) + struct.pack("!BBH", 0, 6, len(header) + len(payload))
        csum = _checksum(pseudo + header + payload)
        segment = header[:16] + struct.pack("!H", csum) + header[18:] + payload
        self._packet(_ipv4(src[0], dst[0], 6, segment, self._ident), when)

    def tcp_data(
        self,
        conn: object,
        client: tuple[str, int],
        server: tuple[str, int],
        from_client: bool,
        payload: bytes,
        when: float | None = None,
    ) -> None:
        """Bytes of one TCP connection in one direction; the first call for `conn` adds the handshake."""
        stream = self._streams.get(conn)
        if stream is None:
            stream = self._streams[conn] = _TcpStream(client, server)
            self._tcp(client, server, _CLIENT_ISN, 0, _TCP_SYN, b"", when)
            self._tcp(server, client, _SERVER_ISN, _CLIENT_ISN + 1, _TCP_SYN | _TCP_ACK, b"", when)
            self._tcp(client, server, _CLIENT_ISN + 1, _SERVER_ISN + 1, _TCP_ACK, b"", when)
        src, dst = (stream.client, stream.server) if from_client else (stream.server, stream.client)
        for start in range(0, len(payload), MAX_SEGMENT):
            piece = payload[start : start + MAX_SEGMENT]
            seq, ack = stream.seq[from_client], stream.seq[not from_client]
            self._tcp(src, dst, seq, ack, _TCP_PSH | _TCP_ACK, piece, when)
            stream.seq[from_client] = (seq + len(piece)) & 0xFFFFFFFF

    def tcp_close(self, conn: object, when: float | None = None) -> None:
        """FIN from the client, FIN+ACK from the server, last ACK."""
        stream = self._streams.get(conn)
        if stream is None or stream.closed:
            return
        stream.closed = True
        c, s = stream.seq[True], stream.seq[False]
        self._tcp(stream.client, stream.server, c, s, _TCP_FIN | _TCP_ACK, b"", when)
        self._tcp(stream.server, stream.client, s, c + 1, _TCP_FIN | _TCP_ACK, b"", when)
        self._tcp(stream.client, stream.server, c + 1, s + 1, _TCP_ACK, b"", when)

    def flush(self) -> None:
        self._out.flush()

    def close(self) -> None:
        if self._out.closed:
            return
        for conn in list(self._streams):
            self.tcp_close(conn)
        self._out.close()
