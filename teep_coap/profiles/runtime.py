"""What `tam serve` and `agent run` assemble for any profile: TEEP (CBOR/COSE or JSON/JWS) or OTrP.

`open_tam(profile, folder)` gives the TAM's transport handler (TEEP: `TamEngine` with the profile's
wire behind `TamHandler`; OTrP: the OTrP TAM of an `otrp init` folder behind its handler) and where the
transport finds its credentials; `run_agent(profile, uri, folder)` runs the Broker sessions of the
device and returns a JSON-able summary. The CLI only parses options and prints.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from teep_coap.errors import TeepCoapError
from teep_coap.profiles.gateway import fetch_through_gateway
from teep_coap.profiles.schema import Profile
from teep_coap.profiles.session import SessionFailed, TamHandler, run_session, run_until_done
from teep_coap.profiles.stack import make_client
from teep_coap.protocol.agent import AgentEngine
from teep_coap.protocol.policy import Policy
from teep_coap.protocol.tam import TamEngine
from teep_coap.protocol.wire import wire_for
from teep_coap.store.agentdir import load_agent_state
from teep_coap.transport.base import MessageHandler
from teep_coap.transport.coap.credentials import DeviceCredentials


class RuntimeOptionError(TeepCoapError):
    """An option that does not apply to the profile's protocol (e.g. --policy for OTrP)."""


@dataclass
class TamService:
    """A TAM ready to be served: its handler, its credential folder, and what to close at the end."""

    profile: Profile
    handler: MessageHandler
    credentials_dir: Path  # where DTLS PSK / OSCORE credentials of the devices live
    certs_path: Path | None  # HTTPS certificate folder (None: the transport's default)
    closers: list[Callable[[], None]] = field(default_factory=list)

    def close(self) -> None:
        for close in self.closers:
            close()

    def counts(self) -> tuple[int, int]:
        """(sessions done, sessions failed) where the handler keeps them (TEEP's TamHandler)."""
        return int(getattr(self.handler, "sessions_done", 0)), int(
            getattr(self.handler, "sessions_failed", 0)
        )

    def stats(self) -> dict[str, Any]:
        """What this process served and what its engine calls cost (`tam serve --stats-file`)."""
        done, failed = self.counts()
        return {
            "pid": os.getpid(),
            "sessions_done": done,
            "sessions_failed": failed,
            "engine_calls": int(getattr(self.handler, "engine_calls", 0)),
            "engine_cpu_seconds": round(float(getattr(self.handler, "engine_cpu", 0.0)), 6),
            "engine_batches": int(getattr(self.handler, "batches", 0)),
            "process_cpu_seconds": round(time.process_time(), 6),
        }


def open_tam(
    profile: Profile,
    folder: str | os.PathLike[str],
    *,
    db: str | None = None,
    policy: str | None = None,
    certs: str | os.PathLike[str] | None = None,
) -> TamService:
    """TEEP: FOLDER is a `tam init` folder; OTrP: an `otrp init` folder (or its tam/ subfolder)."""
    # The TAM's store (SQLAlchemy) and the OTrP package are imported where used, not at module level:
    # a device's `agent run` imports this module, and with them its start-up cost 0.9 s of CPU
    # instead of 0.5 s (2026-12-05); a burst of 200 `agent run` then took 122–133 s instead of 86 s.
    if profile.protocol == "otrp":
        from teep_coap.otrp.profiles import load_tam_engine, otrp_folder, tam_handler

        if db is not None or policy is not None:
            raise RuntimeOptionError(
                "--db and --policy apply to TEEP profiles; OTrP reads FOLDER/tam/policy.json"
            )
        base = otrp_folder(folder)
        engine = load_tam_engine(profile, base)
        https_certs = Path(certs) if certs is not None else base / "certs"
        return TamService(profile, tam_handler(engine), base / "tam", https_certs)

    from teep_coap.store.tam_db import TamStore
    from teep_coap.store.tamdir import load_tam_dir

    wire = wire_for(profile.encoding, profile.compat)
    config, store = load_tam_dir(Path(folder))
    if db is not None:
        store.close()
        store = TamStore(db)
    if policy is not None:
        config = dataclasses.replace(config, policy=Policy.load(policy))
    handler = TamHandler(TamEngine(config, store, wire=wire))
    return TamService(
        profile, handler, Path(folder), Path(certs) if certs is not None else None, [store.close]
    )


def _components(pairs: list[tuple[tuple[bytes, ...], int]]) -> list[dict[str, Any]]:
    return [{"component_id": [p.hex() for p in cid], "sequence_number": seq} for cid, seq in pairs]


async def run_agent(
    profile: Profile,
    tam_uri: str,
    folder: str | os.PathLike[str],
    *,
    certs: str | os.PathLike[str] | None = None,
    credentials: DeviceCredentials | None = None,
    proxy: str | None = None,
) -> dict[str, Any]:
    """Broker + Agent against the TAM at `tam_uri`; raises SessionFailed when a session fails.

    `credentials` replace the DTLS PSK / OSCORE context of the Agent folder's transport.toml.

    TEEP: FOLDER is the Agent state folder; sessions until the TAM has nothing more. OTrP: FOLDER is an
    `otrp init` folder (or its agent/ subfolder); one session (GetDeviceState … InstallTA)."""

    limits = profile.limits
    if profile.protocol == "otrp":
        # OTrP only for OTrP profiles: see open_tam for the measured start-up cost.
        from teep_coap.otrp.profiles import OtrpBrokerAgent, installed_summary, load_agent_engine, otrp_folder

        base = otrp_folder(folder)
        otrp_agent = load_agent_engine(profile, base)
        client = make_client(
            profile,
            tam_uri,
            state_dir=base / "agent",
            certs_path=certs if certs is not None else base / "certs",
            proxy=proxy,
        )
        try:
            result = await run_session(
                OtrpBrokerAgent(otrp_agent),
                client,
                tam_uri,
                timeout=limits.request_timeout,
                max_rounds=limits.max_session_rounds,
            )
        finally:
            await client.close()
        return {
            "tam": tam_uri,
            "profile": profile.name,
            "ok": result.ok,
            "reason": result.reason,
            "rounds": result.rounds,
            "bytes_sent": result.bytes_sent,
            "bytes_received": result.bytes_received,
            "seconds": round(result.seconds, 4),
            "installed": installed_summary(otrp_agent),
        }

    fetcher = None
    if profile.transport.is_coap:  # SUIT images named by URI come through the gateway's cache
        fetcher = fetch_through_gateway(profile, tam_uri, folder, credentials=credentials)
    engine = AgentEngine(
        load_agent_state(folder), wire=wire_for(profile.encoding, profile.compat), fetcher=fetcher
    )
    client = make_client(
        profile, tam_uri, state_dir=folder, certs_path=certs, credentials=credentials, proxy=proxy
    )
    try:
        report = await run_until_done(
            engine, client, tam_uri, timeout=limits.request_timeout, max_rounds=limits.max_session_rounds
        )
    finally:
        await client.close()
    if not report.ok:
        failed = next(s for s in report.sessions if not s.ok)
        raise SessionFailed(f"session {len(report.sessions)} with {tam_uri} failed: {failed.reason}")
    last = engine.last_response
    if last is not None and type(last).__name__ == "Error":
        raise SessionFailed(f"the Agent answered the TAM with an Error: {engine.last_note}")
    return {
        "tam": tam_uri,
        "profile": profile.name,
        "ok": True,
        "sessions": len(report.sessions),
        "installed": _components(report.installed),
        "updated": [
            {"component_id": [p.hex() for p in cid], "from": a, "to": b} for cid, a, b in report.updated
        ],
        "removed": [{"component_id": [p.hex() for p in cid]} for cid in report.removed],
        **({"recovered": _recovered_summary(report.recovered)} if report.recovered is not None else {}),
    }


def _recovered_summary(recovered: dict[str, Any]) -> dict[str, Any]:
    """`agent run`'s account of an Update an earlier run left unconfirmed (lost Success, crash)."""
    if recovered["applied_before"]:
        note = "an earlier session applied an Update and stopped before the TAM's last answer; the TAM agrees"
    else:
        note = "an earlier session's Update stopped before it changed the device; nothing half-done was kept"
    return {"note": note, "changes_since": recovered["changes"]}
