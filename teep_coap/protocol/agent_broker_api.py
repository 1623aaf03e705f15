"""The Broker-facing API of the TEEP Agent (RFC 9397): RequestTA, UnrequestTA, RequestPolicyCheck,
ProcessError. What the Broker asks for is remembered in the Agent state's broker record, which the
next QueryResponse reports. `AgentEngine` inherits it; split out of `protocol.agent`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from teep_coap.model.teep import ComponentId
from teep_coap.protocol.agentstate import AgentState
from teep_coap.protocol.errors import ConfigError


def cid_key(cid: Sequence[bytes]) -> str:
    """A component id as one text key (hex parts joined by dots), as the broker record stores it."""
    return ".".join(p.hex() for p in cid)


class BrokerApi:
    """The calls a TEEP Broker makes on its Agent, besides passing TEEP messages."""

    state: AgentState
    clock: Callable[[], float]

    def _installed(self, cid: Sequence[bytes]) -> bool:
        return self.state.components.get(tuple(cid)) is not None

    def _tidy_broker(self) -> None:
        """Forget requests that are satisfied: requested and now installed, unrequested and now gone."""
        b = self.state.broker
        before = (dict(b.requested), dict(b.unrequested))
        for k, r in list(b.requested.items()):
            entry = self.state.components.get(tuple(bytes.fromhex(p) for p in r["cid"]))
            if entry is not None and (r.get("min_seq") is None or entry.sequence_number >= r["min_seq"]):
                del b.requested[k]
        for k, r in list(b.unrequested.items()):
            if not self._installed(tuple(bytes.fromhex(p) for p in r["cid"])):
                del b.unrequested[k]
        if (b.requested, b.unrequested) != before:
            self.state.save_broker()

    def request_ta(
        self, component_id: ComponentId, tam_uri: str | None = None, *, min_seq: int | None = None
    ) -> str | None:
        """RequestTA: None when already installed, else the TAM URI to contact."""
        uri = tam_uri or self.state.config.tam_uri
        if self._installed(component_id):
            return None
        if uri is None:
            raise ConfigError("no TAM URI given and none configured (agent.toml tam-uri)")
        key = cid_key(component_id)
        self.state.broker.requested[key] = {
            "cid": [p.hex() for p in component_id],
            "tam": uri,
            "min_seq": min_seq,
        }
        self.state.broker.unrequested.pop(key, None)
        self.state.save_broker()
        return uri

    def unrequest_ta(self, component_id: ComponentId, tam_uri: str | None = None) -> str | None:
        """UnrequestTA: None when not installed (a pending request is dropped), else the TAM URI."""
        uri = tam_uri or self.state.config.tam_uri
        key = cid_key(component_id)
        self.state.broker.requested.pop(key, None)
        if not self._installed(component_id):
            self.state.save_broker()
            return None
        if uri is None:
            raise ConfigError("no TAM URI given and none configured (agent.toml tam-uri)")
        self.state.broker.unrequested[key] = {"cid": [p.hex() for p in component_id], "tam": uri}
        self.state.save_broker()
        return uri

    def request_policy_check(self) -> str | None:
        """RequestPolicyCheck: one TAM URI per call; None ends the round (the next call starts anew)."""
        b = self.state.broker
        if b.policy_queue is None:
            uris: list[str] = []
            for r in [*b.requested.values(), *b.unrequested.values()]:
                if r["tam"] not in uris:
                    uris.append(r["tam"])
            if self.state.config.tam_uri and self.state.config.tam_uri not in uris:
                uris.insert(0, self.state.config.tam_uri)
            b.policy_queue = uris
        if not b.policy_queue:
            b.policy_queue = None
            self.state.save_broker()
            return None
        uri = b.policy_queue.pop(0)
        self.state.save_broker()
        return uri

    def process_error(self, tam_uri: str) -> None:
        """ProcessError: the Broker could not reach the TAM; remember it (requests stay pending)."""
        self.state.broker.last_error[tam_uri] = self.clock()
        self.state.save_broker()
