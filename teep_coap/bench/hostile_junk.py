"""`bench hostile`, part 1: the junk an attacker sends, and which answers to it are right.

Hand-built CoAP datagrams (no client library: several are malformed on purpose), the junk classes
(each a short sequence per source port and the set of right answers), and the sender that fires a
class from many fresh source ports on 127.0.0.1 and judges the answers. Also the amplification
probe (first answer bytes / request bytes of an unauthenticated empty POST).
"""

from __future__ import annotations

import itertools
import random
import selectors
import socket
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cbor2

from teep_coap.transport.coap.echo import PADDING_OPTION

CONTENT_FORMAT = 65000  # application/teep+cbor in our binding (experimental range)
URI_PATH, CONTENT_FORMAT_OPT, BLOCK2, BLOCK1, SIZE1 = 11, 12, 23, 27, 60
POST, GET, PUT, DELETE = 2, 1, 3, 4
SOCKETS = 50  # source ports the junk comes from (one datagram in flight each: no kernel buffer drops)
JUNK_PORT_SPAN = 10_000  # source ports for junk, just below the ephemeral range (_junk_ports)
# The junk goes to a TAM without RFC 9175 Echo: what an attacker who answers the Echo (from its own
# address) reaches anyway; the amplification is measured with and without it.
QUIET = 0.5  # seconds without an answer after which the rest of a batch counts as silent
# ... unless silence is a wrong answer for the class: then a TAM slowed by the machine's load gets this
# long to answer (a 0.5 s stall under load is not a missing answer).
ANSWER_WAIT = 5.0
MESSAGE_IDS = itertools.count()  # never repeated in a run: a repeated (port, MID) is a duplicate
RIGHT_JUNK = frozenset({"silence", "RST", "ACK"})  # never wrong for junk


# ------------------------------------------------------------------------------ CoAP datagrams


def _option_part(value: int) -> tuple[int, bytes]:
    if value < 13:
        return value, b""
    if value < 269:
        return 13, bytes([value - 13])
    return 14, (value - 269).to_bytes(2, "big")


def coap_datagram(
    code: int,
    mid: int,
    token: bytes = b"",
    options: Sequence[tuple[int, bytes]] = (),
    payload: bytes = b"",
    mtype: int = 0,
) -> bytes:
    """One CoAP datagram (RFC 7252 §3), built by hand so that it can also be wrong on purpose."""
    out = bytearray([0x40 | (mtype << 4) | len(token), code, (mid >> 8) & 0xFF, mid & 0xFF])
    out += token
    last = 0
    for number, value in sorted(options, key=lambda o: o[0]):
        d, dext = _option_part(number - last)
        n, next_ = _option_part(len(value))
        out.append((d << 4) | n)
        out += dext + next_ + value
        last = number
    if payload:
        out += b"\xff" + payload
    return bytes(out)


def _uint(value: int) -> bytes:
    return value.to_bytes((value.bit_length() + 7) // 8, "big") if value else b""


def teep_post(mid: int, token: bytes, payload: bytes, *, block1: tuple[int, int, int] | None = None) -> bytes:
    """POST /teep with our Content-Format (and a Block1 option: number, more, szx)."""
    opts = [(URI_PATH, b"teep"), (CONTENT_FORMAT_OPT, _uint(CONTENT_FORMAT))]
    if block1 is not None:
        num, more, szx = block1
        opts.append((BLOCK1, _uint((num << 4) | (more << 3) | szx)))
    return coap_datagram(POST, mid, token, opts, payload)


def outcome(reply: bytes) -> str:
    """ "RST", "ACK" (empty), or the dotted response code of a CoAP datagram."""
    if len(reply) < 4:
        return "short"
    mtype = (reply[0] >> 4) & 3
    if mtype == 3:
        return "RST"
    code = reply[1]
    if code == 0:
        return "ACK"
    return f"{code >> 5}.{code & 31:02d}"


# ------------------------------------------------------------------------------ the junk classes


def costly_cbor(size: int) -> list[bytes]:
    """The nastiest CBOR we know for a general decoder, each about `size` bytes."""
    half = max(size // 2 - 8, 1)
    big = (1 << (8 * half)) - 1
    deep = b"\x81" * (size - 1) + b"\x00"
    many = cbor2.dumps(list(range(24)) * max(size // 24, 1))
    return [
        cbor2.dumps(cbor2.CBORTag(30, [big, big - 2])),  # rational: gcd of two huge numbers
        cbor2.dumps(cbor2.CBORTag(4, [-(1 << 30), big])),  # decimal fraction
        cbor2.dumps(cbor2.CBORTag(2, (b"\xff" * (size - 8)))),  # one huge bignum
        b"\xd2" + cbor2.dumps([cbor2.CBORTag(30, [big, big - 2]), {}, b"", b""]),  # inside a COSE_Sign1
        deep,  # nesting as deep as the bytes allow
        many,  # as many items as the bytes allow
        b"\xd2\x84\x43\xa1\x01\x26\xa1\x04\x41\x00" + b"\x5a" + (size).to_bytes(4, "big"),  # length lie
        cbor2.dumps([cbor2.CBORTag(28, [1, 2, 3])] + [cbor2.CBORTag(29, 0)] * max(size // 3, 1)),
        cbor2.dumps([1.5] * max(size // 9, 1)),  # floats
    ]


@dataclass(frozen=True)
class JunkClass:
    """What is sent (`sequence(mid, rng)`: a short sequence per source using Message IDs mid and mid + 1;
    only the last datagram's answer is judged) and which answers are right."""

    name: str
    what: str
    sequence: Callable[[int, random.Random], list[bytes]]
    right: frozenset[str]


def _rand_token(rng: random.Random) -> bytes:
    return rng.randbytes(4)


def _bad_options(i: int, rng: random.Random) -> list[bytes]:
    forms = [
        bytes([0x40, GET, i >> 8 & 255, i & 255, 0xB1, 0xFF]),  # Uri-Path 0xff (not UTF-8)
        bytes([0x40, POST, i >> 8 & 255, i & 255, 0xF0]),  # option delta 15 (reserved)
        bytes([0x40, POST, i >> 8 & 255, i & 255, 0xBE, 0x01]),  # option length announced, absent
        bytes([0x4F, POST, i >> 8 & 255, i & 255]) + rng.randbytes(4),  # token length 15
        bytes([0x40, POST, i >> 8 & 255, i & 255, 0xB4]) + b"teep" + bytes([0xD3, 0x0E, 1, 2, 3, 4]),
        bytes([0x00, POST, 0, 0]),  # version 0
    ]
    return [forms[(i // 2) % len(forms)]]


def _garbage_cbor(i: int, rng: random.Random) -> list[bytes]:
    return [teep_post(i & 0xFFFF, _rand_token(rng), rng.randbytes(rng.randint(1, 900)))]


def _fake_cose(i: int, rng: random.Random) -> list[bytes]:
    body = b"\xd2\x84\x43\xa1\x01\x26\xa1\x04\x48" + rng.randbytes(8) + b"\x58\x40" + rng.randbytes(64)
    body += b"\x58\x40" + rng.randbytes(64)
    return [teep_post(i & 0xFFFF, _rand_token(rng), body)]


_SMALL_COSTLY = costly_cbor(900)


def _costly_small(i: int, rng: random.Random) -> list[bytes]:
    return [teep_post(i & 0xFFFF, _rand_token(rng), _SMALL_COSTLY[(i // 2) % len(_SMALL_COSTLY)])]


def _block1_gap(i: int, rng: random.Random) -> list[bytes]:
    token = _rand_token(rng)
    return [
        teep_post(i & 0xFFFF, token, rng.randbytes(64), block1=(0, 1, 2)),
        teep_post((i + 1) & 0xFFFF, token, rng.randbytes(64), block1=(2, 1, 2)),
    ]


def _block1_abandoned(i: int, rng: random.Random) -> list[bytes]:
    return [teep_post(i & 0xFFFF, _rand_token(rng), rng.randbytes(1024), block1=(0, 1, 6))]


def _wrong_method(i: int, rng: random.Random) -> list[bytes]:
    code = (GET, PUT, DELETE)[(i // 2) % 3]
    return [coap_datagram(code, i & 0xFFFF, _rand_token(rng), [(URI_PATH, b"teep")])]


def _wrong_format(i: int, rng: random.Random) -> list[bytes]:
    opts = [(URI_PATH, b"teep"), (CONTENT_FORMAT_OPT, _uint(60))]
    return [coap_datagram(POST, i & 0xFFFF, _rand_token(rng), opts, rng.randbytes(32))]


def _random_bytes(i: int, rng: random.Random) -> list[bytes]:
    return [rng.randbytes(rng.randint(1, 64))]


def _connect(i: int, rng: random.Random) -> list[bytes]:
    return [coap_datagram(POST, i & 0xFFFF, _rand_token(rng), [(URI_PATH, b"teep")])]


def _later_block(i: int, rng: random.Random) -> list[bytes]:
    """A follow-up for block 1-8 (1 KiB blocks) of an answer this peer was never given: a TAM that
    kept answers to other peers must not send a block of one, nor render anything for this."""
    block2 = _uint((rng.randrange(1, 9) << 4) | 6)
    opts = [(URI_PATH, b"teep"), (CONTENT_FORMAT_OPT, _uint(CONTENT_FORMAT)), (BLOCK2, block2)]
    return [coap_datagram(POST, i & 0xFFFF, _rand_token(rng), opts, rng.randbytes(rng.randrange(0, 400)))]


PADDED_CONNECT = 96  # bytes: what our client pads its connect to (profile `coap`, pad_connect_to)


def padded_connect(mid: int, token: bytes, size: int = PADDED_CONNECT) -> bytes:
    """An empty POST /teep padded with the elective padding option to `size` bytes (13..268 of padding)."""
    bare = coap_datagram(POST, mid, token, [(URI_PATH, b"teep")])
    padding = bytes(size - len(bare) - 4)  # option header: 1 byte, 2 of extended delta, 1 of length
    return coap_datagram(POST, mid, token, [(URI_PATH, b"teep"), (PADDING_OPTION, padding)])


def _padded_connect(i: int, rng: random.Random) -> list[bytes]:
    return [padded_connect(i & 0xFFFF, _rand_token(rng))]


_NO_SUCCESS = frozenset({"4.00", "4.01", "4.02", "4.04", "4.05", "4.06", "4.13", "4.15"}) | RIGHT_JUNK
CLASSES: tuple[JunkClass, ...] = (
    JunkClass("random-bytes", "1-64 random bytes", _random_bytes, _NO_SUCCESS),
    JunkClass("bad-options", "options that do not decode, bad header fields", _bad_options, _NO_SUCCESS),
    JunkClass("wrong-method", "GET/PUT/DELETE /teep", _wrong_method, frozenset({"4.05"})),
    JunkClass("wrong-format", "POST /teep, Content-Format 60", _wrong_format, frozenset({"4.15"})),
    JunkClass("garbage-cbor", "POST /teep, 1-900 random bytes", _garbage_cbor, frozenset({"4.00"})),
    JunkClass("fake-cose", "POST /teep, a COSE_Sign1 with a random kid", _fake_cose, frozenset({"4.00"})),
    JunkClass(
        "costly-cbor",
        "POST /teep, ~900 B rational/bignum/deep/shared/float CBOR",
        _costly_small,
        frozenset({"4.00"}),
    ),
    JunkClass("block1-gap", "Block1 block 0, then block 2", _block1_gap, frozenset({"4.08"})),
    JunkClass(
        "block1-abandoned", "Block1 block 0 of 1 KiB, never continued", _block1_abandoned, frozenset({"2.31"})
    ),
    JunkClass("connect-flood", "empty POST /teep (starts a session)", _connect, frozenset({"2.04", "5.03"})),
    # nothing was cut for this peer: aiocoap's Block2 cache answers 4.08, the handler is never called
    JunkClass("later-block", "POST /teep for Block2 block 1-8 of nothing", _later_block, frozenset({"4.08"})),
)


# Against the default `coap` profile (RFC 9175 Echo): what an unauthenticated peer gets there.
ECHO_CLASSES: tuple[JunkClass, ...] = (
    JunkClass("connect-flood/Echo", "empty POST /teep, profile coap", _connect, frozenset({"4.01"})),
    JunkClass("wrong-method/Echo", "GET/PUT/DELETE /teep, profile coap", _wrong_method, frozenset({"4.05"})),
    # answered at once within 3x (a QueryRequest with an Echo), or 4.01 + Echo when it does not fit
    JunkClass(
        "padded-connect/Echo",
        f"empty POST /teep padded to {PADDED_CONNECT} B, profile coap",
        _padded_connect,
        frozenset({"2.04", "4.01", "5.03"}),
    ),
    # the datagram gate answers a later block only after the Echo check: 4.01 + Echo, never a block
    JunkClass("later-block/Echo", "Block2 block 1-8, profile coap", _later_block, frozenset({"4.01"})),
)


# ------------------------------------------------------------------------------ sending and judging


@dataclass
class ClassResult:
    name: str
    what: str
    tried: int = 0  # sequences sent (datagrams: see `datagrams`)
    datagrams: int = 0
    bytes_in: int = 0
    right: int = 0
    wrong: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    survived: bool = False
    rss_after: int | None = None
    seconds: float = 0.0
    tam_cpu: float | None = None  # seconds of TAM CPU while this class was sent

    def to_json(self) -> dict[str, Any]:
        return {
            "class": self.name,
            "what": self.what,
            "tried": self.tried,
            "datagrams": self.datagrams,
            "right": self.right,
            "wrong": self.wrong,
            "outcomes": dict(self.outcomes.most_common()),
            "survived": self.survived,
            "rss_after_mb": round(self.rss_after / 2**20, 1) if self.rss_after else None,
            "seconds": round(self.seconds, 2),
            "tam_cpu_us_per_datagram": (
                round(self.tam_cpu * 1e6 / self.datagrams)
                if self.tam_cpu is not None and self.datagrams
                else None
            ),
            "tam_cpu_ms_per_kib": (
                round(self.tam_cpu * 1000 / (self.bytes_in / 1024), 2)
                if self.tam_cpu is not None and self.bytes_in
                else None
            ),
        }


def _drain(
    socks: list[socket.socket], sel: selectors.BaseSelector, waiting: set[int], deadline: float, quiet: float
) -> dict[int, bytes]:
    """Read answers until every socket in `waiting` answered, `quiet` s passed without any, or deadline.

    An empty ACK is not an answer yet: the separate response it announces follows (RFC 7252 §5.2.2).
    """
    answers: dict[int, bytes] = {}
    final: set[int] = set()
    last = time.monotonic()
    while waiting - final and time.monotonic() < deadline:
        events = sel.select(timeout=0.02)
        if not events:
            if time.monotonic() - last > quiet:
                break
            continue
        last = time.monotonic()
        for key, _ in events:
            index = key.data
            try:
                data = socks[index].recv(65536)
            except (BlockingIOError, ConnectionRefusedError):
                continue
            if index in waiting:
                answers[index] = data  # the latest answer counts (a separate response after an ACK)
                if outcome(data) != "ACK":
                    final.add(index)
    return answers


def _junk_ports() -> Iterator[int]:
    """Source ports for junk, below the kernel's ephemeral range, cycled through.

    The Echo classes are judged by what an address that has not proven itself gets. The real
    sessions `bench hostile` runs between the classes prove their clients' addresses, and those
    clients' ports come from the ephemeral range: a junk socket bound to port 0 sometimes got one of
    them and was answered as the proven client it then is (one in 4,800 on 2026-12-06). Junk from
    ports outside that range never shares an address with a client that answered an Echo."""
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768  # Linux's default start
    if low <= 2 * JUNK_PORT_SPAN:  # no room below it: let the kernel choose (as before)
        return itertools.repeat(0)
    return itertools.cycle(range(low - JUNK_PORT_SPAN, low))


_PORTS = _junk_ports()


def _bind_junk(s: socket.socket) -> None:
    for _ in range(JUNK_PORT_SPAN):
        try:
            s.bind(("127.0.0.1", next(_PORTS)))
            return
        except OSError:  # in use by another program: the next one
            continue
    s.bind(("127.0.0.1", 0))


def _fresh_sockets(port: int, n: int) -> tuple[list[socket.socket], selectors.BaseSelector]:
    socks = []
    sel = selectors.DefaultSelector()
    for index in range(n):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        _bind_junk(s)
        s.connect(("127.0.0.1", port))
        s.setblocking(False)
        socks.append(s)
        sel.register(s, selectors.EVENT_READ, index)
    return socks, sel


def send_junk(
    port: int,
    junk: JunkClass,
    count: int,
    *,
    seed: int = 1,
    sockets: int = SOCKETS,
    time_limit: float = 120.0,
    quiet: float = QUIET,
) -> ClassResult:
    """Send `count` sequences of one junk class from `sockets` source ports; judge the answers."""
    rng = random.Random(seed)
    result = ClassResult(junk.name, junk.what)
    t0 = time.monotonic()
    deadline = t0 + time_limit
    sent = 0
    patience = quiet if "silence" in junk.right else max(quiet, ANSWER_WAIT)
    while sent < count and time.monotonic() < deadline:
        batch = min(sockets, count - sent)
        socks, sel = _fresh_sockets(port, batch)  # new source ports for every batch
        try:
            # Message IDs never repeat within a run (a reused source port with a repeated Message ID
            # is a duplicate to CoAP, answered with the earlier response): two per sequence
            seqs = [junk.sequence(next(MESSAGE_IDS) * 2 & 0xFFFF, rng) for _ in range(batch)]
            answers: dict[int, bytes] = {}
            for step in range(max(len(s) for s in seqs)):
                waiting = set()
                for k, seq in enumerate(seqs):
                    if step < len(seq):
                        socks[k].send(seq[step])
                        result.datagrams += 1
                        result.bytes_in += len(seq[step])
                        waiting.add(k)
                answers = _drain(socks, sel, waiting, deadline, patience)
                for k, data in answers.items():  # an earlier step must not fail either
                    if step < len(seqs[k]) - 1 and outcome(data).startswith("5."):
                        result.wrong += 1
        finally:
            for sock in socks:
                sel.unregister(sock)
                sock.close()
            sel.close()
        for k in range(batch):
            got = outcome(answers[k]) if k in answers else "silence"
            result.outcomes[got] += 1
            if got in junk.right:
                result.right += 1
            else:
                result.wrong += 1
        sent += batch
    result.tried = sent
    result.seconds = time.monotonic() - t0
    return result


def amplification(port: int, *, padded: bool = False) -> dict[str, Any]:
    """Bytes of the first answer datagram / bytes of an unauthenticated empty POST (a reflector's gain);
    `padded`: the POST padded as our client pads it."""
    token = b"\x01\x02\x03\x04"
    bare = coap_datagram(POST, 0x4242, token, [(URI_PATH, b"teep")])
    req = padded_connect(0x4243, token) if padded else bare
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(5)
        s.sendto(req, ("127.0.0.1", port))
        try:
            reply = s.recv(65536)
        except TimeoutError:
            return {"request_bytes": len(req), "answer_bytes": 0, "factor": 0.0}
    return {"request_bytes": len(req), "answer_bytes": len(reply), "factor": round(len(reply) / len(req), 1)}


__all__ = [
    "CLASSES",
    "ECHO_CLASSES",
    "ClassResult",
    "JunkClass",
    "amplification",
    "coap_datagram",
    "costly_cbor",
    "outcome",
    "padded_connect",
    "send_junk",
    "teep_post",
]
