"""What the long-running commands share (`tam serve`, `otrp serve`, `agent run`, `gateway serve`,
the benchmarks that start them): the HOST:PORT option, their logging, and the TAM's serve loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import resource
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from teep_coap.cli.groups import parse_bind, setup_logging
from teep_coap.profiles import load_profile
from teep_coap.profiles.capture import capturing_relay, log_tls_keys, relayed_uri, write_psk_file
from teep_coap.profiles.event_loop import loop_name
from teep_coap.profiles.runtime import open_tam
from teep_coap.profiles.stack import make_server
from teep_coap.transport.coap.credentials import load_tam_credentials
from teep_coap.transport.coap.credentials_watch import CredentialsWatcher
from teep_coap.transport.pcap import PcapWriter

if TYPE_CHECKING:
    from teep_coap.profiles.schema import Profile


async def serve_tam(
    profile_name: str,
    tam_dir: str,
    db: str | None,
    policy: str | None,
    bind: tuple[str, int],
    certs: str | None = None,
    banner: str | None = None,
    pcap: str | None = None,
    stats_file: str | None = None,
) -> None:
    """Serve any profile: TEEP (CBOR/COSE or JSON/JWS, by the profile's encoding) or OTrP.

    With `pcap`, the server listens on a free port of the same host and a capturing relay on `bind`.
    With `stats_file`, one JSON line of `TamService.stats()` is appended to it when the server stops."""

    profile = load_profile(profile_name)
    if pcap is not None and profile.security.mode == "tls":
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
        raise_open_file_limit()
        bound = await server.start()
        settle_heap()
        watch = watch_credentials(server, service.credentials_dir, loop)
        try:
            uri = getattr(server, "uri", None)
            port = bound if isinstance(bound, int) else getattr(server, "port", bind[1])
            if not uri:
                uri = f"{profile.transport.scheme}://{bind[0]}:{port}{profile.transport.path}"
            capture = contextlib.AsyncExitStack()
            if pcap is not None:
                writer = PcapWriter(pcap)
                capture.callback(writer.close)
                rport = await capture.enter_async_context(
                    capturing_relay(profile, (bind[0], int(port)), writer, listen=bind)
                )
                uri = relayed_uri(uri, rport)
                write_serve_psk(profile, service.credentials_dir, pcap)
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
        if stats_file is not None:
            append_stats(stats_file, {**service.stats(), "event_loop": loop_name(asyncio.get_running_loop())})


NOFILE_CEILING = 1 << 20  # open files asked for when the hard limit is unlimited (Linux's usual nr_open)

# Young-generation collections after this many new container objects (Python's default is 700): a
# session allocates thousands of short-lived ones, and each collection walks all the young ones.
GC_YOUNG_THRESHOLD = 10_000


def raise_open_file_limit() -> int:
    """The soft open-file limit raised to the hard one; the new soft limit. Every TCP connection and
    every socket is a descriptor, and at the common soft default of 1,024 about a thousand idle TCP
    connections used to stop an HTTP(S) TAM from accepting any more (`transport/http/connections.py`)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = NOFILE_CEILING if hard == resource.RLIM_INFINITY else hard
    if soft != resource.RLIM_INFINITY and soft < wanted:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
            soft = wanted
        except (ValueError, OSError):  # the system allows less than the hard limit says: keep ours
            pass
    return soft


def settle_heap() -> None:
    """Once the server is up: what start-up built (modules, keys, profile, aiocoap) lives as long as
    the process, so the collector stops walking it (`gc.freeze`), and young collections run less
    often. Together about 3 % of a coaps-psk TAM's CPU (session 12: py-spy put the collector at 5 %)."""
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, older, oldest)


def append_stats(path: str, stats: dict[str, object]) -> None:
    """Append one JSON line (one write: `--workers` children append to the same file)."""
    line = json.dumps(stats, sort_keys=True) + "\n"
    try:
        with open(path, "a", encoding="utf-8") as out:
            out.write(line)
    except OSError as exc:
        logging.getLogger("teep_coap.session").error(
            "cannot write the statistics to %s: %s", path, exc.strerror or exc
        )


def write_serve_psk(profile: Profile, credentials_dir: Path, pcap: str) -> None:
    """FILE.psk for a DTLS TAM: Wireshark takes one PSK, so only when one device has credentials."""
    if profile.security.mode != "dtls-psk":
        return

    devices = load_tam_credentials(credentials_dir)
    if len(devices) == 1:
        write_psk_file(pcap, devices[0].psk)
    else:
        logging.getLogger("teep_coap.capture").warning(
            "%s.psk not written: %d devices have PSKs and Wireshark takes one (psk_hex in credentials.toml)",
            pcap,
            len(devices),
        )


def watch_credentials(
    server: object, tam_dir: object, loop: asyncio.AbstractEventLoop
) -> asyncio.Task[None] | None:
    """CoAP servers re-read credentials.toml when it changes and on SIGHUP (no restart needed)."""
    if not hasattr(server, "update_devices") or tam_dir is None:
        return None

    watcher = CredentialsWatcher(server, tam_dir)  # type: ignore[arg-type]
    loop.add_signal_handler(signal.SIGHUP, lambda: watcher.check(force=True))
    return asyncio.create_task(watcher.run(), name="credentials.toml watcher")


__all__ = ["parse_bind", "serve_tam", "setup_logging", "watch_credentials", "write_serve_psk"]
