"""`teep-coap profiles`, `teep-coap tam serve`, `teep-coap tam credentials`, `teep-coap agent run`,
`teep-coap bench sessions`: the programs of the CoAP binding (and of any profile's binding).

Heavy imports stay inside the commands so `--help` stays fast.
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import sys
from typing import TYPE_CHECKING

import click

from teep_coap.cli.groups import agent, bench, json_is_default, root, tam

if TYPE_CHECKING:
    from pathlib import Path

    from teep_coap.profiles.schema import Profile
    from teep_coap.transport.coap.credentials import DeviceCredentials


def _setup_logging(verbose: int, quiet: bool) -> None:
    level = logging.WARNING if quiet else logging.INFO
    logging.basicConfig(
        level=logging.DEBUG if verbose > 1 else level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # aiocoap reports every retransmission and shutdown detail at WARNING; keep them for -v.
    logging.getLogger("coap").setLevel(
        logging.DEBUG if verbose > 1 else logging.WARNING if verbose else logging.ERROR
    )
    logging.getLogger("coap-server").setLevel(logging.getLogger("coap").level)


def _parse_bind(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise click.BadParameter(f"expected HOST:PORT, got {text!r}")
    host = host.strip("[]")
    if int(port) > 65535:
        raise click.BadParameter(f"port out of range: {port}")
    return host, int(port)


@root.command("profiles")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
def profiles_cmd(as_json: bool) -> None:
    """List the profiles (protocol × encoding × transport × security) that --profile NAME finds."""
    from teep_coap.profiles import list_profiles

    profiles = list_profiles()
    if as_json:
        click.echo(
            json.dumps(
                [
                    {
                        "name": p.name,
                        "protocol": p.protocol,
                        "encoding": p.encoding,
                        "scheme": p.transport.scheme,
                        "security": p.security.mode,
                        "block_size": p.transport.block_size,
                        "content_format": p.transport.content_format,
                        "description": p.description,
                    }
                    for p in profiles
                ],
                indent=2,
            )
        )
        return
    click.echo(
        f"{'profile':<20} {'protocol':<8} {'enc':<5} {'scheme':<12} {'security':<9} {'block':>5}  description"
    )
    for p in profiles:
        block = str(p.transport.block_size) if p.transport.is_coap else "-"
        click.echo(
            f"{p.name:<20} {p.protocol:<8} {p.encoding:<5} {p.transport.scheme:<12} {p.security.mode:<9} "
            f"{block:>5}  {p.description}"
        )


@tam.command("credentials")
@json_is_default
@click.option("--dir", "tam_dir", required=True, type=click.Path(file_okay=False), help="TAM folder.")
@click.option("--name", required=True, help="Device name (also its DTLS PSK identity unless --psk-identity).")
@click.option("--psk-identity", default=None, help="DTLS PSK identity (default: the name).")
@click.option(
    "--agent-state",
    default=None,
    type=click.Path(file_okay=False),
    help="Also write the Agent's side (transport.toml, oscore/) into this Agent folder.",
)
def tam_credentials(tam_dir: str, name: str, psk_identity: str | None, agent_state: str | None) -> None:
    """Create a device's DTLS PSK and OSCORE context (TAMDIR/credentials.toml, oscore/NAME)."""
    from teep_coap.transport.coap.credentials import provision_device

    d = provision_device(tam_dir, agent_state, name, psk_identity=psk_identity)
    click.echo(
        json.dumps(
            {
                "name": d.name,
                "psk_identity": d.psk_identity,
                "oscore_dir": str(d.oscore_dir),
                "agent_state": agent_state,
            },
            indent=2,
        )
    )


async def _serve(
    profile_name: str,
    tam_dir: str,
    db: str | None,
    policy: str | None,
    bind: tuple[str, int],
    certs: str | None = None,
    banner: str | None = None,
    pcap: str | None = None,
) -> None:
    """Serve any profile: TEEP (CBOR/COSE or JSON/JWS, by the profile's encoding) or OTrP.

    With `pcap`, the server listens on a free port of the same host and a capturing relay on `bind`."""
    import contextlib

    from teep_coap.profiles import load_profile
    from teep_coap.profiles.runtime import open_tam
    from teep_coap.profiles.stack import make_server

    profile = load_profile(profile_name)
    if pcap is not None and profile.security.mode == "tls":
        from teep_coap.profiles.capture import log_tls_keys

        log_tls_keys(pcap)  # this process is one TAM or one Agent run: its TLS keys to PCAP.keylog
    service = open_tam(profile, tam_dir, db=db, policy=policy, certs=certs)
    try:
        server = make_server(
            profile,
            service.handler,
            host=bind[0],
            port=0 if pcap else bind[1],
            tam_dir=service.credentials_dir,
            certs_path=service.certs_path,
        )
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        bound = await server.start()
        watch = _watch_credentials(server, service.credentials_dir, loop)
        try:
            uri = getattr(server, "uri", None)
            port = bound if isinstance(bound, int) else getattr(server, "port", bind[1])
            if not uri:
                uri = f"{profile.transport.scheme}://{bind[0]}:{port}{profile.transport.path}"
            capture = contextlib.AsyncExitStack()
            if pcap is not None:
                from teep_coap.profiles.capture import capturing_relay, relayed_uri
                from teep_coap.transport.pcap import PcapWriter

                writer = PcapWriter(pcap)
                capture.callback(writer.close)
                rport = await capture.enter_async_context(
                    capturing_relay(profile, (bind[0], int(port)), writer, listen=bind)
                )
                uri = relayed_uri(uri, rport)
                _write_serve_psk(profile, service.credentials_dir, pcap)
            # `otrp serve` keeps its historical first line (the URI is its last word)
            click.echo(f"{banner} {uri}" if banner else f"TAM serving {uri} (profile {profile.name})")
            sys.stdout.flush()
            async with capture:
                await stop.wait()
        finally:
            if watch is not None:
                watch.cancel()
            closer = getattr(server, "close", None) or server.stop
            await closer()
    finally:
        service.close()
        done, failed = service.counts()
        logging.getLogger("teep_coap.session").info("TAM stopped: %d sessions done, %d failed", done, failed)


def _write_serve_psk(profile: Profile, credentials_dir: Path, pcap: str) -> None:
    """FILE.psk for a DTLS TAM: Wireshark takes one PSK, so only when one device has credentials."""
    if profile.security.mode != "dtls-psk":
        return
    from teep_coap.profiles.capture import write_psk_file
    from teep_coap.transport.coap.credentials import load_tam_credentials

    devices = load_tam_credentials(credentials_dir)
    if len(devices) == 1:
        write_psk_file(pcap, devices[0].psk)
    else:
        logging.getLogger("teep_coap.capture").warning(
            "%s.psk not written: %d devices have PSKs and Wireshark takes one (psk_hex in credentials.toml)",
            pcap,
            len(devices),
        )


def _watch_credentials(
    server: object, tam_dir: object, loop: asyncio.AbstractEventLoop
) -> asyncio.Task[None] | None:
    """CoAP servers re-read credentials.toml when it changes and on SIGHUP (no restart needed)."""
    if not hasattr(server, "update_devices") or tam_dir is None:
        return None
    from teep_coap.transport.coap.credentials_watch import CredentialsWatcher

    watcher = CredentialsWatcher(server, tam_dir)  # type: ignore[arg-type]
    loop.add_signal_handler(signal.SIGHUP, lambda: watcher.check(force=True))
    return asyncio.create_task(watcher.run(), name="credentials.toml watcher")


@tam.command("serve")
@click.option(
    "--profile", "profile_name", required=True, help="Profile name or .toml path (teep-coap profiles)."
)
@click.option(
    "--dir", "tam_dir", required=True, type=click.Path(exists=True, file_okay=False), help="TAM folder."
)
@click.option("--db", default=None, help="SQLAlchemy URL overriding the folder's database.")
@click.option(
    "--policy", default=None, type=click.Path(exists=True, dir_okay=False), help="Policy TOML file."
)
@click.option("--bind", default="127.0.0.1:0", show_default=True, help="HOST:PORT (port 0 = any free port).")
@click.option("--certs", default=None, type=click.Path(file_okay=False), help="HTTPS: certificate folder.")
@click.option(
    "--pcap",
    type=click.Path(dir_okay=False, writable=True),
    default=None,
    help="Write every datagram / TCP segment to this pcap (DTLS: the PSK to FILE.psk; HTTPS: TLS "
    "secrets to FILE.keylog). Loopback only.",
)
@click.option(
    "--workers",
    type=click.IntRange(1, 64),
    default=1,
    show_default=True,
    help="Processes sharing the address (SO_REUSEPORT; CoAP profiles; N>1 needs a PostgreSQL --db).",
)
@click.option("-v", "--verbose", count=True, help="More logging (-vv: aiocoap debug).")
@click.option("-q", "--quiet", is_flag=True, help="No per-session log lines.")
def tam_serve(
    profile_name: str,
    tam_dir: str,
    db: str | None,
    policy: str | None,
    bind: str,
    certs: str | None,
    pcap: str | None,
    workers: int,
    verbose: int,
    quiet: bool,
) -> None:
    """Serve the TAM over any profile's binding until SIGINT/SIGTERM; one log line per session.

    TEEP profiles (cbor or json; coap, coaps, coap+oscore, http, https) serve the `tam init` folder
    DIR with the profile's wire (CBOR/COSE or JSON/JWS); OTrP profiles serve an `otrp init` folder.
    The first line on stdout names the URI (useful with port 0).
    With --workers N, N processes serve the same UDP address (SO_REUSEPORT) and share a PostgreSQL --db.
    """
    _setup_logging(verbose, quiet)
    if workers > 1:
        from teep_coap.cli.workers import serve_workers
        from teep_coap.profiles.workers import WorkersError

        if pcap is not None or certs is not None:
            raise WorkersError("--workers N>1 takes neither --pcap nor --certs (serve one worker to capture)")
        flags = ["-v"] * verbose + (["-q"] if quiet else [])
        serve_workers(profile_name, tam_dir, db, policy, _parse_bind(bind), workers, flags)
        return
    asyncio.run(_serve(profile_name, tam_dir, db, policy, _parse_bind(bind), certs, pcap=pcap))


async def _agent_run(
    profile_name: str,
    tam_uri: str,
    state_dir: str,
    timeout: float | None,
    certs: str | None = None,
    *,
    pcap: str | None = None,
    credentials: DeviceCredentials | None = None,
    proxy: str | None = None,
) -> dict[str, object]:
    import contextlib
    import dataclasses

    from teep_coap.profiles import load_profile
    from teep_coap.profiles.runtime import run_agent
    from teep_coap.profiles.session import SessionFailed

    profile = load_profile(profile_name)
    if timeout is not None:
        profile = dataclasses.replace(
            profile, limits=dataclasses.replace(profile.limits, request_timeout=timeout)
        )
    uri = tam_uri
    if pcap is not None and profile.security.mode == "tls":
        from teep_coap.profiles.capture import log_tls_keys

        log_tls_keys(pcap)  # this process is one TAM or one Agent run: its TLS keys to PCAP.keylog
    async with contextlib.AsyncExitStack() as stack:
        if pcap is not None:
            from teep_coap.profiles.capture import capturing_relay, relayed_uri, uri_address
            from teep_coap.transport.pcap import PcapWriter

            target = uri_address(tam_uri)
            writer = PcapWriter(pcap)
            stack.callback(writer.close)
            listen = ("::1" if ":" in target[0] else "127.0.0.1", 0)
            port = await stack.enter_async_context(
                capturing_relay(profile, target, writer, listen=listen, shown_server=target)
            )
            uri = relayed_uri(tam_uri, port)
        summary = await run_agent(profile, uri, state_dir, certs=certs, credentials=credentials, proxy=proxy)
    if pcap is not None and profile.security.mode == "dtls-psk":
        from teep_coap.profiles.capture import write_psk_file
        from teep_coap.transport.coap.credentials import load_agent_credentials

        psk = credentials.psk if credentials is not None else load_agent_credentials(state_dir).psk
        write_psk_file(pcap, psk)
    summary["tam"] = tam_uri
    if pcap is not None:
        from teep_coap.profiles.capture import tshark_command, uri_address

        summary["pcap"] = {"file": pcap, "tshark": tshark_command(profile, pcap, uri_address(tam_uri)[1])}
    if not summary.get("ok", False):
        raise SessionFailed(f"session with {tam_uri} failed: {summary.get('reason', '?')}")
    return summary


def _psk_credentials(psk_hex: str | None, psk_identity: str | None) -> DeviceCredentials | None:
    """Credentials from --psk-hex/--psk-identity (both or neither)."""
    if psk_hex is None and psk_identity is None:
        return None
    if psk_hex is None or psk_identity is None:
        raise click.UsageError("--psk-hex and --psk-identity go together")
    from teep_coap.transport.coap.credentials import PSK_MIN_BYTES, DeviceCredentials

    try:
        psk = bytes.fromhex(psk_hex)
    except ValueError:
        raise click.BadParameter("not hex", param_hint="--psk-hex") from None
    if len(psk) < PSK_MIN_BYTES:
        raise click.BadParameter(f"at least {PSK_MIN_BYTES} bytes needed", param_hint="--psk-hex")
    if not psk_identity:
        raise click.BadParameter("empty", param_hint="--psk-identity")
    return DeviceCredentials(psk_identity, psk_identity, psk)


@agent.command("run")
@click.option("--profile", "profile_name", required=True, help="Profile name or .toml path.")
@click.option("--tam", "tam_uri", required=True, help="TAM URI, e.g. coaps://127.0.0.1:5684/teep.")
@click.option("--state", "state_dir", required=True, type=click.Path(exists=True, file_okay=False))
@click.option(
    "--timeout", type=click.FloatRange(0.1, 3600), default=None, help="Seconds per exchange (profile's)."
)
@click.option(
    "--certs", default=None, type=click.Path(file_okay=False), help="HTTPS: certificate folder (CA)."
)
@click.option(
    "--pcap",
    type=click.Path(dir_okay=False, writable=True),
    default=None,
    help="Write the session's datagrams / TCP segments to this pcap (DTLS: PSK to FILE.psk; HTTPS: TLS "
    "secrets to FILE.keylog). The TAM must be on loopback.",
)
@click.option(
    "--psk-hex", default=None, help="DTLS PSK in hex, instead of the state folder's transport.toml."
)
@click.option("--psk-identity", default=None, help="DTLS PSK identity (with --psk-hex).")
@click.option(
    "--proxy", default=None, help="Through this CoAP forward proxy (coap://HOST:PORT; plain CoAP profiles)."
)
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON (the default output).")
@click.option("-v", "--verbose", count=True, help="More logging (-vv: aiocoap debug).")
@click.option("-q", "--quiet", is_flag=True, help="Only errors on stderr (the default).")
def agent_run(
    profile_name: str,
    tam_uri: str,
    state_dir: str,
    timeout: float | None,
    certs: str | None,
    pcap: str | None,
    psk_hex: str | None,
    psk_identity: str | None,
    proxy: str | None,
    as_json: bool,
    verbose: int,
    quiet: bool,
) -> None:
    """Broker + Agent over any profile: sessions until the TAM has nothing more; prints what changed.

    TEEP: --state is the Agent state folder (`agent init`); OTrP: an `otrp init` folder (one session).
    """
    _setup_logging(verbose, quiet=quiet or not verbose)
    creds = _psk_credentials(psk_hex, psk_identity)
    summary = asyncio.run(
        _agent_run(
            profile_name, tam_uri, state_dir, timeout, certs, pcap=pcap, credentials=creds, proxy=proxy
        )
    )
    click.echo(json.dumps(summary, indent=2))


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
    help="`tam serve --workers N` (CoAP profiles; N>1 needs --db).",
)
@click.option(
    "--db",
    default=None,
    help="TAM database: an SQLAlchemy URL, or 'postgres' for a throwaway PostgreSQL server. Default: SQLite.",
)
@click.option("--json", "as_json", is_flag=True)
def bench_sessions(
    profile_name: str,
    devices: int,
    concurrency: int,
    n_sessions: int | None,
    image_size: int,
    tam_workers: int,
    db: str | None,
    as_json: bool,
) -> None:
    """Full TEEP sessions/s and p50/p99 latency, TAM in its own process (`tam serve`), on loopback.

    Reports TAM CPU per session summed over its workers, each worker's peak RSS, and the simulated
    devices' CPU per session separately."""
    from teep_coap.bench.sessions import format_result, run_bench

    if not sys.stderr.isatty():
        result = run_bench(
            profile_name,
            devices=devices,
            concurrency=concurrency,
            sessions=n_sessions,
            image_size=image_size,
            tam_workers=tam_workers,
            db=db,
        )
    else:  # a progress bar on the terminal (stderr, so --json on stdout stays clean)
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

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

            result = run_bench(
                profile_name,
                devices=devices,
                concurrency=concurrency,
                sessions=n_sessions,
                image_size=image_size,
                progress=show,
                tam_workers=tam_workers,
                db=db,
            )
    click.echo(json.dumps(result.to_json(), indent=2) if as_json else format_result(result))


@root.command("session")
@click.option(
    "--profile", "profile_name", required=True, help="Any profile (teep-coap profiles) or .toml path."
)
@click.option(
    "--payload-size",
    type=click.IntRange(0, 16 * 1024 * 1024),
    default=1024,
    show_default=True,
    help="Bytes of the Trusted Component (TEEP) / Trusted Application (OTrP) to install.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@click.option(
    "--pcap",
    type=click.Path(dir_okay=False, writable=True),
    default=None,
    help="Write every datagram / TCP segment to this pcap file (DTLS: the PSK to FILE.psk; HTTPS: TLS "
    "secrets to FILE.keylog).",
)
def session_cmd(profile_name: str, payload_size: int, as_json: bool, pcap: str | None) -> None:
    """One complete provisioning session over ANY profile, on loopback, in temporary folders.

    A TAM and an Agent (TEEP: CBOR/COSE or JSON/JWS by the profile's encoding; OTrP: the OTrP engines)
    talk over the profile's real transport (CoAP, DTLS PSK, OSCORE, HTTP, HTTPS); prints what was
    installed and the size of every message. Exit 2 if the session does not succeed.
    """
    from teep_coap.profiles import load_profile
    from teep_coap.profiles.scenario import run_local_session

    logging.getLogger("coap").setLevel(logging.CRITICAL)  # aiocoap's shutdown chatter is not news here
    profile = load_profile(profile_name)
    summary = asyncio.run(run_local_session(profile, payload_size, pcap=pcap))
    if as_json:
        click.echo(json.dumps(summary.to_json(), indent=2))
        return
    click.echo(
        f"session over {summary.profile} ({summary.protocol}/{summary.encoding} over {summary.scheme}): "
        f"ok in {summary.seconds * 1000:.1f} ms"
    )
    for m in summary.messages:
        click.echo(f"  {m['direction']:<11} {m['name']:<24} {m['size']:>8} B")
    click.echo(f"  {'total':<36} {summary.total_bytes:>8} B")
    click.echo("installed:")
    for item in summary.installed:
        click.echo(f"  {json.dumps(item)}")


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
    from teep_coap.bench.dtls_burst import format_burst, run_burst

    result = run_burst(profile_name, clients=clients, bound=bound, timeout=timeout)
    click.echo(json.dumps(result.to_json(), indent=2) if as_json else format_burst(result))
