"""The OTrP engines behind the transport contract, and the OTrP folder (`teep-coap otrp init`).

OTrP over HTTP -00 (docs/protocol-facts.md §3.6): an empty POST starts a session (ProcessConnect),
every other POST carries one OTrP message, an answer without body ends it. The transports implement
those rules; this glue only maps the engines' errors onto the transport's refusals: a message that does
not decode, verify or fit the session → 400 / 4.00; a transport identity that is not the device's →
403 / 4.03; anything else is a TAM failure (500 / 5.00). It sits here, next to TEEP's `TamHandler`,
because the protocol engines must not know transports.

Folder layout (made by `teep-coap otrp init FOLDER`): `pki/` (root, tam, tee, sp identities),
`tam/policy.json` + TA files + DTLS/OSCORE credentials, `agent/` (the device's transport credentials
and `agent/otrp/` state), `certs/` (HTTPS bundle).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from teep_coap.errors import TeepCoapError
from teep_coap.otrp.model import OtrpError
from teep_coap.otrp.protocol.agent import OtrpAgentConfig, OtrpAgentEngine
from teep_coap.otrp.protocol.tam import OtrpTamConfig, OtrpTamEngine, OtrpTamPolicy, SdSpec, TaSpec
from teep_coap.otrp.security.pki import load_certs_pem, load_identity
from teep_coap.profiles.rejections import rejection_for
from teep_coap.profiles.schema import Profile
from teep_coap.transport.base import MessageHandler, PeerInfo, Rejection, RequestRejected

POLICY_FILE = "policy.json"


class OtrpTamHandler:
    """The TAM side: ProcessConnect on an empty payload, ProcessOTrPMessage otherwise; counts the
    sessions that ended (the TAM answered nothing) and the messages it refused."""

    def __init__(self, engine: OtrpTamEngine) -> None:
        self.engine = engine
        self.sessions_done = 0
        self.sessions_failed = 0

    async def __call__(self, payload: bytes, peer: PeerInfo) -> bytes | None:
        try:
            if not payload:
                return self.engine.connect(peer.identity)
            answer = self.engine.receive(payload, peer.identity)
        except TeepCoapError as exc:  # the same mapping as the TEEP handler (profiles.rejections)
            self.sessions_failed += 1
            raise RequestRejected(rejection_for(exc) or Rejection.SERVER_ERROR, str(exc)[:200]) from None
        if answer is None:
            self.sessions_done += 1
        return answer


def tam_handler(engine: OtrpTamEngine) -> MessageHandler:
    """The OTrP TAM engine as a transport `MessageHandler`."""
    return OtrpTamHandler(engine)


class OtrpBrokerAgent:
    """The Agent engine with the calls the TEEP Broker loop (`protocol.broker`) makes of an Agent."""

    def __init__(self, engine: OtrpAgentEngine) -> None:
        self.engine = engine

    def receive(self, data: bytes) -> bytes | None:
        return self.engine.receive(data)

    def process_error(self, tam_uri: str) -> None:
        """OTrP's Agent has nothing to roll back when the transport fails (ProcessError)."""

    def request_policy_check(self) -> str | None:
        return None


def otrp_folder(path: str | os.PathLike[str]) -> Path:
    """The `otrp init` folder from itself or one of its `tam/` / `agent/` subfolders."""
    here = Path(path)
    for candidate in (here, here.parent):
        if (candidate / "pki").is_dir():
            return candidate
    raise OtrpError(
        f"{here} is not an OTrP folder (no pki/ here or above; make one with `teep-coap otrp init`)"
    )


def _check(profile: Profile) -> None:
    if profile.protocol != "otrp":
        raise OtrpError(f"profile {profile.name!r} is for {profile.protocol}, not otrp")


def load_policy(folder: Path, sp: Any) -> OtrpTamPolicy:
    """FOLDER/tam/policy.json: the SDs and TAs to install (TA bytes from files next to it)."""
    path = folder / "tam" / POLICY_FILE
    try:
        doc = json.loads(path.read_text())
        sds = [SdSpec(spid=s["spid"], sdname=s["sdname"], spcert=sp.cert_der) for s in doc.get("sds", [])]
        tas = [
            TaSpec(sdname=t["sdname"], taid=t["taid"], data=(folder / "tam" / t["file"]).read_bytes())
            for t in doc.get("tas", [])
        ]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise OtrpError(f"{path}: not a usable OTrP policy ({type(exc).__name__}: {exc})") from None
    return OtrpTamPolicy(sds=sds, tas=tas)


def load_tam_engine(profile: Profile, folder: Path) -> OtrpTamEngine:
    """The OTrP TAM of an `otrp init` folder, speaking the profile's encoding."""

    _check(profile)
    pki_dir = folder / "pki"
    config = OtrpTamConfig(
        identity=load_identity(pki_dir, "tam"),
        tee_anchors=load_certs_pem(pki_dir / "root.pem"),
        encoding=profile.encoding,  # type: ignore[arg-type]
        policy=load_policy(folder, load_identity(pki_dir, "sp")),
    )
    return OtrpTamEngine(config)


def load_agent_engine(profile: Profile, folder: Path) -> OtrpAgentEngine:
    """The OTrP Agent (simulated TEE) of an `otrp init` folder; its state lives in agent/otrp/."""

    _check(profile)
    pki_dir = folder / "pki"
    return OtrpAgentEngine(
        OtrpAgentConfig(
            identity=load_identity(pki_dir, "tee"),
            tam_anchors=load_certs_pem(pki_dir / "root.pem"),
            encoding=profile.encoding,  # type: ignore[arg-type]
        ),
        folder / "agent" / "otrp",
    )


def installed_summary(engine: OtrpAgentEngine) -> dict[str, dict[str, int]]:
    """{sdname: {taid: size}} of what the device holds."""
    return {sd: {taid: len(b) for taid, b in tas.items()} for sd, tas in engine.installed().items()}
