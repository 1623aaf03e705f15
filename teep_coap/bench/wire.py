"""What a measured session leaves behind, and how its bytes split into layers (by measurement).

A session is recorded as the list of Broker exchanges (payload posted, payload received, and the
position of the relay's log before and after) plus the relay's log of every datagram or TCP read.
`split_security` separates security-protocol records (DTLS/TLS handshake and alerts vs. protected
application records) from the bytes of the log; `attribute` assigns every logged byte to one
exchange and direction. Only record headers are read: the relays never decrypt anything.
"""

from __future__ import annotations

import io
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import cbor2
from aiocoap import Message
from aiocoap.error import UnparsableMessage

from teep_coap.transport.base import MessageClient

C2S = "c2s"
S2C = "s2c"

# RFC 9528 Appendix A.2: EDHOC messages 1 and 3 are POSTed to this path; RFC 9668: message_3 may ride
# in front of the first OSCORE request, flagged by the EDHOC option.
EDHOC_PATH = (".well-known", "edhoc")
CT_EDHOC = 0xED  # content type of the Records `edhoc_records` returns (not a (D)TLS value)

# TLS and DTLS record content types (RFC 5246 §6.2.1, RFC 6347 §4.1, RFC 8446 §5.1).
CT_CCS, CT_ALERT, CT_HANDSHAKE, CT_APPDATA = 20, 21, 22, 23
DTLS_HEADER = 13
TLS_HEADER = 5


@dataclass(frozen=True)
class WireUnit:
    """One datagram (UDP) or one read (TCP) as a relay moved it."""

    direction: str  # C2S | S2C
    data: bytes
    conn: int = 0  # TCP connection number (0 for UDP)


@dataclass
class Exchange:
    """One POST of the Broker: what it sent, what came back, and where in the wire log it happened."""

    sent: bytes
    received: bytes | None
    start: int  # index in the wire log before the POST
    end: int  # index in the wire log after the answer arrived
    seconds: float


@dataclass
class SessionTrace:
    """Everything one measured session produced."""

    exchanges: list[Exchange] = field(default_factory=list)
    wire: list[WireUnit] = field(default_factory=list)
    seconds: float = 0.0  # wall time of the session, connection setup included
    transport: str = "udp"  # "udp" | "tcp"
    facts: dict[bytes, tuple[str, int]] = field(default_factory=dict)  # wire bytes -> (name, bare size)


class RecordingClient:
    """Wraps a `MessageClient` and records each exchange against a relay's log length."""

    def __init__(self, inner: MessageClient, log_length: object) -> None:
        self.inner = inner
        self._log_length = log_length  # a callable: () -> current number of logged units
        self.exchanges: list[Exchange] = []

    async def post(self, payload: bytes) -> bytes | None:
        start = self._log_length()  # type: ignore[operator]
        t0 = time.perf_counter()
        answer = await self.inner.post(payload)
        self.exchanges.append(
            Exchange(payload, answer, start, self._log_length(), time.perf_counter() - t0)  # type: ignore[operator]
        )
        return answer

    async def close(self) -> None:
        await self.inner.close()


@dataclass(frozen=True)
class Record:
    """One security record: where it sits in the log and what kind it is."""

    unit: int  # index of the wire unit that completes it
    direction: str
    conn: int
    content_type: int
    size: int  # header included


def dtls_records(wire: Sequence[WireUnit]) -> list[Record]:
    """DTLS records of each datagram (several records may share one datagram; 13-byte headers).

    Hand-written: the DTLS 1.2 record header (type, version, epoch, sequence, length) is fixed and
    tiny, and no Python library parses records of a session it does not terminate. A datagram that
    does not parse as records counts as one record of type 0.
    """
    records: list[Record] = []
    for index, unit in enumerate(wire):
        data, pos = unit.data, 0
        while pos < len(data):
            if len(data) - pos < DTLS_HEADER:
                records.append(Record(index, unit.direction, unit.conn, 0, len(data) - pos))
                break
            length = int.from_bytes(data[pos + 11 : pos + 13], "big")
            size = min(DTLS_HEADER + length, len(data) - pos)
            records.append(Record(index, unit.direction, unit.conn, data[pos], size))
            pos += size
    return records


def tls_records(wire: Sequence[WireUnit]) -> list[Record]:
    """TLS records of each (connection, direction) byte stream (5-byte headers; see `dtls_records`)."""
    buffers: dict[tuple[int, str], bytearray] = {}
    records: list[Record] = []
    for index, unit in enumerate(wire):
        buf = buffers.setdefault((unit.conn, unit.direction), bytearray())
        buf.extend(unit.data)
        while len(buf) >= TLS_HEADER:
            length = int.from_bytes(buf[3:5], "big")
            if len(buf) < TLS_HEADER + length:
                break
            records.append(Record(index, unit.direction, unit.conn, buf[0], TLS_HEADER + length))
            del buf[: TLS_HEADER + length]
    for (conn, direction), buf in buffers.items():
        if buf:
            records.append(Record(len(wire) - 1, direction, conn, 0, len(buf)))
    return records


def handshake_records(records: Sequence[Record], *, tls: bool) -> tuple[list[Record], list[Record]]:
    """Split records into (setup/teardown, protected application data).

    DTLS 1.2 and TLS 1.2: handshake (22), change_cipher_spec (20) and alert (21) records are setup and
    teardown; application_data (23) is protected application data. TLS 1.3 hides its handshake in
    application_data records after the ServerHello; it is recognised when the server sends type 23
    before the client has sent any. Then, per connection, the client's first type-23 record (its
    Finished) and every server record before the client's second type-23 record (its first request)
    are handshake: by causality the server cannot answer a request it has not received. Session
    tickets would fall in between; the TAM sends none (docs/sizes.md).
    """
    setup: list[Record] = []
    app: list[Record] = []
    conns = sorted({r.conn for r in records})
    for conn in conns:
        mine = [r for r in records if r.conn == conn]
        first_client_app = next(
            (i for i, r in enumerate(mine) if r.direction == C2S and r.content_type == 23), None
        )
        first_server_app = next(
            (i for i, r in enumerate(mine) if r.direction == S2C and r.content_type == 23), None
        )
        tls13 = (
            tls
            and first_server_app is not None
            and (first_client_app is None or first_server_app < first_client_app)
        )
        client_app_seen = 0
        request_unit: int | None = None
        if tls13:
            client_apps = [r for r in mine if r.direction == C2S and r.content_type == CT_APPDATA]
            request_unit = client_apps[1].unit if len(client_apps) > 1 else None
        for r in mine:
            if r.content_type in (CT_CCS, CT_ALERT, CT_HANDSHAKE, 0):
                setup.append(r)
            elif not tls13:
                app.append(r)
            elif r.direction == C2S:
                client_app_seen += 1
                (setup if client_app_seen == 1 else app).append(r)
            elif request_unit is None or r.unit < request_unit:
                setup.append(r)
            else:
                app.append(r)
    return setup, app


def edhoc_records(wire: Sequence[WireUnit]) -> list[Record]:
    """The EDHOC handshake inside a CoAP+OSCORE session, as records of type CT_EDHOC.

    Every datagram of an exchange on /.well-known/edhoc is handshake (message_1 and message_2, or
    message_3 and message_4), matched by token; in the first OSCORE request, the CBOR byte string in
    front of the ciphertext (message_3, RFC 9668) is handshake too. Datagrams are decoded with
    aiocoap's Message codec; nothing is decrypted.
    """
    records: list[Record] = []
    tokens: set[bytes] = set()
    for index, unit in enumerate(wire):
        try:
            msg = Message.decode(unit.data)
        except UnparsableMessage:
            continue
        if unit.direction == C2S and tuple(msg.opt.uri_path) == EDHOC_PATH:
            tokens.add(msg.token)
            records.append(Record(index, unit.direction, unit.conn, CT_EDHOC, len(unit.data)))
        elif unit.direction == S2C and msg.token in tokens and msg.code.is_response():
            records.append(Record(index, unit.direction, unit.conn, CT_EDHOC, len(unit.data)))
        elif unit.direction == C2S and msg.opt.edhoc and msg.payload:
            stream = io.BytesIO(msg.payload)
            cbor2.load(stream)  # message_3: one CBOR byte string
            records.append(Record(index, unit.direction, unit.conn, CT_EDHOC, stream.tell()))
    return records
