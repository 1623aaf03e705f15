"""What the TAM sees of one client's DTLS handshake: enough to tell a wrong PSK from a stall.

tinydtls drops a client's Finished that it cannot verify without a word. `HandshakeWatch` keeps,
per server-side session, the handshake messages of the current handshake (ClientHello with cookie,
our ServerHello flight, the ClientKeyExchange with the PSK identity) as they pass, and hands back the
client's Finished (the first epoch-1 handshake record after its ChangeCipherSpec) for the check in
`dtls_finished`. The records are plain DTLS 1.2 (RFC 6347 §4.1, §4.2.2); nothing here touches aiocoap.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator

HANDSHAKE_RECORD = 22
APPLICATION_DATA = 23  # a record carrying CoAP once the handshake is done (RFC 6347 §4.1)
CHANGE_CIPHER_SPEC = 20
CLIENT_HELLO = 1
SERVER_HELLO = 2
CLIENT_KEY_EXCHANGE = 16
SERVER_FLIGHT = (2, 12, 14)  # ServerHello, ServerKeyExchange (PSK hint), ServerHelloDone
# The session hash covers these, in this order, from the ClientHello with cookie on (RFC 6347 §4.2.6)
TRANSCRIPT_ORDER = (1, 2, 12, 14, 16)
DECRYPT_ERROR = 51  # TLS alert for a Finished that does not verify (RFC 5246 §7.2.2, §7.4.9)
RECORD_HEADER = 13
HANDSHAKE_HEADER = 12
RANDOM = slice(HANDSHAKE_HEADER + 2, HANDSHAKE_HEADER + 2 + 32)  # in a Hello: after header and version
MAX_VERSIONS = 3  # distinct versions kept of each handshake message (the first ClientHello, retries)
MAX_TRANSCRIPTS = 16  # combinations of them tried against a Finished
ALERT_SEQUENCE = 1 << 40  # above any epoch-0 record number a handshake uses: no replay check drops it

Record = tuple[int, int, bytes]  # content type, epoch, the whole record (header included)


def records(datagram: bytes) -> list[Record]:
    """Each DTLS record of a datagram, copied (tinydtls decrypts the datagram's buffer in place, even a
    Python bytes object, and a slice of a whole bytes object is that same object)."""
    found = []
    at = 0
    while at + RECORD_HEADER <= len(datagram):
        end = at + RECORD_HEADER + int.from_bytes(datagram[at + 11 : at + 13], "big")
        record = bytes(bytearray(datagram[at:end]))
        found.append((datagram[at], int.from_bytes(datagram[at + 3 : at + 5], "big"), record))
        at = end
    return found


def handshake_type(record: Record) -> int:
    """The message type of an unprotected (epoch 0) handshake record, else -1."""
    kind, epoch, data = record
    return data[RECORD_HEADER] if kind == HANDSHAKE_RECORD and epoch == 0 and len(data) > 13 else -1


def fatal_alert(description: int) -> bytes:
    """An epoch-0 (unprotected) DTLS 1.2 fatal alert record."""
    header = bytes([21, 0xFE, 0xFD, 0, 0]) + ALERT_SEQUENCE.to_bytes(6, "big") + (2).to_bytes(2, "big")
    return header + bytes([2, description])


def _psk_identity(data: bytes) -> bytes:
    """The PSK identity of a ClientKeyExchange record (RFC 4279 §2: a 2-byte length, the identity)."""
    start = RECORD_HEADER + HANDSHAKE_HEADER
    size = int.from_bytes(data[start : start + 2], "big")
    return data[start + 2 : start + 2 + size]


class HandshakeWatch:
    """The messages of one client's current handshake, for the check of its Finished."""

    def __init__(self) -> None:
        self.messages: dict[int, list[bytes]] = {}  # handshake type -> each distinct version seen
        self.identity: bytes | None = None  # the PSK identity of the ClientKeyExchange
        self.keyed = False  # ChangeCipherSpec after it: the next epoch-1 handshake record is the Finished

    def _keep(self, kind: int, message: bytes) -> None:
        versions = self.messages.setdefault(kind, [])
        if message not in versions:
            versions.append(message)
            del versions[:-MAX_VERSIONS]

    def server_sent(self, datagram: bytes) -> None:
        """Note our ServerHello flight on its way out."""
        for record in records(bytes(datagram)):
            if handshake_type(record) in SERVER_FLIGHT:
                self._keep(record[2][RECORD_HEADER], record[2][RECORD_HEADER:])

    def before(self, client_records: list[Record]) -> None:
        """Before the server handles the records: a ClientHello with a new random starts a new
        handshake (the ClientHello with cookie repeats the first one's random); a ClientKeyExchange
        names the identity (known before the server's "connected", which comes while it handles them)."""
        for record in client_records:
            message = handshake_type(record)
            if message == CLIENT_HELLO:
                hellos = self.messages.get(CLIENT_HELLO) or [b""]
                if hellos[-1][RANDOM] != record[2][RECORD_HEADER:][RANDOM]:
                    self.messages.clear()
                self.identity, self.keyed = None, False
            elif message == CLIENT_KEY_EXCHANGE:
                self.identity = _psk_identity(record[2])

    def after(self, client_records: list[Record]) -> bytes | None:
        """After the server handled the records: the client's Finished record among them, if any."""
        for record in client_records:
            kind, epoch, data = record
            message = handshake_type(record)
            if message in (CLIENT_HELLO, CLIENT_KEY_EXCHANGE):
                self._keep(message, data[RECORD_HEADER:])
            if message == CLIENT_KEY_EXCHANGE:
                self.identity = _psk_identity(data)
            elif kind == CHANGE_CIPHER_SPEC and epoch == 0:
                self.keyed = self.identity is not None
            elif kind == HANDSHAKE_RECORD and epoch >= 1 and self.keyed:
                return data
        return None

    def transcripts(self) -> Iterator[tuple[bytes, bytes, bytes]]:
        """(client random, server random, messages up to the ClientKeyExchange) for each combination
        of the versions seen: a repeated ClientHello can make tinydtls answer with a new ServerHello,
        and the client may have gone on with either."""
        versions = [self.messages.get(t) or [b""] for t in TRANSCRIPT_ORDER]
        for chosen in itertools.islice(itertools.product(*versions), MAX_TRANSCRIPTS):
            yield chosen[0][RANDOM], chosen[1][RANDOM], b"".join(chosen)


__all__ = ["DECRYPT_ERROR", "HandshakeWatch", "fatal_alert", "handshake_type", "records"]
