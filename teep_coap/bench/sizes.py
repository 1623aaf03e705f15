"""`teep-coap bench sizes`: bytes of the same provisioning session over every binding, layer by layer.

Every number is counted, none is computed from a formula (method: docs/sizes.md):

* message    — the bare TEEP (or OTrP) message: the payload inside the COSE/JWS object on the wire;
* signature  — the signed object minus the bare message (COSE_Sign1 / JWS overhead);
* framing    — transport framing (CoAP header, options, block-wise; HTTP request/response lines and
               headers): what the relay counted when the same session ran with transport security
               off (the profile's "plain twin") minus the signed messages;
* security   — record protection (DTLS / TLS records, OSCORE): the secured run's protected
               application bytes minus the plain twin's bytes;
* handshake  — security setup and teardown records (DTLS/TLS handshake, change_cipher_spec, alerts),
               recognised by their record headers; bytes of a plain run outside any exchange.

Per message, the bytes of an exchange are split by direction: what the Broker sent belongs to the
message it posted, what came back to the TAM's answer ("start" is the empty POST, "end" the empty
answer). Rows "handshake" and "teardown" hold bytes that belong to no message, so the message rows
of a session add up to the row "session" and to the relay's total, exactly.
"""

from __future__ import annotations

import asyncio
import csv
import dataclasses
import datetime
import io
import json
import shlex
import statistics
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cbor2
import matplotlib
import matplotlib.pyplot as plt

from teep_coap import __version__
from teep_coap.bench.scenario import run_session, world_for
from teep_coap.bench.wire import (
    C2S,
    S2C,
    Record,
    SessionTrace,
    dtls_records,
    edhoc_records,
    handshake_records,
    tls_records,
)
from teep_coap.errors import TeepCoapError
from teep_coap.profiles.schema import Profile, SecuritySettings
from teep_coap.security.cose import inspect
from teep_coap.security.jose import parse_json

LAYERS = ("message", "signature", "framing", "security", "handshake")
DEFAULT_PAYLOAD_SIZES = (20, 1024, 16384, 65536)
SESSION = "session"
PLAIN_SCHEME = {"coaps": "coap", "coap+oscore": "coap", "https": "http"}


class SizesError(TeepCoapError):
    """The size report cannot be made (bad option, or a measured run is inconsistent)."""


@dataclass(frozen=True)
class SizeRecord:
    """One number of the report (the JSON/CSV record)."""

    profile: str
    payload_size: int
    message: str
    layer: str
    bytes: int


@dataclass
class SessionSummary:
    """Whole-session counts that are not bytes per layer."""

    profile: str
    payload_size: int
    wire_bytes: int
    units: int  # datagrams (UDP) or reads (TCP; roughly segments on loopback)
    unit_name: str
    security_records: int
    round_trips: int
    exchanges: int
    seconds: float
    handshake_bytes: int
    messages: list[str] = field(default_factory=list)


@dataclass
class ProfileResult:
    records: list[SizeRecord]
    summary: SessionSummary


# ------------------------------------------------------------------------------------- message facts


def _inner(data: bytes, encoding: str, protocol: str, facts: dict[bytes, tuple[str, int]]) -> tuple[str, int]:
    """(message name, bare size) of one signed message as it crossed the wire."""
    if data in facts:  # noted by the engine that sealed it (OTrP: JWE/COSE_Encrypt cannot be opened here)
        return facts[data]
    if protocol == "otrp":
        raise SizesError("an OTrP message the engines did not note crossed the wire")
    if encoding == "json":
        bare = parse_json(data).payload
        obj = json.loads(bare)
        kind = obj.get("type") if isinstance(obj, dict) else None
        return _TEEP_NAMES.get(kind, str(kind)), len(bare)

    payload = inspect(data).payload or b""
    arr = cbor2.loads(payload)
    kind = arr[0] if isinstance(arr, list) and arr else None
    return _TEEP_NAMES.get(kind, str(kind)), len(payload)


_TEEP_NAMES: dict[Any, str] = {
    1: "QueryRequest",
    2: "QueryResponse",
    3: "Update",
    5: "Success",
    6: "Error",
    "query-request": "QueryRequest",
    "query-response": "QueryResponse",
    "update": "Update",
    "teep-success": "Success",
    "success": "Success",
    "teep-error": "Error",
    "error": "Error",
}


@dataclass
class _Message:
    name: str
    direction: str
    exchange: int
    bare: int
    signed: int
    wire: int = 0
    setup: int = 0  # security setup/teardown records inside its exchange window


def _messages(trace: SessionTrace, profile: Profile) -> list[_Message]:
    out: list[_Message] = []
    seen: dict[str, int] = {}

    def add(name: str, direction: str, index: int, bare: int, signed: int) -> None:
        seen[name] = seen.get(name, 0) + 1
        label = name if seen[name] == 1 else f"{name}#{seen[name]}"
        out.append(_Message(label, direction, index, bare, signed))

    for index, ex in enumerate(trace.exchanges):
        if ex.sent:
            name, bare = _inner(ex.sent, profile.encoding, profile.protocol, trace.facts)
            add(name, C2S, index, bare, len(ex.sent))
        else:
            add("start", C2S, index, 0, 0)
        if ex.received:
            name, bare = _inner(ex.received, profile.encoding, profile.protocol, trace.facts)
            add(name, S2C, index, bare, len(ex.received))
        else:
            add("end", S2C, index, 0, 0)
    return out


def _security_records(trace: SessionTrace, profile: Profile) -> tuple[list[Record], list[Record]]:
    scheme = profile.transport.scheme
    if profile.security.mode == "edhoc":
        return edhoc_records(trace.wire), []
    if scheme == "coaps":
        return handshake_records(dtls_records(trace.wire), tls=False)
    if scheme == "https":
        return handshake_records(tls_records(trace.wire), tls=True)
    return [], []


def _window_of(trace: SessionTrace, unit: int) -> int | None:
    for index, ex in enumerate(trace.exchanges):
        if ex.start <= unit < ex.end:
            return index
    return None


def _fill_wire(trace: SessionTrace, messages: list[_Message], setup: Sequence[Record]) -> tuple[int, int]:
    """Put each logged byte on its message; returns (bytes outside every exchange, setup bytes outside)."""
    by_key = {(m.exchange, m.direction): m for m in messages}
    outside = 0
    for unit_index, unit in enumerate(trace.wire):
        window = _window_of(trace, unit_index)
        if window is None:
            outside += len(unit.data)
            continue
        by_key[(window, unit.direction)].wire += len(unit.data)
    setup_outside = 0
    for rec in setup:
        window = _window_of(trace, rec.unit)
        if window is None:
            setup_outside += rec.size
        else:
            by_key[(window, rec.direction)].setup += rec.size
    return outside, setup_outside


def _round_trips(trace: SessionTrace) -> int:
    """Turns of the conversation: how often the direction changed from client to server side."""
    turns, last = 0, None
    for unit in trace.wire:
        if unit.direction == S2C and last == C2S:
            turns += 1
        last = unit.direction
    return turns


def analyse(
    profile: Profile, payload_size: int, trace: SessionTrace, plain: SessionTrace | None
) -> ProfileResult:
    """Records and summary of one profile at one payload size (`plain`: the run of its plain twin)."""
    messages = _messages(trace, profile)
    setup, app = _security_records(trace, profile)
    outside, _setup_outside = _fill_wire(trace, messages, setup)
    twin: list[_Message] | None = None
    twin_outside = 0
    if plain is not None:
        twin = _messages(plain, profile)
        twin_outside, _ = _fill_wire(plain, twin, [])
        if [m.name for m in twin] != [m.name for m in messages]:
            raise SizesError(
                f"{profile.name}: the plain twin carried other messages "
                f"({[m.name for m in twin]} vs {[m.name for m in messages]})"
            )
    records: list[SizeRecord] = []

    def rec(message: str, layer: str, value: int) -> None:
        records.append(SizeRecord(profile.name, payload_size, message, layer, value))

    handshake_total = 0
    for i, m in enumerate(messages):
        plain_wire = twin[i].wire if twin is not None else m.wire - m.setup
        rec(m.name, "message", m.bare)
        rec(m.name, "signature", m.signed - m.bare)
        rec(m.name, "framing", plain_wire - m.signed)
        rec(m.name, "security", m.wire - m.setup - plain_wire)
        rec(m.name, "handshake", 0)
        handshake_total += m.setup
    # Bytes that belong to no message: security setup (inside the first exchange) and what was sent
    # outside every exchange: teardown (close_notify alerts) in a secured run, except as many bytes as
    # the plain twin also sent outside its exchanges (late CoAP ACKs), which are framing.
    teardown_framing = outside if plain is None else min(outside, twin_outside)
    for name, framing, hs in (
        ("handshake", 0, handshake_total),
        ("teardown", teardown_framing, outside - teardown_framing),
    ):
        rec(name, "message", 0)
        rec(name, "signature", 0)
        rec(name, "framing", framing)
        rec(name, "security", 0)
        rec(name, "handshake", hs)
    for layer in LAYERS:
        rec(SESSION, layer, sum(r.bytes for r in records if r.layer == layer and r.message != SESSION))
    wire_total = sum(len(u.data) for u in trace.wire)
    session_total = sum(r.bytes for r in records if r.message == SESSION)
    if session_total != wire_total:
        raise SizesError(
            f"{profile.name}: layers add up to {session_total} bytes, the relay counted {wire_total}"
        )
    summary = SessionSummary(
        profile=profile.name,
        payload_size=payload_size,
        wire_bytes=wire_total,
        units=len(trace.wire),
        unit_name="datagrams" if trace.transport == "udp" else "tcp-reads",
        security_records=len(setup) + len(app),
        round_trips=_round_trips(trace),
        exchanges=len(trace.exchanges),
        seconds=trace.seconds,
        handshake_bytes=handshake_total + outside - teardown_framing,
        messages=[m.name for m in messages],
    )
    return ProfileResult(records, summary)


def plain_twin(profile: Profile) -> Profile | None:
    """The same profile with transport security off (None when it has none)."""
    scheme = PLAIN_SCHEME.get(profile.transport.scheme)
    if scheme is None:
        return None
    return dataclasses.replace(
        profile,
        name=f"{profile.name}~plain",
        transport=dataclasses.replace(profile.transport, scheme=scheme),
        security=SecuritySettings(mode="none"),
    )


# ------------------------------------------------------------------------------------- running


Runner = Callable[[Profile, int], Any]  # async (profile, payload size) -> SessionTrace


async def default_runner(profile: Profile, payload_size: int) -> SessionTrace:
    """The reference scenario for the profile's protocol and encoding."""

    return await run_session(profile, payload_size, world_factory=world_for(profile))


@dataclass
class SizesReport:
    records: list[SizeRecord] = field(default_factory=list)
    sessions: list[SessionSummary] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    def session_bytes(self, profile: str, payload_size: int) -> int:
        return sum(
            r.bytes
            for r in self.records
            if r.profile == profile and r.payload_size == payload_size and r.message == SESSION
        )


async def measure(
    profiles: Sequence[Profile],
    payload_sizes: Sequence[int],
    *,
    runner: Runner = default_runner,
    repeat: int = 1,
    progress: Callable[[str], None] | None = None,
    keep_going: bool = True,
) -> SizesReport:
    """Run every profile at every payload size (and plain twins); wall time is the median of `repeat`."""
    report = SizesReport()
    for profile in profiles:
        twin = plain_twin(profile)
        for size in payload_sizes:
            if progress:
                progress(f"{profile.name} @ {size} B")
            try:
                traces = [await runner(profile, size) for _ in range(max(1, repeat))]
                plain = await runner(twin, size) if twin is not None else None
                result = analyse(profile, size, traces[0], plain)
            except TeepCoapError as exc:
                if not keep_going:
                    raise
                report.failures.append(f"{profile.name} @ {size} B: {exc}")
                continue
            result.summary.seconds = statistics.median(t.seconds for t in traces)
            report.records.extend(result.records)
            report.sessions.append(result.summary)
    return report


# ------------------------------------------------------------------------------------- output


@dataclass(frozen=True)
class Provenance:
    """What made a report file: program version, time and command line (every file carries them)."""

    version: str
    date: str  # ISO 8601, UTC
    command: str

    @classmethod
    def now(cls, argv: Sequence[str] | None = None) -> Provenance:

        args = list(sys.argv if argv is None else argv)
        if args:
            args[0] = "teep-coap"  # the console script, not the interpreter's path to it
        when = datetime.datetime.now(datetime.UTC).replace(microsecond=0).isoformat()
        return cls(__version__, when, shlex.join(args))

    def line(self) -> str:
        return f"teep-coap {self.version}, {self.date}, command: {self.command}"


def records_csv(report: SizesReport, provenance: Provenance | None = None) -> str:
    buf = io.StringIO()
    if provenance is not None:
        buf.write(f"# {provenance.line()}\n")  # read with a comment character of '#'
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["profile", "payload_size", "message", "layer", "bytes"])
    for r in report.records:
        writer.writerow([r.profile, r.payload_size, r.message, r.layer, r.bytes])
    return buf.getvalue()


def report_json(report: SizesReport, provenance: Provenance | None = None) -> str:
    return json.dumps(
        {
            **({"generated": dataclasses.asdict(provenance)} if provenance is not None else {}),
            "records": [dataclasses.asdict(r) for r in report.records],
            "sessions": [dataclasses.asdict(s) for s in report.sessions],
            "failures": report.failures,
            "layers": list(LAYERS),
            "method": "docs/sizes.md",
        },
        indent=1,
    )


def _layer_table(report: SizesReport, size: int) -> list[tuple[str, dict[str, int]]]:
    rows = []
    for s in report.sessions:
        if s.payload_size != size:
            continue
        values = {
            r.layer: r.bytes
            for r in report.records
            if r.profile == s.profile and r.payload_size == size and r.message == SESSION
        }
        rows.append((s.profile, values))
    return rows


def report_markdown(report: SizesReport, provenance: Provenance | None = None) -> str:
    sizes = sorted({s.payload_size for s in report.sessions})
    lines = ["# Bytes of one provisioning session per binding", ""]
    if provenance is not None:
        lines += [f"Generated by {provenance.line()}", ""]
    lines.append(
        "Counted on loopback by relays between Broker and TAM (UDP / TCP payload bytes; IP, UDP and TCP "
        "headers excluded). Method and layer definitions: docs/sizes.md."
    )
    lines.append("")
    for size in sizes:
        lines.append(f"## Trusted Component payload {size} B")
        lines.append("")
        lines.append("| profile | " + " | ".join(LAYERS) + " | total | units | round trips | ms |")
        lines.append("|---|" + "---:|" * (len(LAYERS) + 4))
        for profile, values in _layer_table(report, size):
            s = next(x for x in report.sessions if x.profile == profile and x.payload_size == size)
            cells = " | ".join(str(values.get(layer, 0)) for layer in LAYERS)
            lines.append(
                f"| {profile} | {cells} | {s.wire_bytes} | {s.units} {s.unit_name} | {s.round_trips} | "
                f"{s.seconds * 1000:.1f} |"
            )
        lines.append("")
    if sizes:
        size = sizes[0]
        lines.append(f"## Per message at {size} B (bytes on the wire, all layers)")
        lines.append("")
        for s in report.sessions:
            if s.payload_size != size:
                continue
            parts = []
            for name in [*s.messages, "handshake", "teardown"]:
                total = sum(
                    r.bytes
                    for r in report.records
                    if r.profile == s.profile and r.payload_size == size and r.message == name
                )
                parts.append(f"{name} {total}")
            lines.append(f"- **{s.profile}**: " + ", ".join(parts))
        lines.append("")
    if report.failures:
        lines.append("## Runs that failed")
        lines.append("")
        lines.extend(f"- {f}" for f in report.failures)
        lines.append("")
    return "\n".join(lines)


MARKERS = ("o", "s", "^", "v", "D", "P", "X", "*", "<", ">", "h", "p", "d", "8", "H", "+", "x", "1", "2", "3")
LINESTYLES = ("-", "--", "-.", ":")


def profile_styles(names: Sequence[str]) -> dict[str, tuple[Any, str, str]]:
    """(colour, marker, line style) per profile, all different up to 20 profiles (tab20 colours and 20
    markers), so each line can be told apart in colour and in shape, also in print."""

    palette = matplotlib.colormaps["tab20"]  # 20 listed colours; an int picks the i-th
    return {
        name: (palette(i % 20), MARKERS[i % len(MARKERS)], LINESTYLES[i % len(LINESTYLES)])
        for i, name in enumerate(sorted(names))
    }


def write_charts(report: SizesReport, out: Path, provenance: Provenance | None = None) -> list[Path]:
    """Stacked bars of bytes per layer per binding (one panel per payload size) and bytes vs size.

    The bytes-vs-size chart needs at least two payload sizes: a line from one point says nothing, so
    with one size it is not drawn. Every figure carries the provenance line and PNG metadata."""

    matplotlib.use("Agg")

    written: list[Path] = []
    sizes = sorted({s.payload_size for s in report.sessions})
    if not sizes:
        return written
    metadata = {"Software": f"teep-coap {provenance.version}"} if provenance else {}
    if provenance is not None:
        metadata |= {"Creation Time": provenance.date, "Description": provenance.command}

    def save(fig: Any, path: Path) -> None:
        if provenance is not None:
            fig.text(0.01, 0.005, provenance.line(), fontsize=6, color="#555555", va="bottom")
        fig.savefig(path, dpi=110, metadata=metadata)
        plt.close(fig)
        written.append(path)

    colors = {
        "message": "#4c72b0",
        "signature": "#55a868",
        "framing": "#c44e52",
        "security": "#8172b2",
        "handshake": "#ccb974",
    }
    for filename, layers, ylabel in (
        ("sizes-layers.png", LAYERS, "bytes per session"),
        ("sizes-overhead.png", LAYERS[1:], "bytes per session on top of the bare messages"),
    ):
        fig, axes = plt.subplots(1, len(sizes), figsize=(4.5 * len(sizes), 5.3), squeeze=False)
        for ax, size in zip(axes[0], sizes, strict=True):
            table = _layer_table(report, size)
            names = [p for p, _ in table]
            bottom = [0] * len(names)
            for layer in layers:
                vals = [max(0, v.get(layer, 0)) for _, v in table]
                ax.bar(names, vals, bottom=bottom, label=layer, color=colors[layer])
                bottom = [b + v for b, v in zip(bottom, vals, strict=True)]
            ax.set_title(f"payload {size} B")
            ax.set_ylabel(ylabel)
            ax.tick_params(axis="x", rotation=60, labelsize=8)
        axes[0][0].legend(fontsize=8)
        fig.tight_layout(rect=(0, 0.03, 1, 1))
        save(fig, out / filename)

    if len(sizes) < 2:
        return written
    fig, ax = plt.subplots(figsize=(8, 5.5))
    profiles = sorted({s.profile for s in report.sessions})
    styles = profile_styles(profiles)
    for profile in profiles:
        pts = sorted((s.payload_size, s.wire_bytes) for s in report.sessions if s.profile == profile)
        if len(pts) < 2:
            continue  # its other runs failed (listed in the report); one point is no line
        color, marker, linestyle = styles[profile]
        xs, ys = [p[0] for p in pts], [p[1] for p in pts]
        ax.plot(xs, ys, marker=marker, linestyle=linestyle, color=color, label=profile)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("Trusted Component payload (bytes)")
    ax.set_ylabel("bytes on the wire per session")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    save(fig, out / "sizes-vs-payload.png")
    return written


def write_outputs(report: SizesReport, out: Path, provenance: Provenance | None = None) -> list[Path]:
    """sizes.md/.csv/.json and the charts; each names the version, date and command (`provenance`,
    default: this process)."""
    provenance = provenance or Provenance.now()
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / "sizes.md", out / "sizes.csv", out / "sizes.json"]
    paths[0].write_text(report_markdown(report, provenance), encoding="utf-8")
    paths[1].write_text(records_csv(report, provenance), encoding="utf-8")
    paths[2].write_text(report_json(report, provenance), encoding="utf-8")
    return paths + write_charts(report, out, provenance)


def run(
    profiles: Sequence[Profile],
    payload_sizes: Sequence[int],
    **kwargs: Any,
) -> SizesReport:
    """Synchronous entry point (the CLI)."""
    return asyncio.run(measure(profiles, payload_sizes, **kwargs))
