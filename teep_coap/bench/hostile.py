"""`teep-coap bench hostile`: a TAM on loopback against what an attacker would send, with figures.

The TAM runs as `teep-coap tam serve --profile coap-no-echo` in its own process, logging at its
default level into a file (without RFC 9175 Echo: an attacker answering the Echo from its own address
reaches the same code; the amplification is also measured against the default `coap` profile).
Classes of junk datagrams are sent from many source ports on 127.0.0.1 (bounded count and time);
each class says which answers are right (silence, Reset, or given CoAP codes). After each class one
real TEEP session must still complete ("survived"). Reported per class: datagrams tried, answered
right, answered wrong (e.g. 5.00, or 2.xx to junk), the TAM's CPU and resident memory.
Then: the TAM CPU per KiB received for the worst inputs we could build (costly CBOR sent block-wise
as one request, and in single datagrams), the amplification factor of an unauthenticated request
(bytes of the first answer datagram / bytes of the request), the log bytes the run added and whether
any traceback was logged, and the success of a burst of simultaneous DTLS handshakes against a
coaps-psk TAM.

Loopback only; everything is bounded by `count` per class and by timeouts.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import random
import selectors
import shutil
import socket
import subprocess
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cbor2

from teep_coap.bench.sessions import (
    BenchError,
    _cli_command,
    _cpu_seconds,
    _drive,
    load_agents,
    make_world,
    tam_process,
)

CONTENT_FORMAT = 65000  # application/teep+cbor in our binding (experimental range)
URI_PATH, CONTENT_FORMAT_OPT, BLOCK1, SIZE1 = 11, 12, 27, 60
POST, GET, PUT, DELETE = 2, 1, 3, 4
SOCKETS = 50  # source ports the junk comes from (one datagram in flight each: no kernel buffer drops)
# The junk goes to a TAM without RFC 9175 Echo: what an attacker who answers the Echo (from its own
# address) reaches anyway; the amplification is measured with and without it.
JUNK_PROFILE = "coap-no-echo"
QUIET = 0.5  # seconds without an answer after which the rest of a batch counts as silent
_MIDS = itertools.count()
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
)


# ------------------------------------------------------------------------------ measuring a TAM process


def rss_bytes(pid: int) -> int | None:
    """Resident set size of a process (Linux /proc)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


@dataclass
class TamUnderTest:
    """`teep-coap tam serve` in a child process with its log in a file."""

    proc: subprocess.Popen[str]
    uri: str
    port: int
    log_path: Path

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_bytes(self) -> int:
        return self.log_path.stat().st_size if self.log_path.exists() else 0

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


@contextmanager
def tam_with_log(profile: str, tam_dir: Path, log_path: Path) -> Iterator[TamUnderTest]:
    """Start `tam serve` (default log level, as an operator runs it), stop it on exit."""
    with log_path.open("w") as log_file:
        proc = subprocess.Popen(
            _cli_command(
                "tam", "serve", "--profile", profile, "--dir", str(tam_dir), "--bind", "127.0.0.1:0"
            ),
            stdout=subprocess.PIPE,
            stderr=log_file,
            text=True,
        )
    try:
        assert proc.stdout is not None
        sel = selectors.DefaultSelector()
        sel.register(proc.stdout, selectors.EVENT_READ)
        uri = ""
        deadline = time.monotonic() + 90  # a loaded machine starts Python slowly
        while time.monotonic() < deadline and not uri:
            if sel.select(timeout=0.2):
                line = proc.stdout.readline()
                if not line:
                    break
                if line.startswith("TAM serving "):
                    uri = line.split()[2]
            elif proc.poll() is not None:
                break
        if not uri:
            tail = log_path.read_text()[-400:] or "no output"
            raise BenchError(f"`tam serve --profile {profile}` did not start (exit {proc.poll()}): {tail}")
        port = int(uri.rsplit(":", 1)[1].split("/")[0])
        yield TamUnderTest(proc, uri, port, log_path)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


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
    """Read answers until every socket in `waiting` answered, `quiet` s passed without any, or deadline."""
    answers: dict[int, bytes] = {}
    last = time.monotonic()
    while waiting - answers.keys() and time.monotonic() < deadline:
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
    return answers


def _fresh_sockets(port: int, n: int) -> tuple[list[socket.socket], selectors.BaseSelector]:
    socks = []
    sel = selectors.DefaultSelector()
    for index in range(n):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("127.0.0.1", 0))
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
    while sent < count and time.monotonic() < deadline:
        batch = min(sockets, count - sent)
        socks, sel = _fresh_sockets(port, batch)  # new source ports for every batch
        try:
            # Message IDs never repeat within a run (a reused source port with a repeated Message ID
            # is a duplicate to CoAP, answered with the earlier response): two per sequence
            seqs = [junk.sequence(next(_MIDS) * 2 & 0xFFFF, rng) for _ in range(batch)]
            answers: dict[int, bytes] = {}
            for step in range(max(len(s) for s in seqs)):
                waiting = set()
                for k, seq in enumerate(seqs):
                    if step < len(seq):
                        socks[k].send(seq[step])
                        result.datagrams += 1
                        result.bytes_in += len(seq[step])
                        waiting.add(k)
                answers = _drain(socks, sel, waiting, deadline, quiet)
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


def amplification(port: int) -> dict[str, Any]:
    """Bytes of the first answer datagram / bytes of an unauthenticated empty POST (a reflector's gain)."""
    req = coap_datagram(POST, 0x4242, b"\x01\x02\x03\x04", [(URI_PATH, b"teep")])
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(5)
        s.sendto(req, ("127.0.0.1", port))
        try:
            reply = s.recv(65536)
        except TimeoutError:
            return {"request_bytes": len(req), "answer_bytes": 0, "factor": 0.0}
    return {"request_bytes": len(req), "answer_bytes": len(reply), "factor": round(len(reply) / len(req), 1)}


async def _post_blockwise(uri: str, payload: bytes, timeout: float) -> str:
    """One POST of `payload` with our Content-Format through aiocoap (block-wise as needed)."""
    import aiocoap

    ctx = await aiocoap.Context.create_client_context()
    try:
        msg = aiocoap.Message(code=aiocoap.POST, uri=uri, payload=payload, content_format=CONTENT_FORMAT)
        response = await asyncio.wait_for(ctx.request(msg).response, timeout)
        return str(response.code.dotted)
    except Exception as exc:  # a timeout or an error is a figure here, not a failure of the bench
        return type(exc).__name__
    finally:
        await ctx.shutdown()


def worst_inputs_cpu(tam: TamUnderTest, size: int, timeout: float = 120.0) -> list[dict[str, Any]]:
    """TAM CPU per KiB received for each costly input sent as one (block-wise) request of ~`size` B."""
    rows = []
    names = [
        "rational",
        "decimal-fraction",
        "bignum",
        "rational-in-cose",
        "deep",
        "many-items",
        "length-lie",
        "shared-values",
        "floats",
    ]
    for name, payload in zip(names, costly_cbor(size), strict=True):
        if len(payload) < 4096:  # one datagram: below the CPU clock's 10 ms resolution (see costly-cbor)
            continue
        cpu0 = _cpu_seconds(tam.proc.pid) or 0.0
        code = asyncio.run(_post_blockwise(tam.uri, payload, timeout))
        time.sleep(0.05)
        cpu1 = _cpu_seconds(tam.proc.pid) or 0.0
        kib = len(payload) / 1024
        rows.append(
            {
                "input": name,
                "bytes": len(payload),
                "answer": code,
                "tam_cpu_ms": round((cpu1 - cpu0) * 1000, 1),
                "tam_cpu_ms_per_kib": round((cpu1 - cpu0) * 1000 / kib, 3),
            }
        )
    rows.append(tiny_blocks_cpu(tam, min(size, 64 * 1024)))
    return rows


def tiny_blocks_cpu(tam: TamUnderTest, size: int) -> dict[str, Any]:
    """TAM CPU per KiB received for a body sent in the smallest blocks CoAP has (16 bytes, SZX 0),
    one datagram at a time: the most datagrams, hence the most per-datagram work, per body byte."""
    blocks = max(size // 16, 1)
    received = 0
    answer = "silence"
    cpu0 = _cpu_seconds(tam.proc.pid) or 0.0
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect(("127.0.0.1", tam.port))
        s.settimeout(5)
        for num in range(blocks):
            more = 1 if num < blocks - 1 else 0
            datagram = teep_post(next(_MIDS) * 2 & 0xFFFF, b"\x16\x16", b"\x00" * 16, block1=(num, more, 0))
            s.send(datagram)
            received += len(datagram)
            try:
                answer = outcome(s.recv(2048))
            except TimeoutError:
                answer = "silence"
                break
    cpu1 = _cpu_seconds(tam.proc.pid) or 0.0
    return {
        "input": "16-byte-blocks",
        "bytes": received,
        "answer": answer,
        "tam_cpu_ms": round((cpu1 - cpu0) * 1000, 1),
        "tam_cpu_ms_per_kib": round((cpu1 - cpu0) * 1000 / (received / 1024), 3),
    }


def one_session_ok(world_dirs: list[Path], agents: list[Any], uri: str) -> bool:
    """Does a real TEEP session (plain CoAP) still complete against this TAM?"""
    _lat, failures, _s, _r = asyncio.run(_drive(JUNK_PROFILE, uri, world_dirs[:1], 1, 1, agents=agents[:1]))
    return not failures


def dtls_burst(handshakes: int, root: Path) -> dict[str, Any]:
    """`handshakes` devices start a coaps-psk session at the same moment: how many complete."""
    world = make_world(root / "tam-dtls", root / "agents-dtls", handshakes, 64)
    agents = load_agents(world.agent_dirs)
    with tam_process("coaps-psk", world.tam_dir) as (uri, _pid):
        t0 = time.monotonic()
        lat, failures, _s, restarts = asyncio.run(
            _drive("coaps-psk", uri, world.agent_dirs, handshakes, handshakes, agents=agents)
        )
    return {
        "simultaneous": handshakes,
        "completed": len(lat),
        "failed": len(failures),
        "seconds": round(time.monotonic() - t0, 1),
        "handshake_restarts": restarts,
        "first_failures": failures[:3],
    }


def in_process_decode_cpu(size: int) -> list[dict[str, Any]]:
    """CPU per KiB of what the TAM runs on an unauthenticated body before any signature check
    (`Wire.peek` then `Wire.open`), measured in this process with `time.process_time`."""
    from teep_coap.protocol.wire import COSE, NotSigned
    from teep_coap.security.errors import SecurityError
    from teep_coap.security.keys import generate_key

    key = generate_key(-9).public
    rows = []
    for index, payload in enumerate(costly_cbor(size)):
        t0 = time.process_time()
        refused = ""
        try:
            COSE.peek(payload)
            COSE.open(payload, [key])
        except (NotSigned, SecurityError, ValueError) as exc:
            refused = type(exc).__name__
        ms = (time.process_time() - t0) * 1000
        rows.append(
            {
                "input": index,
                "bytes": len(payload),
                "refused_with": refused,
                "ms_per_kib": round(ms / (len(payload) / 1024), 4),
            }
        )
    return rows


@dataclass
class HostileResult:
    classes: list[ClassResult]
    worst_blockwise: list[dict[str, Any]]
    in_process: list[dict[str, Any]]
    amplification: dict[str, Any]
    rss_start: int | None
    rss_end: int | None
    log_bytes: int
    tracebacks: int
    alive: bool
    dtls: dict[str, Any] | None
    load_average: float
    seconds: float

    def to_json(self) -> dict[str, Any]:
        tried = sum(c.datagrams for c in self.classes)
        wrong = sum(c.wrong for c in self.classes)
        return {
            "datagrams_tried": tried,
            "answered_right": sum(c.right for c in self.classes),
            "answered_wrong": wrong,
            "classes_survived": sum(c.survived for c in self.classes),
            "classes": [c.to_json() for c in self.classes],
            "tam_alive_at_end": self.alive,
            "worst_input_tam_cpu_ms_per_kib": max(
                (r["tam_cpu_ms_per_kib"] for r in self.worst_blockwise), default=None
            ),
            "worst_blockwise": self.worst_blockwise,
            "worst_in_process_ms_per_kib": max((r["ms_per_kib"] for r in self.in_process), default=None),
            "amplification": self.amplification,
            "rss_start_mb": round(self.rss_start / 2**20, 1) if self.rss_start else None,
            "rss_end_mb": round(self.rss_end / 2**20, 1) if self.rss_end else None,
            "log_bytes_added": self.log_bytes,
            "log_tracebacks": self.tracebacks,
            "dtls_burst": self.dtls,
            "load_average_at_start": round(self.load_average, 2),
            "seconds": round(self.seconds, 1),
        }


def run_hostile(
    *,
    count: int = 5000,
    worst_size: int = 1_040_000,
    dtls_handshakes: int = 200,
    classes: Sequence[JunkClass] = CLASSES,
    keep: bool = False,
) -> HostileResult:
    """The whole benchmark; see the module docstring."""
    t0 = time.monotonic()
    load = os.getloadavg()[0]
    root = Path(tempfile.mkdtemp(prefix="teep-bench-hostile-"))
    try:
        world = make_world(root / "tam", root / "agents", 1, 64)
        agents = load_agents(world.agent_dirs)
        with tam_with_log("coap", world.tam_dir, root / "tam-echo.log") as echo_tam:
            amp_echo = amplification(echo_tam.port)  # the default profile: RFC 9175 Echo first
        with tam_with_log(JUNK_PROFILE, world.tam_dir, root / "tam.log") as tam:
            if not one_session_ok(world.agent_dirs, agents, tam.uri):
                raise BenchError("a TEEP session fails against the fresh TAM: nothing to measure")
            log0 = tam.log_bytes()
            rss0 = rss_bytes(tam.proc.pid)
            results = []
            for junk in classes:
                cpu0 = _cpu_seconds(tam.proc.pid)
                r = send_junk(tam.port, junk, count)
                cpu1 = _cpu_seconds(tam.proc.pid)
                r.tam_cpu = cpu1 - cpu0 if cpu0 is not None and cpu1 is not None else None
                r.survived = tam.alive and one_session_ok(world.agent_dirs, agents, tam.uri)
                r.rss_after = rss_bytes(tam.proc.pid)
                results.append(r)
            amp = {"coap": amp_echo, JUNK_PROFILE: amplification(tam.port)}
            worst = worst_inputs_cpu(tam, worst_size) if worst_size else []
            rss1 = rss_bytes(tam.proc.pid)
            alive = tam.alive
            log_added = tam.log_bytes() - log0
            tracebacks = tam.log_text().count("Traceback")
        in_proc = in_process_decode_cpu(worst_size) if worst_size else []
        dtls = dtls_burst(dtls_handshakes, root) if dtls_handshakes else None
        return HostileResult(
            results,
            worst,
            in_proc,
            amp,
            rss0,
            rss1,
            log_added,
            tracebacks,
            alive,
            dtls,
            load,
            time.monotonic() - t0,
        )
    finally:
        if not keep:
            shutil.rmtree(root, ignore_errors=True)


def _or_q(value: object) -> str:
    return "?" if value is None else str(value)


def format_hostile(r: HostileResult) -> str:
    j = r.to_json()
    lines = [
        f"{'class':<18} {'tried':>7} {'right':>7} {'wrong':>6} {'survived':>8} {'RSS MB':>7} "
        f"{'µs/dgram':>8} {'ms/KiB':>7}  answers"
    ]
    for c in j["classes"]:
        answers = ", ".join(f"{k} {v}" for k, v in list(c["outcomes"].items())[:4])
        lines.append(
            f"{c['class']:<18} {c['datagrams']:>7} {c['right']:>7} {c['wrong']:>6} "
            f"{'yes' if c['survived'] else 'NO':>8} {c['rss_after_mb'] or '?':>7} "
            f"{_or_q(c['tam_cpu_us_per_datagram']):>8} {_or_q(c['tam_cpu_ms_per_kib']):>7}  {answers}"
        )
    lines.append(
        f"junk datagrams: {j['datagrams_tried']} tried, {j['answered_right']} answered right, "
        f"{j['answered_wrong']} wrong; sessions still complete after {j['classes_survived']}"
        f"/{len(j['classes'])} classes; TAM alive at the end: {j['tam_alive_at_end']}"
    )
    for w in j["worst_blockwise"]:
        lines.append(
            f"worst input {w['input']:<17} {w['bytes']:>8} B block-wise -> {w['answer']:<7} "
            f"TAM CPU {w['tam_cpu_ms']:>7} ms = {w['tam_cpu_ms_per_kib']} ms/KiB"
        )
    lines.append(
        f"worst TAM CPU per KiB received: {j['worst_input_tam_cpu_ms_per_kib']} ms "
        f"(pre-signature decode path alone, in process: {j['worst_in_process_ms_per_kib']} ms/KiB)"
    )
    for profile, a in j["amplification"].items():
        lines.append(
            f"amplification of an unauthenticated empty POST, profile {profile}: {a['request_bytes']} B in, "
            f"{a['answer_bytes']} B out = {a['factor']}x"
        )
    lines.append(
        f"TAM RSS {j['rss_start_mb']} MB before the junk, {j['rss_end_mb']} MB after; log grew "
        f"{j['log_bytes_added']} B with {j['log_tracebacks']} tracebacks"
    )
    if j["dtls_burst"]:
        d = j["dtls_burst"]
        lines.append(
            f"DTLS burst: {d['completed']}/{d['simultaneous']} simultaneous coaps-psk sessions "
            f"completed in {d['seconds']} s ({d['handshake_restarts']} handshake restarts)"
        )
    lines.append(
        f"machine: {os.cpu_count()} cores, load average {j['load_average_at_start']} at start; "
        f"{j['seconds']} s"
    )
    return "\n".join(lines)


__all__ = ["CLASSES", "HostileResult", "JunkClass", "format_hostile", "run_hostile", "send_junk"]
