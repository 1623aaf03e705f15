"""`bench hostile`, part 2: the TAM under test in its own process, and what inputs cost it.

`tam_with_log` runs `teep-coap tam serve` as an operator would (default log level, log in a file);
the CPU figures are the TAM process's own (from /proc) per KiB it received: costly CBOR bodies sent
block-wise, a body in the smallest blocks the TAM accepts, and, in this process, the pre-signature
decode path alone. Also: does a real session still complete, and a burst of DTLS handshakes.
"""

from __future__ import annotations

import asyncio
import selectors
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiocoap

from teep_coap.bench.hostile_junk import CONTENT_FORMAT, MESSAGE_IDS, costly_cbor, outcome, teep_post
from teep_coap.bench.sessions import (
    BenchError,
    _cli_command,
    _cpu_seconds,
    _drive,
    load_agents,
    make_world,
    stop_child,
    tam_process,
)
from teep_coap.protocol.wire import COSE, NotSigned
from teep_coap.security.errors import SecurityError
from teep_coap.security.keys import generate_key

# The junk goes to a TAM without RFC 9175 Echo: what an attacker who answers the Echo (from its own
# address) reaches anyway; the unauthenticated classes and the amplification are measured with it too.
JUNK_PROFILE = "coap-no-echo"


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
        stop_child(proc)


async def _post_blockwise(uri: str, payload: bytes, timeout: float) -> str:
    """One POST of `payload` with our Content-Format through aiocoap (block-wise as needed)."""

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
    rows.append(tiny_blocks_cpu(tam, min(size, 64 * 1024), szx=0))  # refused block by block
    rows.append(tiny_blocks_cpu(tam, min(size, 64 * 1024), szx=SMALLEST_ACCEPTED_SZX))
    return rows


SMALLEST_ACCEPTED_SZX = 1  # 32-byte blocks: the TAM refuses smaller ones early (4.00)


def tiny_blocks_cpu(tam: TamUnderTest, size: int, szx: int = 0) -> dict[str, Any]:
    """TAM CPU per KiB received for a body sent in blocks of 2 ** (szx + 4) bytes, one datagram at a
    time (every block sent even when refused): the most datagrams, hence the most per-datagram work,
    per body byte. SZX 0 (16 bytes) is the smallest CoAP has."""
    block = 2 ** (szx + 4)
    blocks = max(size // block, 1)
    received = 0
    answer = "silence"
    cpu0 = _cpu_seconds(tam.proc.pid) or 0.0
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect(("127.0.0.1", tam.port))
        s.settimeout(5)
        for num in range(blocks):
            more = 1 if num < blocks - 1 else 0
            mid = next(MESSAGE_IDS) * 2 & 0xFFFF
            datagram = teep_post(mid, b"\x16\x16", b"\x00" * block, block1=(num, more, szx))
            s.send(datagram)
            received += len(datagram)
            try:
                answer = outcome(s.recv(2048))
            except TimeoutError:
                answer = "silence"
                break
    cpu1 = _cpu_seconds(tam.proc.pid) or 0.0
    return {
        "input": f"{block}-byte-blocks",
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


__all__ = [
    "JUNK_PROFILE",
    "TamUnderTest",
    "dtls_burst",
    "in_process_decode_cpu",
    "one_session_ok",
    "rss_bytes",
    "tam_with_log",
    "tiny_blocks_cpu",
    "worst_inputs_cpu",
]
