"""`teep-coap tam ...`: create a TAM folder, register devices and components, script a session by hand,
prune old history.

Imports at module level; `teep-coap --help` stays fast because the module itself is imported only
when one of its commands is looked up (cli/groups.py).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import click

from teep_coap.cli.groups import json_is_default, tam
from teep_coap.cli.serving import parse_bind, serve_tam, setup_logging
from teep_coap.cli.workers import serve_workers
from teep_coap.encoding.hextext import read_cbor_source
from teep_coap.profiles import load_profile
from teep_coap.profiles.component_limits import ComponentTooLarge, check_envelope_size
from teep_coap.profiles.event_loop import EVENT_LOOPS, run_on, server_loop
from teep_coap.profiles.workers import WorkersError
from teep_coap.protocol.errors import ConfigError
from teep_coap.protocol.policy import Policy, envelope_identity, format_component_id
from teep_coap.protocol.retention import parse_duration
from teep_coap.protocol.tam import TamEngine
from teep_coap.protocol.wire import describe
from teep_coap.security.keys import load_verifying_key
from teep_coap.store.tam_db import TamStore
from teep_coap.store.tam_prune import MAX_BATCH
from teep_coap.store.tamdir import ALG_NAMES, init_tam_dir, load_tam_dir, open_store, read_config
from teep_coap.transport.coap.credentials import provision_device


def _print(obj: Any) -> None:
    click.echo(json.dumps(obj, indent=2))


_dir_option = click.option(
    "--dir", "tam_dir", required=True, type=click.Path(file_okay=False), help="TAM folder (tam init)."
)


@tam.command("init")
@json_is_default
@_dir_option
@click.option(
    "--alg",
    "algs",
    multiple=True,
    type=click.Choice(["esp256", "ed25519"]),
    help="Cipher suites to sign with (repeat; default both, as the draft requires of a TAM).",
)
@click.option(
    "--database", default=None, help="SQLAlchemy URL (default: sqlite file tam.sqlite in the folder)."
)
@click.option(
    "--attestation",
    type=click.Choice(["none", "background-check", "passport"]),
    default="background-check",
    show_default=True,
)
@click.option("--policy", default=None, help="Policy TOML file name, relative to the folder.")
def tam_init(
    tam_dir: str, algs: tuple[str, ...], database: str | None, attestation: str, policy: str | None
) -> None:
    """Create a TAM folder: signing keys, configuration, an empty database."""

    summary = init_tam_dir(
        Path(tam_dir), algs=algs or ALG_NAMES, database=database, attestation=attestation, policy=policy
    )
    summary["public_keys"] = {a: str(Path(tam_dir) / "keys" / a / "public.pem") for a in summary["kids"]}
    _print(summary)


@tam.group("device")
def device() -> None:
    """Register and list devices (TEEP Agents) by their public key."""


@device.command("add")
@json_is_default
@_dir_option
@click.option("--key", required=True, type=click.Path(exists=True, dir_okay=False), help="Agent public key.")
@click.option("--kid", default=None, help="Expected kid (hex); must equal the key's RFC 9679 thumbprint.")
@click.option("--name", default=None)
@click.option("--psk-identity", default=None, help="DTLS PSK identity of this device.")
@click.option("--oscore-id", default=None, help="OSCORE sender id of this device (hex).")
def device_add(
    tam_dir: str, key: str, kid: str | None, name: str | None, psk_identity: str | None, oscore_id: str | None
) -> None:
    """Register a device: the TAM will accept messages signed by this key."""

    folder = Path(tam_dir)
    vk = load_verifying_key(key)
    if kid is not None and kid.lower() != vk.kid.hex():
        raise ConfigError(f"--kid {kid} does not match the key's thumbprint {vk.kid.hex()}")
    store = open_store(folder, read_config(folder))
    dev = store.add_device(
        kid=vk.kid,
        alg=vk.alg,
        public_key=vk.to_pem(),
        now=time.time(),
        name=name,
        psk_identity=psk_identity,
        oscore_id=oscore_id,
    )
    _print(
        {
            "id": dev.id,
            "kid": dev.kid.hex(),
            "alg": dev.alg,
            "psk_identity": psk_identity,
            "oscore_id": oscore_id,
        }
    )


@device.command("list")
@json_is_default
@_dir_option
def device_list(tam_dir: str) -> None:
    """Registered devices with what the TAM knows they have."""

    folder = Path(tam_dir)
    store = open_store(folder, read_config(folder))
    out = []
    for d in store.devices():
        out.append(
            {
                "id": d.id,
                "kid": d.kid.hex(),
                "alg": d.alg,
                "name": d.name,
                "psk_identity": d.psk_identity,
                "oscore_id": d.oscore_id,
                "last_contact": d.last_contact,
                "components": [
                    {
                        "component_id": format_component_id(c.component_id),
                        "installed_seq": c.installed_seq,
                        "wanted": c.wanted,
                        "unneeded": c.unneeded,
                    }
                    for c in store.device_components(d.id)
                ],
            }
        )
    _print(out)


@tam.group("component")
def component() -> None:
    """The Trusted Component catalog (SUIT envelopes)."""


@component.command("add")
@json_is_default
@_dir_option
@click.argument("envelope", type=click.Path(exists=True, dir_okay=False))
@click.option(
    "--audience",
    type=click.Choice(["all", "request", "delete"]),
    default="request",
    show_default=True,
    help="all: every device gets it; request: devices that ask; delete: remove everywhere.",
)
@click.option("--name", default=None)
@click.option(
    "--force", is_flag=True, help="Add it even if its Update is over every profile's size limit (a warning)."
)
def component_add(tam_dir: str, envelope: str, audience: str, name: str | None, force: bool) -> None:
    """Add a SUIT envelope to the catalog (component id and sequence number read from its manifest).

    The envelope's Update is checked against every TEEP profile's message limit and the Agent's
    1 MiB decoding limit: over all of them it is refused (unless --force), over some a warning
    names the profiles that cannot deliver it.
    """

    folder = Path(tam_dir)
    data = Path(envelope).read_bytes()
    cid, seq = envelope_identity(data)
    _check_component_size(len(data), force)
    store = open_store(folder, read_config(folder))
    store.add_component(
        component_id=cid,
        sequence_number=seq,
        envelope=data,
        now=time.time(),
        name=name or Path(envelope).name,
        audience=audience,
    )
    _print({"component_id": format_component_id(cid), "sequence_number": seq, "audience": audience})


def _check_component_size(size: int, force: bool) -> None:

    verdict = check_envelope_size(size)
    if not verdict.refusing:
        return
    limits = ", ".join(f"{name} ({limit} B)" for name, limit in sorted(verdict.refusing.items()))
    if verdict.refused_everywhere and not force:
        raise ComponentTooLarge(
            f"envelope of {size} bytes makes an Update over every profile's limit ({limits}): every Agent "
            "would refuse it; add a smaller component (or --force to add it anyway)"
        )
    click.echo(f"teep-coap: warning: envelope of {size} bytes is over the limit of {limits}", err=True)


@component.command("list")
@json_is_default
@_dir_option
def component_list(tam_dir: str) -> None:
    """Latest version of every component in the catalog."""

    folder = Path(tam_dir)
    store = open_store(folder, read_config(folder))
    _print(
        [
            {
                "component_id": format_component_id(e.component_id),
                "sequence_number": e.sequence_number,
                "name": e.name,
                "audience": e.audience,
                "envelope_size": len(e.envelope),
            }
            for e in store.latest_components()
        ]
    )


@tam.command("policy-sync")
@json_is_default
@_dir_option
@click.argument("policy_file", type=click.Path(exists=True, dir_okay=False), required=False)
def policy_sync(tam_dir: str, policy_file: str | None) -> None:
    """Load a policy TOML file (default: the one in tam.toml) into the catalog."""

    folder = Path(tam_dir)
    cfg = read_config(folder)
    path = Path(policy_file) if policy_file else (folder / str(cfg["policy"]) if cfg.get("policy") else None)
    if path is None:
        raise ConfigError("no policy file given and none configured in tam.toml")
    n = Policy.load(path).sync(open_store(folder, cfg), time.time())
    _print({"policy": str(path), "components": n})


@tam.command("process")
@json_is_default
@_dir_option
@click.option("--connect", is_flag=True, help="Start a session (ProcessConnect): print a QueryRequest.")
@click.argument("source", metavar="FILE", required=False)
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False),
    help="Write the signed response bytes here (an empty file when the TAM has nothing more).",
)
@click.option("--transport-identity", default=None, help="DTLS PSK identity / OSCORE id the transport saw.")
def tam_process(
    tam_dir: str, connect: bool, source: str | None, output: str | None, transport_identity: str | None
) -> None:
    """ProcessConnect (--connect) or ProcessTeepMessage (FILE, '-' = stdin) on the TAM kept in DIR."""

    if connect == (source is not None):
        raise ConfigError("give either --connect or a message FILE")
    config, store = load_tam_dir(Path(tam_dir))
    engine = TamEngine(config, store)
    try:
        if connect:
            response: bytes | None = engine.connect(transport_identity)
        else:
            assert source is not None
            response = engine.receive(read_cbor_source(source), transport_identity)
    finally:
        store.close()
    if output:
        Path(output).write_bytes(response or b"")
    _print({"response": describe(response)})


@tam.command("sessions")
@json_is_default
@_dir_option
@click.option("--audit", is_flag=True, help="Include the audit log of each session.")
def tam_sessions(tam_dir: str, audit: bool) -> None:
    """Sessions and their outcome (and audit log)."""

    folder = Path(tam_dir)
    store = open_store(folder, read_config(folder))
    out = []
    for sid, dev, started, ended, outcome in store.sessions():
        item: dict[str, Any] = {
            "id": sid,
            "device": dev,
            "started": started,
            "ended": ended,
            "outcome": outcome,
        }
        if audit:
            item["audit"] = [{"at": at, "event": ev, "detail": de} for _, at, ev, de in store.audit_log(sid)]
        out.append(item)
    _print(out)


@tam.command("audit")
@json_is_default
@_dir_option
@click.option("--event", default=None, help="Only entries of this event (e.g. refused, duplicate-ignored).")
def tam_audit(tam_dir: str, event: str | None) -> None:
    """The whole audit log, with the entries that belong to no session (refused messages, duplicates)."""

    folder = Path(tam_dir)
    store = open_store(folder, read_config(folder))
    _print(
        [
            {"session": sid, "at": at, "event": ev, "detail": de}
            for sid, at, ev, de in store.audit_log()
            if event is None or ev == event
        ]
    )


@tam.command("prune")
@json_is_default
@_dir_option
@click.option(
    "--older-than",
    "older_than",
    required=True,
    metavar="DURATION",
    help="Delete sessions that ended longer ago than this: a number and a unit (s, m, h, d, w), e.g. 30d.",
)
@click.option("--dry-run", is_flag=True, help="Count what would be deleted; delete nothing.")
@click.option("--db", default=None, metavar="URL", help="SQLAlchemy URL overriding the folder's database.")
@click.option(
    "--batch",
    type=click.IntRange(1, MAX_BATCH),
    default=1000,
    show_default=True,
    help="Sessions per transaction: a TAM serving from the same database waits at most one batch.",
)
def tam_prune(tam_dir: str, older_than: str, dry_run: bool, db: str | None, batch: int) -> None:
    """Delete old history: ended sessions, their audit rows and requests, and audit entries of no
    session, older than DURATION. Open sessions, devices, their components and the catalog stay.

    Safe while the TAM serves: it deletes in batches, one short transaction each. To have the TAM
    do this itself, set keep-history = "90d" in tam.toml.
    """

    seconds = parse_duration(older_than, "--older-than")
    folder = Path(tam_dir)
    cfg = read_config(folder)
    store = TamStore(db) if db is not None else open_store(folder, cfg)
    cutoff = time.time() - seconds
    try:
        if dry_run:
            counts = store.prunable_history(cutoff)
            _print({"older_than": older_than, "cutoff": cutoff, "would_delete": counts.per_table()})
            return
        counts, batches = store.prune_history_all(cutoff, batch)
    finally:
        store.close()
    _print({"older_than": older_than, "cutoff": cutoff, "deleted": counts.per_table(), "batches": batches})


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
    help="Processes sharing the address (SO_REUSEPORT; TEEP profiles, CoAP or HTTP(S); N>1 needs a "
    "PostgreSQL --db).",
)
@click.option(
    "--stats-file",
    type=click.Path(dir_okay=False, writable=True),
    default=None,
    help="When the server stops, append one JSON line to this file per process: sessions done and "
    "failed, engine calls and their CPU seconds, the process's CPU seconds.",
)
@click.option(
    "--loop",
    "event_loop",
    type=click.Choice(EVENT_LOOPS),
    default="auto",
    show_default=True,
    help="Event loop: uvloop (libuv; CoAP profiles only, about 3 % fewer TAM instructions per session), "
    "asyncio, or auto (uvloop for a CoAP profile where it is installed, else asyncio).",
)
@click.option("-v", "--verbose", count=True, help="More logging (-vv: aiocoap debug).")
@click.option("-q", "--quiet", is_flag=True, help="No per-session log lines.")
def tamserve_tam(
    profile_name: str,
    tam_dir: str,
    db: str | None,
    policy: str | None,
    bind: str,
    certs: str | None,
    pcap: str | None,
    workers: int,
    stats_file: str | None,
    event_loop: str,
    verbose: int,
    quiet: bool,
) -> None:
    """Serve the TAM over any profile's binding until SIGINT/SIGTERM; one log line per session.

    TEEP profiles (cbor or json; coap, coaps, coap+oscore, http, https) serve the `tam init` folder
    DIR with the profile's wire (CBOR/COSE or JSON/JWS); OTrP profiles serve an `otrp init` folder.
    The first line on stdout names the URI (useful with port 0).
    With --workers N, N processes serve the same address (SO_REUSEPORT: the kernel spreads CoAP peers
    and HTTP connections over them) and share a PostgreSQL --db. Every server also answers
    `GET /health` (HTTP 200 / CoAP 2.05, `ok pid N`) for a load balancer.

    Environment: TEEP_COAP_ENGINE_THREADS=N runs the engine's calls on N threads (0: on the event
    loop, the default for SQLite and a PostgreSQL on this host; 4 for one on another host).
    TEEP_COAP_COMMIT_DELAY_MS=N (0 to 100, default 2): when other requests are about, a group commit
    waits up to N ms for more to join it (0: each batch at once).
    """
    setup_logging(verbose, quiet)
    loop = server_loop(event_loop, load_profile(profile_name).transport.scheme)  # refused before any worker
    if workers > 1:
        if pcap is not None:
            raise WorkersError("--workers N>1 takes no --pcap (serve one worker to capture its traffic)")
        flags = ["-v"] * verbose + (["-q"] if quiet else [])
        flags += ["--stats-file", stats_file] if stats_file is not None else []
        flags += ["--certs", certs] if certs is not None else []
        flags += ["--loop", event_loop]
        serve_workers(profile_name, tam_dir, db, policy, parse_bind(bind), workers, flags)
        return
    address = parse_bind(bind)
    run_on(
        loop,
        serve_tam(profile_name, tam_dir, db, policy, address, certs, pcap=pcap, stats_file=stats_file),
    )
