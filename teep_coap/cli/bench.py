"""Every `teep-coap bench` command, in one place: codec, crypto, engine, sessions, compare, sizes,
gateway, hostile, dtls-burst, idle-cost, coap-stack. Each measures with the modules of `teep_coap.bench`
and prints a report (or JSON). Imports at module level: this module is imported only for a `bench`
command (cli/groups.py).
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from teep_coap.bench import sizes as bs
from teep_coap.bench.coap_stack import format_stack_comparison, run_coap_stack
from teep_coap.bench.codec import print_table, run_codec_bench
from teep_coap.bench.compare import format_comparison, parse_setup, run_compare
from teep_coap.bench.crypto import format_table, run
from teep_coap.bench.dtls_burst import format_burst, run_burst
from teep_coap.bench.engine import measure_engine
from teep_coap.bench.fleet import DEVICE_CLIENTS
from teep_coap.bench.gateway import (
    cache_chart,
    format_cache_points,
    format_gateway_result,
    run_cache_bench,
    run_gateway_bench,
)
from teep_coap.bench.hostile import format_hostile, run_hostile
from teep_coap.bench.idle import (
    DEFAULT_GAPS_MS,
    MAX_GAP_MS,
    IdleCostError,
    format_idle_cost,
    measure_idle_cost,
    parse_gaps,
)
from teep_coap.bench.repeat import format_repeated, run_repeated
from teep_coap.bench.sessions import BenchResult, busy_percent, format_result, run_bench
from teep_coap.cli.groups import bench
from teep_coap.profiles import list_profiles, load_profile
from teep_coap.profiles.event_loop import EVENT_LOOPS


@bench.command("hostile")
@click.option(
    "--count",
    type=click.IntRange(1, 100_000),
    default=5000,
    show_default=True,
    help="Junk sequences sent per class (10 classes against `coap-no-echo`, 3 against `coap`; from 50 "
    "source ports on 127.0.0.1).",
)
@click.option(
    "--worst-size",
    type=click.IntRange(0, 1_048_000),
    default=1_040_000,
    show_default=True,
    help="Bytes of each costly CBOR body sent block-wise to measure TAM CPU per KiB (0: skip).",
)
@click.option(
    "--dtls-burst",
    "dtls_handshakes",
    type=click.IntRange(0, 1000),
    default=200,
    show_default=True,
    help="Simultaneous coaps-psk sessions (DTLS handshakes) against a second TAM (0: skip).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the figures as JSON.")
def bench_hostile(count: int, worst_size: int, dtls_handshakes: int, as_json: bool) -> None:
    """A TAM (`tam serve --profile coap-no-echo`, own process) against junk datagrams and costly CBOR.

    Prints per junk class the datagrams tried, answered right and wrong, whether a real TEEP session
    still completes afterwards, and the TAM's memory; then the TAM CPU per KiB for the worst inputs,
    the amplification factor of an unauthenticated request, the log bytes the run added (and any
    traceback), and how many of a burst of simultaneous DTLS handshakes complete. Loopback only.
    """

    result = run_hostile(count=count, worst_size=worst_size, dtls_handshakes=dtls_handshakes)
    click.echo(json.dumps(result.to_json(), indent=2) if as_json else format_hostile(result))


def _int_list(text: str) -> list[int]:
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise click.BadParameter(f"expected comma-separated integers, got {text!r}") from None
    if not values or any(v < 0 or v > 16 * 1024 * 1024 for v in values):
        raise click.BadParameter("payload sizes must be 0..16777216 bytes")
    return values


RATE_HELP = (
    "Start at most this many sessions per second (still at most --concurrency at once): the TAM's CPU "
    "per session depends on how many requests share a commit, so compare set-ups at the same "
    "offered load with it. Default: as fast as the simulated devices go."
)

DEVICE_PROCESSES_HELP = (
    "Simulate the devices in this many processes, each with its share of --concurrency (one process "
    "keeps one core busy at about what one TAM worker serves: more for a TAM with several workers "
    "on a machine with the cores for it). Their CPU is summed."
)

REPEAT_HELP = (
    "Run the same set-up this many times back to back (each with its own world and TAM) and report "
    "every run and the median, lowest and highest of each figure: a target is then read as the "
    "median of N runs, with the spread of the machine's minutes beside it."
)

DEVICE_CLIENT_HELP = (
    "What the simulated devices talk through. lean: coaps-psk devices use the bench's own light DTLS "
    "client (a third less CPU per device session, so on a small machine the devices do not set the "
    "TAM's pace), other profiles the Broker's client; broker: every device uses the Broker's own "
    "client (aiocoap), to measure what a real Broker's stack costs."
)

PIN_HELP = (
    "Run the TAM's worker(s) on CPUs of their own and the simulated devices on the others (needs more "
    "CPUs than --tam-workers), so the devices' load cannot preempt the TAM and inflate its CPU per "
    "session; a throwaway PostgreSQL is not pinned."
)


@bench.command("sessions")
@click.option("--profile", "profile_name", default="coaps-psk", show_default=True)
@click.option("--devices", type=click.IntRange(1, 100_000), default=100, show_default=True)
@click.option("--concurrency", type=click.IntRange(1, 1024), default=16, show_default=True)
@click.option(
    "--sessions", "n_sessions", type=click.IntRange(1, 1_000_000), default=None, help="Default: devices."
)
@click.option("--image-size", type=click.IntRange(0, 1 << 20), default=1024, show_default=True)
@click.option(
    "--tam-workers",
    type=click.IntRange(1, 64),
    default=1,
    show_default=True,
    help="`tam serve --workers N` (TEEP profiles, CoAP or HTTP(S); N>1 needs --db).",
)
@click.option(
    "--db",
    default=None,
    help="TAM database: an SQLAlchemy URL, or 'postgres' for a throwaway PostgreSQL server on this "
    "host (over its Unix socket). Default: SQLite.",
)
@click.option("--pin", is_flag=True, help=PIN_HELP)
@click.option("--rate", type=click.FloatRange(0.1, 100_000), default=None, help=RATE_HELP)
@click.option(
    "--device-processes", type=click.IntRange(1, 64), default=1, show_default=True, help=DEVICE_PROCESSES_HELP
)
@click.option(
    "--device-client",
    type=click.Choice(DEVICE_CLIENTS),
    default="lean",
    show_default=True,
    help=DEVICE_CLIENT_HELP,
)
@click.option(
    "--tam-loop",
    type=click.Choice(EVENT_LOOPS),
    default="auto",
    show_default=True,
    help="The TAM's event loop (`tam serve --loop`).",
)
@click.option("--repeat", type=click.IntRange(1, 50), default=1, show_default=True, help=REPEAT_HELP)
@click.option("--json", "as_json", is_flag=True)
def bench_sessions(
    profile_name: str,
    devices: int,
    concurrency: int,
    n_sessions: int | None,
    image_size: int,
    tam_workers: int,
    db: str | None,
    pin: bool,
    rate: float | None,
    device_processes: int,
    device_client: str,
    tam_loop: str,
    repeat: int,
    as_json: bool,
) -> None:
    """Full TEEP sessions/s and p50/p99 latency, TAM in its own process (`tam serve`), on loopback.

    Reports TAM CPU per session summed over its workers, each worker's peak RSS, and the simulated
    devices' CPU per session separately."""

    def once() -> BenchResult:
        options: dict[str, Any] = dict(
            devices=devices,
            concurrency=concurrency,
            sessions=n_sessions,
            image_size=image_size,
            tam_workers=tam_workers,
            db=db,
            pin=pin,
            rate=rate,
            device_processes=device_processes,
            device_client=device_client,
            tam_loop=tam_loop,
        )
        if not sys.stderr.isatty():
            return run_bench(profile_name, **options)
        # a progress bar on the terminal (stderr, so --json on stdout stays clean)
        with Progress(
            TextColumn(f"{profile_name} sessions"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[failed]} failed"),
            TimeElapsedColumn(),
            console=Console(stderr=True),
            transient=True,
        ) as bar:
            task = bar.add_task("sessions", total=n_sessions or devices, failed=0)

            def show(done: int, failed: int, total: int) -> None:
                bar.update(task, completed=done + failed, total=total, failed=failed)

            return run_bench(profile_name, progress=show, **options)

    if repeat == 1:
        result = once()
        click.echo(json.dumps(result.to_json(), indent=2) if as_json else format_result(result))
        return
    repeated = run_repeated(repeat, once)
    click.echo(json.dumps(repeated.to_json(), indent=2) if as_json else format_repeated(repeated))


@bench.command("compare")
@click.option(
    "--a",
    "spec_a",
    required=True,
    help="Set-up A: profile=NAME[,tam-workers=N][,db=URL|postgres][,image-size=BYTES]"
    "[,device-client=lean|broker][,tam-loop=auto|uvloop|asyncio] (--device-client and --tam-loop "
    "of bench sessions).",
)
@click.option("--b", "spec_b", required=True, help="Set-up B, in the same form; the ratio is B / A.")
@click.option("--rounds", type=click.IntRange(1, 50), default=3, show_default=True, help="Runs of each side.")
@click.option("--devices", type=click.IntRange(1, 100_000), default=1000, show_default=True)
@click.option("--concurrency", type=click.IntRange(1, 1024), default=32, show_default=True)
@click.option(
    "--sessions",
    "n_sessions",
    type=click.IntRange(1, 1_000_000),
    default=None,
    help="Per run. Default: devices.",
)
@click.option("--pin", is_flag=True, help=PIN_HELP + " Both sides alike.")
@click.option(
    "--rate", type=click.FloatRange(0.1, 100_000), default=None, help=RATE_HELP + " Both sides alike."
)
@click.option(
    "--same-load",
    is_flag=True,
    help="Offer both sides the same load without guessing a --rate: one run of each at its own pace "
    "first (reported, not in the means), then every round at 90 % of the slower side's sessions "
    "per second. What a TAM's CPU per session costs depends on its load; this compares the paths.",
)
@click.option(
    "--device-processes",
    type=click.IntRange(1, 64),
    default=1,
    show_default=True,
    help=DEVICE_PROCESSES_HELP + " Both sides alike.",
)
@click.option("--json", "as_json", is_flag=True)
def bench_compare(
    spec_a: str,
    spec_b: str,
    rounds: int,
    devices: int,
    concurrency: int,
    n_sessions: int | None,
    pin: bool,
    rate: float | None,
    same_load: bool,
    device_processes: int,
    as_json: bool,
) -> None:
    """Two `bench sessions` set-ups run in turns (A B, B A, ...) and the ratio of their TAM CPU per
    session, each round's and the means'.

    For ratios on a machine whose speed drifts: both sides meet the same drift. Example, the CoAP
    path against the HTTP path: --a profile=teep-cbor-http --b profile=coap; two PostgreSQL workers
    against one SQLite worker: --a profile=coaps-psk --b profile=coaps-psk,tam-workers=2,db=postgres.
    """

    a, b = parse_setup(spec_a), parse_setup(spec_b)
    if same_load and rate is not None:
        raise click.UsageError("--same-load finds the rate itself: give --rate or --same-load, not both")

    def show(side: str, result: BenchResult) -> None:
        j = result.to_json()
        click.echo(
            f"{side.upper()} {result.profile}: {j['tam_cpu_ms_per_session']} ms/session (engine calls"
            f" {j['tam_engine_cpu_ms_per_session']}, {j['tam_requests_per_commit']} requests per call),"
            f" {j['sessions_per_second']} sessions/s, TAM busy {busy_percent(j['tam_busy_share_per_worker'])}"
            f" of a core per worker, {j['failed']} failed, load {j['load_average_at_start']}",
            err=True,
        )

    comparison = run_compare(
        a, b, rounds=rounds, devices=devices, concurrency=concurrency, sessions=n_sessions, pin=pin,
        on_run=show, rate=rate, same_load=same_load, device_processes=device_processes,
    )  # fmt: skip
    click.echo(json.dumps(comparison.to_json(), indent=2) if as_json else format_comparison(comparison))


@bench.command("dtls-burst")
@click.option("--profile", "profile_name", default="coaps-psk", show_default=True)
@click.option("--clients", type=click.IntRange(1, 1000), default=200, show_default=True)
@click.option(
    "--bound",
    type=click.FloatRange(10, 1800),
    default=180.0,
    show_default=True,
    help="Seconds for the whole run.",
)
@click.option("--timeout", type=click.FloatRange(0.1, 3600), default=None, help="`agent run --timeout`.")
@click.option("--json", "as_json", is_flag=True)
def bench_dtls_burst(
    profile_name: str, clients: int, bound: float, timeout: float | None, as_json: bool
) -> None:
    """N `teep-coap agent run` processes started at once against one `tam serve`, on loopback.

    Counts the clients that finish their install within --bound seconds (the rest are killed) and
    the devices the TAM recorded a successful session for.
    """

    result = run_burst(profile_name, clients=clients, bound=bound, timeout=timeout)
    click.echo(json.dumps(result.to_json(), indent=2) if as_json else format_burst(result))


@bench.command("coap-stack")
@click.option("--sessions", type=click.IntRange(1, 100000), default=3000, show_default=True, help="Per run.")
@click.option(
    "--exchanges",
    type=click.IntRange(1, 16),
    default=4,
    show_default=True,
    help="POSTs per session (a TEEP install session makes four).",
)
@click.option("--rounds", type=click.IntRange(1, 20), default=2, show_default=True, help="Runs per server.")
@click.option("--concurrency", type=click.IntRange(1, 1024), default=32, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the figures as JSON.")
def bench_coap_stack(sessions: int, exchanges: int, rounds: int, concurrency: int, as_json: bool) -> None:
    """Server CPU per device session of our CoAP + DTLS stack (`tam serve --profile coaps-psk`,
    without its engine) next to libcoap's C server (coap-server-openssl), in turns, on loopback.

    Each session: a DTLS-PSK handshake, --exchanges POSTs that are not TEEP messages (both servers
    answer them with an error code), close_notify. Needs libcoap3-bin (`bash scripts/setup.sh
    full`). What a CoAP/DTLS stack in C would save the TAM: docs/scale.md."""

    result = run_coap_stack(sessions=sessions, exchanges=exchanges, rounds=rounds, concurrency=concurrency)
    click.echo(json.dumps(result.to_json(), indent=2) if as_json else format_stack_comparison(result))


@bench.command("codec")
@click.option("--seconds", type=float, default=0.5, show_default=True, help="Time per measurement.")
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
def bench_codec_cmd(seconds: float, as_json: bool) -> None:
    """Encode/decode rates per message type next to raw cbor2 on the same structures."""

    results = run_codec_bench(seconds=seconds)
    if as_json:
        click.echo(json.dumps([r.as_dict() for r in results], indent=2))
    else:
        print_table(results)


@bench.command("gateway")
@click.option(
    "--profile", "profile_name", default="coaps-psk", show_default=True, help="Device-side profile."
)
@click.option("--devices", type=click.IntRange(1, 100_000), default=100, show_default=True)
@click.option("--concurrency", type=click.IntRange(1, 1024), default=32, show_default=True)
@click.option(
    "--image-size", type=click.IntRange(0, 1 << 20), default=None, help="Default 1024 (65536 with --cache)."
)
@click.option(
    "--cache",
    "cache_counts",
    default=None,
    help="Instead: upstream bytes for these device counts (e.g. 1,10,100) installing one URI-named "
    "component, with and without the gateway's cache.",
)
@click.option(
    "--out", "out_dir", default=None, type=click.Path(file_okay=False), help="--cache: write JSON and PNG."
)
@click.option("--json", "as_json", is_flag=True)
def bench_gateway(
    profile_name: str,
    devices: int,
    concurrency: int,
    image_size: int | None,
    cache_counts: str | None,
    out_dir: str | None,
    as_json: bool,
) -> None:
    """N devices through one gateway process to one TAM process (HTTP): sessions/s, gateway CPU and RSS.

    With --cache 1,10,100: the image bytes fetched upstream when that many devices install the same
    component named by URI, with and without the gateway's component cache.
    """
    if cache_counts is not None:
        try:
            counts = tuple(int(c) for c in cache_counts.split(",") if c.strip())
        except ValueError:
            raise click.BadParameter(f"expected numbers like 1,10,100, got {cache_counts!r}") from None
        if not counts or min(counts) < 1:
            raise click.BadParameter(f"expected positive numbers like 1,10,100, got {cache_counts!r}")
        points = run_cache_bench(
            counts, image_size=image_size or 65536, profile_name=profile_name, concurrency=min(concurrency, 8)
        )
        data = [p.to_json() for p in points]
        if out_dir is not None:
            out = Path(out_dir)
            out.mkdir(parents=True, exist_ok=True)
            (out / "gateway-cache.json").write_text(json.dumps(data, indent=2) + "\n")
            cache_chart(points, out / "gateway-cache.png")
        click.echo(json.dumps(data, indent=2) if as_json else format_cache_points(points))
        return

    result = run_gateway_bench(
        profile_name, devices=devices, concurrency=concurrency, image_size=image_size or 1024
    )
    click.echo(json.dumps(result.to_json(), indent=2) if as_json else format_gateway_result(result))


@bench.command("sizes")
@click.option(
    "--profiles",
    "profile_names",
    default="",
    help="Comma-separated profile names or TOML paths (default: every shipped profile).",
)
@click.option(
    "--payload-sizes",
    default="20,1024,16384,65536",
    show_default=True,
    help="Comma-separated Trusted Component payload sizes in bytes.",
)
@click.option(
    "--out", type=click.Path(file_okay=False, path_type=Path), default=None, help="Write reports here."
)
@click.option(
    "--repeat",
    default=1,
    show_default=True,
    type=click.IntRange(1, 20),
    help="Runs per point (wall time = median).",
)
@click.option("--fail-fast", is_flag=True, help="Stop at the first run that fails instead of reporting it.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON (the sizes.json content).")
def bench_sizes(
    profile_names: str, payload_sizes: str, out: Path | None, repeat: int, fail_fast: bool, as_json: bool
) -> None:
    """Run one provisioning session over each profile and count its bytes per message and layer.

    Layers: bare message, signature, transport framing, security records, handshake. Bytes are counted
    by relays on loopback; docs/sizes.md explains how each layer is measured.
    """

    # aiocoap warns about a DTLS close_notify alert (level 1, code 0) and about late datagrams after a
    # measured session's server shut down: expected at teardown, noise in a report.
    for name in ("coap-server", "coap"):
        logging.getLogger(name).setLevel(logging.ERROR)
    sizes_list = _int_list(payload_sizes)
    if profile_names.strip():
        profiles = [load_profile(n.strip()) for n in profile_names.split(",") if n.strip()]
    else:
        profiles = list_profiles()
    console = Console(stderr=True)
    total = len(profiles) * len(sizes_list)
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as progress:
        task = progress.add_task("sizes", total=total)
        started = [False]

        def step(label: str) -> None:
            if started[0]:
                progress.advance(task)
            started[0] = True
            progress.update(task, description=label)

        report = bs.run(profiles, sizes_list, repeat=repeat, progress=step, keep_going=not fail_fast)
        progress.advance(task)

    table = Table(title="bytes per session (counted on loopback)")
    for column in ("profile", "payload", *bs.LAYERS, "total", "units", "RTs", "ms"):
        table.add_column(column, justify="left" if column == "profile" else "right")
    for s in report.sessions:
        values = {
            r.layer: r.bytes
            for r in report.records
            if r.profile == s.profile and r.payload_size == s.payload_size and r.message == bs.SESSION
        }
        table.add_row(
            s.profile,
            str(s.payload_size),
            *(str(values.get(layer, 0)) for layer in bs.LAYERS),
            str(s.wire_bytes),
            f"{s.units} {s.unit_name}",
            str(s.round_trips),
            f"{s.seconds * 1000:.0f}",
        )
    if as_json:
        click.echo(bs.report_json(report, bs.Provenance.now()))
    else:
        out_console = Console()
        out_console.width = max(out_console.width, 150)
        out_console.print(table)
    for failure in report.failures:
        console.print(f"[red]failed:[/red] {failure}")
    if out is not None:
        for path in bs.write_outputs(report, out):
            click.echo(str(path), err=as_json)
    if report.failures and not report.sessions:
        raise click.ClickException("every run failed")


@bench.command("crypto")
@click.option("--seconds", type=float, default=1.0, show_default=True, help="Time per measurement.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON rows instead of a table.")
@click.option("--payload-size", type=int, default=None, help="Payload bytes (default: the WG QueryRequest).")
def bench_crypto_cmd(seconds: float, as_json: bool, payload_size: int | None) -> None:
    """COSE_Sign1 sign/verify rates (ESP256, Ed25519) next to raw `cryptography`, and the ratio."""

    if seconds <= 0 or seconds > 60:
        raise click.BadParameter("must be in (0, 60]", param_hint="--seconds")
    rows = run(seconds=seconds, payload_size=payload_size)
    if as_json:
        click.echo(json.dumps([r.as_dict() for r in rows], indent=2))
    else:
        click.echo(format_table(rows))


@bench.command("idle-cost")
@click.option(
    "--gaps",
    default=",".join(f"{g:g}" for g in DEFAULT_GAPS_MS),
    show_default=True,
    help=f"Milliseconds of sleep before each unit, comma-separated (0 to {MAX_GAP_MS:g}); the first is the"
    " reference of the ratios.",
)
@click.option(
    "--units", type=click.IntRange(1, 100000), default=300, show_default=True, help="Per gap and round."
)
@click.option("--rounds", type=click.IntRange(1, 50), default=3, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the figures as JSON.")
def bench_idle_cost(gaps: str, units: int, rounds: int, as_json: bool) -> None:
    """CPU time of the same unit of TAM-like work run back to back and after idle gaps: what idling
    costs on this machine, apart from any TEEP code path.

    A TAM's CPU per session rises as its load falls; on a virtual machine much of that is the CPU
    waking cold after the process slept. Run this next to `bench sessions` to tell the machine's part
    from the code's (docs/scale.md)."""

    try:
        result = measure_idle_cost(parse_gaps(gaps), units=units, rounds=rounds)
    except IdleCostError as exc:
        raise click.BadParameter(str(exc), param_hint="--gaps") from None
    click.echo(json.dumps(result.to_json(), indent=2) if as_json else format_idle_cost(result))


@bench.command("engine")
@click.option("--sessions", type=click.IntRange(1, 10000), default=50, show_default=True)
@click.option("--image-size", type=click.IntRange(0, 1 << 20), default=1024, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the figures as JSON.")
def bench_engine(sessions: int, image_size: int, as_json: bool) -> None:
    """Complete in-memory install sessions per second (TAM + Agent engines, real signatures, SQLite)
    and where the time goes (crypto, database, fsync, the rest)."""

    result = measure_engine(sessions, image_size=image_size, progress=lambda m: click.echo(m, err=True))
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=2))
        return

    table = Table(title=f"TEEP engines: {sessions} install sessions, {image_size}-byte Trusted Component")
    table.add_column("figure")
    table.add_column("value", justify="right")
    table.add_row("sessions/s (wall clock, no profiler)", f"{result.sessions_per_s:.1f}")
    table.add_row("messages per session", f"{result.messages_per_session:.0f}")
    for name, size in result.message_sizes.items():
        table.add_row(f"  {name} bytes", str(size))
    table.add_row(
        "signatures / verifications per session",
        f"{result.signatures_per_session:.0f} / {result.verifications_per_session:.0f}",
    )
    table.add_row("share: crypto (cryptography package)", f"{result.crypto_share:.1%}")
    table.add_row("share: fsync (component store, SQLite WAL)", f"{result.fsync_share:.1%}")
    table.add_row("share: sqlite3 calls", f"{result.database_share:.1%}")
    table.add_row("share: everything else (CBOR, COSE, engines, SQLAlchemy)", f"{result.other_share:.1%}")
    table.add_row("share: TAM engine / Agent engine", f"{result.tam_share:.1%} / {result.agent_share:.1%}")
    Console().print(table)
    click.echo("(shares from a second, cProfile'd run; the profiler inflates pure-Python parts)")
