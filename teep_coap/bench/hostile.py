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

The unauthenticated classes (empty POST, wrong method) are also sent to a TAM with the default
`coap` profile, where the early answers (`transport/coap/early_answer.py`) and the Echo challenge
meet them. The pieces: `hostile_junk` (what is sent, what is right), `hostile_tam` (the TAM process
and what inputs cost it); this module runs them and formats the figures.

Loopback only; everything is bounded by `count` per class and by timeouts.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from teep_coap.bench.hostile_junk import (
    CLASSES,
    ECHO_CLASSES,
    ClassResult,
    JunkClass,
    amplification,
    send_junk,
)
from teep_coap.bench.hostile_tam import (
    JUNK_PROFILE,
    TamUnderTest,
    dtls_burst,
    in_process_decode_cpu,
    one_session_ok,
    rss_bytes,
    tam_with_log,
    worst_inputs_cpu,
)
from teep_coap.bench.sessions import BenchError, _cpu_seconds, load_agents, make_world


def measure_class(
    tam: TamUnderTest, junk: JunkClass, count: int, world_dirs: list[Path], agents: list[Any]
) -> ClassResult:
    """Send one junk class; the TAM's CPU meanwhile, whether a real session still completes, RSS."""
    cpu0 = _cpu_seconds(tam.proc.pid)
    result = send_junk(tam.port, junk, count)
    cpu1 = _cpu_seconds(tam.proc.pid)
    result.tam_cpu = cpu1 - cpu0 if cpu0 is not None and cpu1 is not None else None
    result.survived = tam.alive and one_session_ok(world_dirs, agents, tam.uri)
    result.rss_after = rss_bytes(tam.proc.pid)
    return result


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

    def worst_junk(self) -> dict[str, dict[str, Any]]:
        """Per TAM profile, the junk class that cost the TAM the most CPU per KiB received."""
        worst: dict[str, dict[str, Any]] = {}
        for c in self.classes:
            row = c.to_json()
            profile = "coap" if c.name.endswith("/Echo") else JUNK_PROFILE
            cost = row["tam_cpu_ms_per_kib"]
            if cost is not None and cost > worst.get(profile, {}).get("ms_per_kib", -1.0):
                worst[profile] = {"class": c.name, "ms_per_kib": cost}
        return worst

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
            "worst_junk_ms_per_kib": self.worst_junk(),
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
    echo_classes: Sequence[JunkClass] = ECHO_CLASSES,
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
            amp_padded = amplification(echo_tam.port, padded=True)  # answered at once, within 3x
            echo_results = [
                measure_class(echo_tam, junk, count, world.agent_dirs, agents) for junk in echo_classes
            ]
        with tam_with_log(JUNK_PROFILE, world.tam_dir, root / "tam.log") as tam:
            if not one_session_ok(world.agent_dirs, agents, tam.uri):
                raise BenchError("a TEEP session fails against the fresh TAM: nothing to measure")
            log0 = tam.log_bytes()
            rss0 = rss_bytes(tam.proc.pid)
            results = []
            for junk in classes:
                results.append(measure_class(tam, junk, count, world.agent_dirs, agents))
            amp = {"coap": amp_echo, "coap, padded": amp_padded, JUNK_PROFILE: amplification(tam.port)}
            worst = worst_inputs_cpu(tam, worst_size) if worst_size else []
            rss1 = rss_bytes(tam.proc.pid)
            alive = tam.alive
            log_added = tam.log_bytes() - log0
            tracebacks = tam.log_text().count("Traceback")
        in_proc = in_process_decode_cpu(worst_size) if worst_size else []
        dtls = dtls_burst(dtls_handshakes, root) if dtls_handshakes else None
        return HostileResult(
            results + echo_results,
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
    for profile, w in j["worst_junk_ms_per_kib"].items():
        lines.append(
            f"worst junk class, profile {profile}: {w['class']}, {w['ms_per_kib']} ms of TAM CPU per KiB"
        )
    lines.append(
        f"worst body, TAM CPU per KiB received: {j['worst_input_tam_cpu_ms_per_kib']} ms "
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
