"""The OTrP engines behind the transport contract (`MessageHandler`), for HTTP(S) and CoAP alike.

OTrP over HTTP -00 (OTRP.md §9): an empty POST starts a session (ProcessConnect), every other POST
carries one OTrP message, an answer without body ends it. The transports already implement those rules;
this adapter only maps the engines' errors onto the transport's refusals: a message that does not
decode, verify or fit the session → 400 / 4.00; a transport identity that is not the device's → 403 /
4.03; anything else is a TAM failure (500 / 5.00).
"""

from __future__ import annotations

from teep_coap.model.otrp import OtrpDecodeError, OtrpIdentityMismatch, OtrpProtocolError, OtrpSecurityError
from teep_coap.protocol.otrp_agent import OtrpAgentEngine
from teep_coap.protocol.otrp_tam import OtrpTamEngine
from teep_coap.transport.base import MessageHandler, PeerInfo, Rejection, RequestRejected


def tam_handler(engine: OtrpTamEngine) -> MessageHandler:
    """The TAM side: ProcessConnect on an empty payload, ProcessOTrPMessage otherwise."""

    async def handle(payload: bytes, peer: PeerInfo) -> bytes | None:
        try:
            if not payload:
                return engine.connect(peer.identity)
            return engine.receive(payload, peer.identity)
        except OtrpIdentityMismatch as exc:
            raise RequestRejected(Rejection.FORBIDDEN, str(exc)[:200]) from None
        except (OtrpDecodeError, OtrpSecurityError, OtrpProtocolError) as exc:
            raise RequestRejected(Rejection.BAD_REQUEST, str(exc)[:200]) from None

    return handle


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
