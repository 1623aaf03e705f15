"""A simulated device's CoAP-over-DTLS-PSK client: one socket, one tinydtls session, one exchange at a time.

Why the fleet has its own: the Broker's `CoapClient` goes through aiocoap's general client (a
context per device, a task and a pool look-up per request, timers and futures per exchange, the
context's shutdown after the session). That costs a simulated coaps-psk device about 1 ms of CPU per
session, a third of all it spends, and on a 2-core machine the simulating process sets the pace the
TAM is measured at (docs/scale.md: a TAM offered fewer sessions per second spends more CPU on each).
A load generator should cost as little as it can, so `bench sessions` and `bench compare` use this
client for coaps-psk devices by default (`--device-client broker` puts the Broker's own back).

What it does is the Broker client's wire behaviour on the TEEP path, and no more: the same DTLS
library (DTLSSocket's tinydtls) with the same records joined into one datagram per flight
(`aiocoap_compat.dtls.join_records`), aiocoap's `Message` for encoding, a confirmable POST for
the TAM path with the same options (Uri-Path, Content-Format, Accept), RFC 7252 §4.2
retransmission with the profile's tuning, empty ACKs and separate responses, RFC 7959 Block1 for
a large request and Block2 follow-ups for a large answer (the options of the request repeated, as
aiocoap does, so the TAM serves them from its cut answer), a 5.03's Max-Age waited out while time
is left. No Echo (DTLS proves the address), OSCORE, proxying, Observe, or handshake restarts: those
are the Broker's, and this client is for loopback.
"""

from __future__ import annotations

import asyncio
import os
import random
from typing import Any
from urllib.parse import urlsplit

from aiocoap import ACK, CON, RST, Message
from aiocoap.error import UnparsableMessage
from aiocoap.numbers.codes import Code
from aiocoap.optiontypes import BlockOption

from teep_coap.profiles.schema import Profile
from teep_coap.transport.base import TransportError, TransportTimeout
from teep_coap.transport.coap.aiocoap_compat.dtls import apply_dtls_fixes, join_records, retransmission_wait
from teep_coap.transport.coap.client import interpret_answer, overload_wait
from teep_coap.transport.coap.credentials import DeviceCredentials, psk_identity_problem

DTLS_EVENT_CONNECTED = 0x01DE  # tinydtls: the handshake finished
ALERT_FATAL = 2
# tinydtls keeps the peer's address in its session; every datagram here goes to the one connected
# socket, so any address will do (aiocoap's client uses the same trick).
SENTINEL_PEER = ("::1", 1234)
# RFC 5246 §7.2 and RFC 4279 §2 alert descriptions a PSK handshake ends with, and what they mean here
ALERTS = {
    20: "bad_record_mac",
    40: "handshake_failure",
    51: "decrypt_error: the TAM holds another PSK for this identity",
    115: "unknown_psk_identity: the TAM does not know this device",
}
COAPS_PORT = 5684


class _Socket(asyncio.DatagramProtocol):
    def __init__(self, client: LeanDtlsClient) -> None:
        self.client = client

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.client._datagram(data)

    def error_received(self, exc: Exception) -> None:
        self.client._fail(TransportError(f"DTLS socket to {self.client.uri}: {exc}"))


class LeanDtlsClient:
    """MessageClient (`post`, `close`) over CoAP + DTLS PSK for one simulated device."""

    def __init__(self, profile: Profile, tam_uri: str, credentials: DeviceCredentials) -> None:
        if profile.security.mode != "dtls-psk":
            raise TransportError(f"the lean DTLS client is for DTLS-PSK profiles, not {profile.name!r}")
        parts = urlsplit(tam_uri)
        try:
            port = parts.port or COAPS_PORT
        except ValueError:  # a port out of 0..65535
            port = -1
        if parts.scheme != "coaps" or not parts.hostname or port < 0:
            raise TransportError(
                f"the lean DTLS client needs a coaps://HOST[:PORT]/PATH URI, got {tam_uri!r}"
            )
        problem = psk_identity_problem(credentials.psk_identity)
        if problem is not None:
            raise TransportError(problem)
        self.uri = tam_uri
        self._peer = (parts.hostname, port)
        self._path = tuple(p for p in parts.path.split("/") if p)
        self._identity = credentials.psk_identity.encode()
        self._psk = credentials.psk
        self._content_format = profile.transport.content_format
        self._szx = profile.transport.block_szx
        self._block_size = profile.transport.block_size
        self._limits = profile.limits
        retrans = profile.retransmission
        self._ack_timeout = retrans.ack_timeout
        self._random_factor = retrans.ack_random_factor
        self._max_retransmit = retrans.max_retransmit
        self._transport: asyncio.DatagramTransport | None = None
        self._dtls: Any = None
        self._session: Any = None
        self._connected: asyncio.Future[None] | None = None
        self._up = False  # the handshake finished
        self._answer: asyncio.Future[Message] | None = None
        self._mid = random.randrange(0x10000)
        self._sent_mid = -1
        self._token = b""
        self._resend: asyncio.TimerHandle | None = None
        self._handshake_timer: asyncio.TimerHandle | None = None
        self._held: list[bytes] | None = None
        self.exchanges = 0
        self.handshake_restarts = 0  # never: read by the fleet's tally, as of the Broker's client

    def longest_wait(self) -> float:
        """Seconds the next `post()` may take: the first also shakes hands."""
        if self.exchanges == 0:
            return self._limits.handshake_timeout + self._limits.request_timeout
        return self._limits.request_timeout

    # --- DTLS (tinydtls calls these while it handles a datagram or a retransmission check) ---------

    def _write(self, _peer: Any, data: bytes) -> int:
        if self._held is not None:
            self._held.append(bytes(data))
        elif self._transport is not None:
            self._transport.sendto(data)
        return len(data)

    def _read(self, _peer: Any, data: bytes) -> int:
        try:
            message = Message.decode(bytes(data))
        except UnparsableMessage:
            return len(data)  # not CoAP: nothing here is waiting for it
        self._message(message)
        return len(data)

    def _event(self, level: int, code: int) -> int:
        if code == DTLS_EVENT_CONNECTED:
            self._up = True
            if self._connected is not None and not self._connected.done():
                self._connected.set_result(None)
        elif level == ALERT_FATAL:
            self._fail(TransportError(f"DTLS alert {code} ({ALERTS.get(code, 'fatal')}) from {self.uri}"))
        return 0

    def _datagram(self, data: bytes) -> None:
        if self._dtls is None:
            return
        self._held = []
        try:
            self._dtls.handleMessage(self._session, data)
        finally:
            held, self._held = self._held, None
            for datagram in join_records(held):
                self._write(None, datagram)
        self._check_handshake()

    def _check_handshake(self) -> None:
        """tinydtls resends a handshake flight when asked after its due time: ask then."""
        if self._handshake_timer is not None:
            self._handshake_timer.cancel()
            self._handshake_timer = None
        if self._dtls is None or self._up:
            return
        due = self._dtls.checkRetransmit()
        if due:
            loop = asyncio.get_running_loop()
            self._handshake_timer = loop.call_later(retransmission_wait(due), self._check_handshake)

    def _fail(self, exc: Exception) -> None:
        for waiter in (self._connected, self._answer):
            if waiter is not None and not waiter.done():
                waiter.set_exception(exc)

    async def _shake_hands(self) -> None:
        apply_dtls_fixes()  # tinydtls' clock pinned, as for every DTLS context of this package
        from DTLSSocket import dtls

        loop = asyncio.get_running_loop()
        self._connected = loop.create_future()
        try:
            transport, _ = await loop.create_datagram_endpoint(lambda: _Socket(self), remote_addr=self._peer)
        except OSError as exc:
            raise TransportError(f"no UDP socket towards {self.uri}: {exc}") from None
        self._transport = transport
        self._dtls = dtls.DTLS(
            read=self._read, write=self._write, event=self._event,
            pskId=self._identity, pskStore={self._identity: self._psk},
        )  # fmt: skip
        self._session = self._dtls.connect(*SENTINEL_PEER)
        self._check_handshake()
        try:
            async with asyncio.timeout(self._limits.handshake_timeout):
                await self._connected
        except TimeoutError:
            raise TransportTimeout(
                f"DTLS handshake with {self.uri} not finished within {self._limits.handshake_timeout:g} s"
                " (is the PSK identity known to the TAM, and the TAM serving coaps there?)"
            ) from None

    # --- CoAP ------------------------------------------------------------------------------------

    def _message(self, message: Message) -> None:
        answer = self._answer
        if message.mtype == CON:  # a separate response (or a duplicate of one): acknowledge it
            ack = Message(code=Code.EMPTY)
            ack.mtype, ack.mid = ACK, message.mid  # set, not passed: aiocoap deprecates both arguments
            self._dtls.write(self._session, ack.encode())
            if message.token == self._token and answer is not None and not answer.done():
                answer.set_result(message)
            return
        if message.mid != self._sent_mid:
            return  # an old exchange's
        if self._resend is not None:
            self._resend.cancel()
            self._resend = None
        if answer is None or answer.done():
            return
        if message.mtype == RST:
            answer.set_exception(TransportError(f"{self.uri} reset the request (RST)"))
        elif message.code != Code.EMPTY and message.token == self._token:  # not an empty ACK
            answer.set_result(message)

    def _send(self, message: Message) -> None:
        """Send a confirmable `message` with a fresh message ID and token, resent on the RFC 7252
        schedule until it is acknowledged or MAX_RETRANSMIT resends have gone out."""
        self._mid = (self._mid + 1) & 0xFFFF
        self._sent_mid = message.mid = self._mid
        self._token = message.token = os.urandom(4)
        data = message.encode()
        loop = asyncio.get_running_loop()
        wait = self._ack_timeout * random.uniform(1.0, self._random_factor)
        left = self._max_retransmit

        def resend() -> None:
            nonlocal wait, left
            if left == 0 or self._dtls is None:
                self._resend = None
                return
            left -= 1
            self._dtls.write(self._session, data)
            wait *= 2
            self._resend = loop.call_later(wait, resend)

        self._dtls.write(self._session, data)
        self._resend = loop.call_later(wait, resend)

    async def _exchange(self, message: Message, deadline: float) -> Message:
        self._answer = asyncio.get_running_loop().create_future()
        self._send(message)
        try:
            async with asyncio.timeout_at(deadline):
                return await self._answer
        except TimeoutError:
            raise TransportTimeout(
                f"no answer from {self.uri} within {self._limits.request_timeout:g} s"
            ) from None
        finally:
            self._answer = None
            if self._resend is not None:
                self._resend.cancel()
                self._resend = None

    def _request(self, payload: bytes, *, typed: bool, block1: Any = None, block2: Any = None) -> Message:
        message = Message(code=Code.POST, payload=payload)
        message.mtype = CON
        message.opt.uri_path = self._path
        if typed:
            message.opt.content_format = self._content_format
        message.opt.accept = self._content_format
        if block1 is not None:
            message.opt.block1 = block1
        if block2 is not None:
            message.opt.block2 = block2
        elif self._szx < 6:  # early negotiation (RFC 7959 §2.4), as the Broker's client asks
            message.opt.block2 = BlockOption.BlockwiseTuple(0, False, self._szx)
        return message

    async def _post_once(self, payload: bytes, deadline: float) -> Message:
        """One request, Block1 if it is larger than a block, and its answer with every Block2 block."""
        size, typed = self._block_size, bool(payload)
        if len(payload) <= size:
            answer = await self._exchange(self._request(payload, typed=typed), deadline)
        else:
            number = 0
            while True:
                more = (number + 1) * size < len(payload)
                block = BlockOption.BlockwiseTuple(number, more, self._szx)
                chunk = payload[number * size : (number + 1) * size]
                answer = await self._exchange(self._request(chunk, typed=True, block1=block), deadline)
                if not more or answer.code != Code.CONTINUE:
                    break
                number += 1
        body = bytes(answer.payload)
        while answer.code.is_successful() and answer.opt.block2 is not None and answer.opt.block2.more:
            got = answer.opt.block2
            follow = BlockOption.BlockwiseTuple(got.block_number + 1, False, got.size_exponent)
            answer = await self._exchange(self._request(b"", typed=typed, block2=follow), deadline)
            block = answer.opt.block2
            if answer.code.is_successful() and (block is None or block.block_number != follow.block_number):
                raise TransportError(f"{self.uri} answered block {follow.block_number} with another")
            body += bytes(answer.payload)
            if len(body) > self._limits.max_message_size:
                raise TransportError(
                    f"{self.uri}'s answer exceeds the profile limit of {self._limits.max_message_size} bytes"
                )
        answer.payload = body
        return answer

    async def post(self, payload: bytes) -> bytes | None:
        """POST one message (b"" starts a session); the TAM's next message, or None when it is done."""
        if len(payload) > self._limits.max_message_size:
            raise TransportError(
                f"message of {len(payload)} bytes exceeds the profile limit {self._limits.max_message_size}"
            )
        if self._dtls is None:
            await self._shake_hands()
        deadline = asyncio.get_running_loop().time() + self._limits.request_timeout
        while True:
            answer = await self._post_once(payload, deadline)
            if answer.code == Code.SERVICE_UNAVAILABLE:
                wait = overload_wait(answer)
                if asyncio.get_running_loop().time() + wait < deadline:
                    await asyncio.sleep(wait)
                    continue
            break
        self.exchanges += 1
        return interpret_answer(answer, self._content_format, self.uri)

    async def close(self) -> None:
        """Send DTLS close_notify and close the socket; the client cannot be used after."""
        for timer in (self._resend, self._handshake_timer):
            if timer is not None:
                timer.cancel()
        self._resend = self._handshake_timer = None
        dtls_, session, self._dtls, self._session = self._dtls, self._session, None, None
        if dtls_ is not None and session is not None:
            self._held = None
            if self._up:
                dtls_.close(session)  # its close_notify goes out through _write while the socket is open
            else:
                dtls_.resetPeer(session)  # no session to close: tinydtls refuses close() before the handshake
        if self._transport is not None:
            self._transport.close()
            self._transport = None

    async def __aenter__(self) -> LeanDtlsClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


__all__ = ["LeanDtlsClient"]
