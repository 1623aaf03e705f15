"""In-memory OTrP sessions: the TAM and Agent engines wired back to back, with per-message sizes.

`run_reference_session` is the OTrP half of the sizes benchmark's reference scenario: a device with
nothing installed, a TAM that installs one Trusted Application of `ta_size` bytes. OTrP needs a
Security Domain first, so the session is GetDeviceState → CreateSD → InstallTA (six messages).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from teep_coap.otrp.model import OtrpError
from teep_coap.otrp.protocol.agent import OtrpAgentConfig, OtrpAgentEngine
from teep_coap.otrp.protocol.tam import OtrpTamConfig, OtrpTamEngine, OtrpTamPolicy, SdSpec, TaSpec
from teep_coap.otrp.security.pki import OtrpPki, make_pki

MAX_ROUNDS = 64


@dataclass(frozen=True)
class MessageRecord:
    """One message of a session.

    `tbs_size`: the bare to-be-signed object with its encrypted members in clear (JSON text or CBOR);
    `wire_size`: the signed and encrypted message as sent (== len(wire))."""

    name: str  # e.g. "GetDeviceStateRequest", "InstallTAResponse"
    direction: Literal["tam->agent", "agent->tam"]
    tbs_size: int
    wire_size: int
    wire: bytes


def run_session(
    tam: OtrpTamEngine, agent: OtrpAgentEngine, max_rounds: int = MAX_ROUNDS
) -> list[MessageRecord]:
    """Drive one session to its end (the TAM returns None) and record every message."""
    records: list[MessageRecord] = []

    def note(engine: OtrpTamEngine | OtrpAgentEngine, direction: Literal["tam->agent", "agent->tam"]) -> None:
        sealed = engine.last_sent
        assert sealed is not None
        records.append(
            MessageRecord(engine.last_sent_name, direction, len(sealed.tbs), len(sealed.wire), sealed.wire)
        )

    request: bytes | None = tam.connect()
    note(tam, "tam->agent")
    for _ in range(max_rounds):
        assert request is not None
        answer = agent.receive(request)
        if answer is None:
            raise OtrpError("the Agent gave no answer")
        note(agent, "agent->tam")
        request = tam.receive(answer)
        if request is None:
            return records
        note(tam, "tam->agent")
    raise OtrpError(f"session did not end within {max_rounds} round trips")


def reference_policy(pki: OtrpPki, ta_size: int, seed: bytes = b"TA") -> OtrpTamPolicy:
    """One SD and one TA of `ta_size` bytes (deterministic content)."""
    data = (seed * (ta_size // len(seed) + 1))[:ta_size]
    return OtrpTamPolicy(
        sds=[SdSpec(spid="sp.example", sdname="sd.sp.example", spcert=pki.sp.cert_der)],
        tas=[TaSpec(sdname="sd.sp.example", taid="sp.example.ta1", data=data)],
    )


def make_engines(
    encoding: Literal["json", "cbor"],
    pki: OtrpPki,
    state_dir: Path,
    policy: OtrpTamPolicy,
    nextdsi: bool = False,
) -> tuple[OtrpTamEngine, OtrpAgentEngine]:
    tam = OtrpTamEngine(
        OtrpTamConfig(
            identity=pki.tam, tee_anchors=(pki.root.cert,), encoding=encoding, policy=policy, nextdsi=nextdsi
        )
    )
    agent = OtrpAgentEngine(
        OtrpAgentConfig(identity=pki.tee, tam_anchors=(pki.root.cert,), encoding=encoding), state_dir
    )
    return tam, agent


def run_reference_session(
    encoding: Literal["json", "cbor"],
    ta_size: int,
    *,
    key_type: str = "RSA",
    pki: OtrpPki | None = None,
    state_dir: str | os.PathLike[str] | None = None,
) -> list[MessageRecord]:
    """GetDeviceState → CreateSD → InstallTA between fresh engines (RSA-2048 keys by default, i.e.
    RS256 / RSA1_5+A128CBC-HS256 in JSON and RS256 / RSA-OAEP+A128GCM in CBOR); 6 records."""
    if ta_size < 0:
        raise OtrpError("ta_size must be >= 0")
    pki = pki or make_pki(key_type)
    with tempfile.TemporaryDirectory(prefix="otrp-agent-") as tmp:
        folder = Path(state_dir) if state_dir is not None else Path(tmp)
        tam, agent = make_engines(encoding, pki, folder, reference_policy(pki, ta_size))
        records = run_session(tam, agent)
    results = tam.results()
    if any(r.status != "pass" for r in results):
        raise OtrpError(f"reference session failed: {results}")
    return records


def session_totals(records: Sequence[MessageRecord]) -> tuple[int, int]:
    """(sum of bare TBS sizes, sum of wire sizes)."""
    return sum(r.tbs_size for r in records), sum(r.wire_size for r in records)


__all__ = [
    "MessageRecord",
    "make_engines",
    "reference_policy",
    "run_reference_session",
    "run_session",
    "session_totals",
]
