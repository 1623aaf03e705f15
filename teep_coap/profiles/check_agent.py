"""`teep-coap check agent`: act as a TAM and check the Agent (with its Broker) that connects to us.

The session we play: the Broker's empty POST gets a QueryRequest signed with the TAM folder's ESP256
key and sent in 16-byte Block2 blocks (the Broker must reassemble them); its QueryResponse is checked
(COSE, signature, CDDL, token echo); then we answer with an Update that is NOT signed, which a
conforming Agent refuses (an Error, or no Success). Requests the CoAP binding rejects before any
TEEP processing (wrong Content-Format, method) are seen in the server's rejection log.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any

from teep_coap.encoding.cbor_codec import decode, encode
from teep_coap.encoding.errors import TeepDecodeError
from teep_coap.model.codes import MessageType
from teep_coap.model.teep import QueryRequest, Update
from teep_coap.profiles.conformance import CheckError, Report, examine_message
from teep_coap.profiles.schema import Profile
from teep_coap.profiles.stack import make_server
from teep_coap.security import cose
from teep_coap.security.errors import SecurityError
from teep_coap.security.keys import load_signing_key
from teep_coap.transport.base import PeerInfo

SMALL_BLOCK = 16
SETTLE = 1.0  # seconds to wait for one more request after the unsigned Update


class _Rejections(logging.Handler):
    """Collects the CoAP server's `rejected 4.xx from …: reason` lines."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        if text.startswith("rejected "):
            self.lines.append(text)


class _CheckingTam:
    """The MessageHandler: plays the session above and records what it saw."""

    def __init__(self, report: Report, key: Any, peer_key: Any | None, *, coap: bool = True) -> None:
        self.coap = coap  # HTTP has no block-wise transfer, and a Content-Type instead of a Content-Format
        self.report = report
        self.key = key
        self.peer_key = peer_key
        self.token = secrets.token_bytes(16)
        self.step = "connect"
        self.after_update: list[bytes] = []
        self.progress = asyncio.Event()

    async def __call__(self, payload: bytes, peer: PeerInfo) -> bytes | None:

        self.progress.set()
        if self.step == "connect":
            self.report.add(
                "agent.connect", not payload, f"first POST from {peer.address}: {len(payload)} bytes"
            )
            self.step = "query"
            return cose.sign1(encode(QueryRequest(token=self.token)), self.key)
        if self.step == "query":
            if not payload:
                return None  # a new session: nothing more from us
            if self.coap:
                self.report.add(
                    "agent.block2", True, f"QueryRequest reassembled from {SMALL_BLOCK}-byte blocks"
                )
                self.report.add(
                    "agent.content-format", True, "the QueryResponse passed the Content-Format rule"
                )
            else:
                self.report.add("agent.block2", None, "HTTP: no block-wise transfer")
                self.report.add(
                    "agent.content-format", True, "the QueryResponse passed the Content-Type rule"
                )
            examine_message(
                self.report, payload, int(MessageType.QUERY_RESPONSE), self.peer_key, token=self.token
            )
            self.step = "update"
            return encode(Update(token=secrets.token_bytes(16)))  # valid CDDL, but unsigned on purpose
        if payload and self.step == "update":
            self.after_update.append(payload)
        return None


async def check_agent(
    profile: Profile,
    tam_dir: str | os.PathLike[str],
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    peer_key: Any | None = None,
    run_command: str | None = None,
    wait: float = 60.0,
    announce: Callable[[str], object] | None = None,
) -> Report:
    """Serve as a TAM until the Agent's session is over (or `wait` seconds) and report."""

    if profile.protocol != "teep" or profile.encoding != "cbor":
        raise CheckError(f"check agent covers the TEEP CBOR/COSE profiles; {profile.name!r} is not one")
    if profile.transport.scheme == "https":
        raise CheckError(
            "check agent over HTTPS is not implemented; use teep-cbor-http (the checks are the same)"
        )
    key_file = Path(tam_dir) / "keys" / "esp256" / "private.pem"
    if not key_file.is_file():
        raise CheckError(f"{key_file} not found: --tam-dir must be a `teep-coap tam init` folder")
    key = load_signing_key(key_file)
    small = dataclasses.replace(
        profile, transport=dataclasses.replace(profile.transport, block_size=SMALL_BLOCK)
    )
    tam = _CheckingTam(Report("agent", "", profile.name), key, peer_key, coap=profile.transport.is_coap)
    rejections = _Rejections()
    server_log = logging.getLogger("teep_coap.transport.coap.server")
    server_log.addHandler(rejections)
    server = make_server(small, tam, host=host, port=port, tam_dir=Path(tam_dir))
    bound = await server.start()
    proc: asyncio.subprocess.Process | None = None
    try:
        actual = bound if isinstance(bound, int) else int(getattr(server, "port", port))
        scheme = profile.transport.scheme
        uri = f"{scheme}://{host if ':' not in host else f'[{host}]'}:{actual}{profile.transport.path}"
        tam.report.target = uri
        if announce is not None:
            announce(uri)
        if run_command is not None:
            proc = await asyncio.create_subprocess_shell(
                run_command.replace("{uri}", uri),
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.DEVNULL,
            )
        await _wait_for_session(tam, proc, wait)
    finally:
        if proc is not None and proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 10)
            except TimeoutError:
                proc.kill()
        closer = getattr(server, "close", None) or server.stop
        await closer()
        server_log.removeHandler(rejections)
    _conclude(tam, rejections.lines)
    return tam.report


async def _wait_for_session(tam: _CheckingTam, proc: asyncio.subprocess.Process | None, wait: float) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    while loop.time() < deadline:
        if tam.step == "update" and tam.after_update:
            return
        if proc is not None and proc.returncode is not None:
            await asyncio.sleep(0.2)  # the last request may still be in the server
            return
        tam.progress.clear()
        remaining = deadline - loop.time()
        limit = min(remaining, SETTLE) if tam.step == "update" else remaining
        try:
            await asyncio.wait_for(tam.progress.wait(), max(limit, 0.01))
        except TimeoutError:
            if tam.step == "update":
                return  # nothing more after the unsigned Update: the Agent stopped


def _conclude(tam: _CheckingTam, rejected: list[str]) -> None:

    report = tam.report
    note = "; ".join(rejected) or "none"
    if tam.step == "connect":
        report.add("agent.connect", False, f"no request reached the TAM (rejected: {note})")
        report.add("agent.block2", None, "no session")
        report.add("agent.content-format", None, "no session")
        report.add("agent.rejects-unsigned", None, "no session")
        return
    if tam.step == "query" and not tam.coap:
        report.add("agent.content-format", None, "no QueryResponse arrived (HTTP: the server logs no reason)")
        report.add("agent.block2", None, "HTTP: no block-wise transfer")
        report.add("agent.rejects-unsigned", None, "the session did not get that far")
        return
    if tam.step == "query":
        cf_rejected = any("4.15" in line for line in rejected)
        report.add("agent.content-format", not cf_rejected, f"no QueryResponse accepted (rejected: {note})")
        report.add("agent.block2", None if cf_rejected else False, "no QueryResponse arrived")
        report.add("agent.rejects-unsigned", None, "the session did not get that far")
        return
    if not tam.after_update:
        report.add("agent.rejects-unsigned", True, "no further message after the unsigned Update")
        return
    answer = tam.after_update[0]
    try:
        info = cose.inspect(answer)
        kind = type(decode(info.payload)).__name__ if info.payload else "?"
    except (SecurityError, TeepDecodeError) as exc:
        kind = f"undecodable ({exc})"
    report.add("agent.rejects-unsigned", kind != "Success", f"answered the unsigned Update with {kind}")
