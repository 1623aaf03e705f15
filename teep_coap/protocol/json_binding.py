"""The TEEP engines behind the JSON/JWS binding (application/teep+json): an adapter at the boundary.

`TamEngine` and `AgentEngine` seal and open messages with CBOR + COSE through `protocol.wire`, with no
parameter to choose another encoding. This module subclasses both and changes only what touches the
bytes, so the whole session runs as JSON signed with JWS on the wire while every protocol decision
stays in the engines:

* outgoing: the model the engine decided on is encoded with the JSON twin (`encoding.json_codec`,
  written compactly) and signed with `security.jose` by the same key (flattened JWS; general JWS
  with one signature per key where the engine would send COSE_Sign). Where the engine returns
  already-sealed COSE (the TAM's QueryRequest), the COSE object is opened (it is ours: no trust
  question) and re-sealed as JWS with the matching key;
* incoming: the JWS is verified with the same trust the engine would use (the device key from the
  TAM store; the Agent's trust store), the JSON decoded into the model, and the engine's own handlers
  take it from there, with the same errors.

It reaches into private methods of the engines (`_verify`, `_sign_for`, `_on_query_request`,
`_on_update`, `_error`); a `wire` parameter on the engines would make it unnecessary.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from teep_coap.encoding.errors import TeepDecodeError
from teep_coap.model.codes import CoseAlg
from teep_coap.model.teep import QueryRequest, TeepMessage, Update
from teep_coap.protocol.agent import AgentEngine
from teep_coap.protocol.errors import InvalidMessage, TamFailure
from teep_coap.protocol.tam import TamEngine
from teep_coap.protocol.wire import Opened, looks_like_cose
from teep_coap.security.errors import SecurityError, UnknownKid, UnsupportedAlgorithm
from teep_coap.security.jose import ACCEPTED_JOSE_ALGS, JoseDecodeError, parse_json, sign_json, verify_json
from teep_coap.security.keys import SigningKey, load_verifying_key
from teep_coap.store.tam_db import Device

_LEGACY = {int(CoseAlg.ES256): int(CoseAlg.ESP256), int(CoseAlg.EDDSA): int(CoseAlg.ED25519)}


def encode_json(msg: TeepMessage) -> bytes:
    """The JSON twin of a message without insignificant whitespace (what goes inside the JWS)."""
    from teep_coap.encoding.json_codec import to_jsonable

    return json.dumps(to_jsonable(msg), separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def decode_json(data: bytes) -> TeepMessage:
    from teep_coap.encoding.json_codec import from_json

    return from_json(data)


def seal_json(msg: TeepMessage, keys: SigningKey | Sequence[SigningKey]) -> bytes:
    """JSON twin + JWS: flattened for one key, general (one signature per key) for several."""
    return sign_json(encode_json(msg), keys)


def _jose_names(cose_algs: Sequence[int]) -> list[str]:
    wanted = {_LEGACY.get(a, a) for a in cose_algs}
    return [name for name, alg in ACCEPTED_JOSE_ALGS.items() if alg in wanted]


def cose_to_jws(data: bytes, keys: Sequence[SigningKey]) -> bytes:
    """Re-seal a COSE_Sign1/COSE_Sign we produced as JWS with the same keys (by kid)."""
    from teep_coap.encoding.cbor_codec import decode
    from teep_coap.security.cose import inspect

    info = inspect(data)
    if info.payload is None:
        raise TamFailure("cannot re-seal a COSE object without payload")
    by_kid = {k.kid: k for k in keys}
    signers = [by_kid[s.kid] for s in info.signatures if s.kid in by_kid]
    if not signers:
        raise TamFailure("the COSE object was not signed by one of our keys")
    return seal_json(decode(info.payload), signers)


class JsonTamEngine(TamEngine):
    """A TamEngine whose messages are TEEP JSON signed with JWS."""

    def connect(self, transport_identity: str | None = None) -> bytes:
        return cose_to_jws(super().connect(transport_identity), self.config.keys)

    def receive(self, data: bytes, transport_identity: str | None = None) -> bytes | None:
        answer = super().receive(data, transport_identity)
        if answer is not None and looks_like_cose(answer):  # a new QueryRequest (renegotiation)
            return cose_to_jws(answer, self.config.keys)
        return answer

    def _sign_for(self, device: Device, msg: TeepMessage) -> bytes:
        key = self.config.key_for_alg(device.alg)
        if key is None:
            raise TamFailure(f"no TAM key for the device's algorithm {device.alg}")
        return seal_json(msg, key)

    def _verify(self, data: bytes) -> tuple[Opened, Device]:
        """The JWS twin of TamEngine._verify: find the device by kid (or alg), verify, decode."""
        try:
            parsed = parse_json(data)
        except SecurityError as exc:
            raise InvalidMessage(f"not a JWS-signed TEEP message: {exc}") from None
        if parsed.general or len(parsed.signatures) != 1:
            raise InvalidMessage("a device must sign with one signature (flattened JWS)")
        sig = parsed.signatures[0]
        alg = ACCEPTED_JOSE_ALGS.get(sig.alg) if isinstance(sig.alg, str) else None
        if alg is None:
            raise InvalidMessage(f"JWS algorithm {sig.alg!r} is not supported")
        kid = sig.kid
        if kid is not None:
            device = self.store.device_by_kid(kid)
            if device is None:
                raise InvalidMessage(f"unknown signer: no device registered with kid {kid.hex()}")
            candidates = [device]
        else:
            candidates = self.store.devices_with_alg([alg] + [k for k, v in _LEGACY.items() if v == alg])
            if not candidates:
                raise InvalidMessage("no kid and no registered device uses that algorithm")
        keys = {}
        for dev in candidates:
            try:
                keys[dev.id] = load_verifying_key(dev.public_key)
            except SecurityError as exc:
                raise TamFailure(f"stored key of device {dev.kid.hex()} is unreadable: {exc}") from exc
        try:
            verified = verify_json(data, list(keys.values()))
            message = decode_json(verified.payload)
        except SecurityError as exc:
            raise InvalidMessage(f"signature check failed: {exc}") from None
        except TeepDecodeError as exc:
            raise InvalidMessage(f"malformed TEEP JSON message: {exc}") from None
        opened = Opened(message, verified.payload, alg, kid, verified.key, "JWS")
        for dev in candidates:
            if keys[dev.id] == verified.key:
                return opened, dev
        raise TamFailure("verified key matches no candidate device")


class JsonAgentEngine(AgentEngine):
    """An AgentEngine whose messages are TEEP JSON signed with JWS."""

    def receive(self, data: bytes) -> bytes | None:
        outcome = self._process_json(data)
        self.last_response, self.last_note = outcome.response, outcome.note
        if outcome.response is None:
            return None
        return seal_json(outcome.response, self.state.key)

    process_teep_message = receive

    def _process_json(self, data: bytes) -> Any:
        from teep_coap.model.codes import ErrorCode

        if not data:
            return self._error(ErrorCode.ERR_PERMANENT_ERROR, "empty message")
        try:
            verified = verify_json(data, self.state.trust, allowed_algs=_jose_names(self._accepted_algs()))
            msg = decode_json(verified.payload)
        except UnsupportedAlgorithm as exc:
            return self._error(
                ErrorCode.ERR_UNSUPPORTED_CIPHER_SUITES,
                f"no signature with a supported cipher suite: {exc}",
                supported_teep_cipher_suites=self.supported_suites,
            )
        except UnknownKid as exc:
            return self._error(ErrorCode.ERR_PERMANENT_ERROR, f"signer not trusted: {exc}")
        except JoseDecodeError as exc:
            return self._error(ErrorCode.ERR_PERMANENT_ERROR, f"malformed JWS: {exc}")
        except SecurityError as exc:
            return self._error(ErrorCode.ERR_PERMANENT_ERROR, f"signature not verified: {exc}")
        except TeepDecodeError as exc:
            return self._error(ErrorCode.ERR_PERMANENT_ERROR, f"malformed TEEP message: {exc}")
        if isinstance(msg, QueryRequest):
            return self._on_query_request(msg, verified.key.kid)
        if isinstance(msg, Update):
            return self._on_update(msg)
        return self._error(
            ErrorCode.ERR_PERMANENT_ERROR, f"an Agent does not accept {type(msg).__name__}", token=msg.token
        )


def json_teep_world(profile: Any, root: Path, payload_size: int, **options: Any) -> Any:
    """The size scenario's world with both engines speaking TEEP JSON/JWS."""
    from teep_coap.bench.scenario import teep_world
    from teep_coap.protocol.agentstate import AgentState

    world = teep_world(profile, root, payload_size, **options)
    world.tam = JsonTamEngine(world.tam.config, world.tam.store, clock=world.tam.clock, rng=world.tam.rng)
    world.agent = JsonAgentEngine(AgentState.load(world.agent_dir))
    return world
