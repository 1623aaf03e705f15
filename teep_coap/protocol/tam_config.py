"""What a TAM is configured to ask for and accept, and the parameters of one QueryRequest it sent.

Kept apart from the engine (`protocol.tam`) because the stores, the CLI and the benchmarks build a
`TamConfig` without needing the engine's message handling.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from teep_coap.model.codes import CipherSuite, CoseType, DataItem, FreshnessMechanism, SuitCoseProfile
from teep_coap.model.teep import DEFAULT_SUIT_COSE_PROFILES, ComponentId, QueryRequest
from teep_coap.protocol import attestation as att
from teep_coap.protocol.errors import TamFailure
from teep_coap.protocol.policy import Policy
from teep_coap.security.keys import SigningKey, VerifyingKey
from teep_coap.security.suites import normalize_alg, normalize_suite

Clock = Callable[[], float]
Rng = Callable[[int], bytes]
# data-item bits as plain integers: `int & IntFlag` builds a flag object (about 0.5 µs), and the
# engine tests these bits a few times per session
ATTESTATION_BIT = int(DataItem.ATTESTATION)
TRUSTED_COMPONENTS_BIT = int(DataItem.TRUSTED_COMPONENTS)


def suite_of(key: SigningKey) -> CipherSuite:
    return ((int(CoseType.COSE_SIGN1), normalize_alg(key.alg)),)


@dataclass
class TamConfig:
    """What the TAM asks for and accepts. `keys` hold one signing key per supported cipher suite."""

    keys: tuple[SigningKey, ...]
    versions: tuple[int, ...] = (0,)
    suit_cose_profiles: tuple[SuitCoseProfile, ...] = DEFAULT_SUIT_COSE_PROFILES
    freshness_mechanisms: tuple[int, ...] = (int(FreshnessMechanism.NONCE),)
    attestation: str = att.BACKGROUND_CHECK  # none | background-check | passport
    data_items: int = int(DataItem.ATTESTATION | DataItem.TRUSTED_COMPONENTS)
    token_lifetime: float = 6 * 3600.0  # the draft recommends hours: Update processing can be slow
    max_outstanding_per_device: int = 4
    max_outstanding_unbound: int = 1000
    token_size: int = 16
    challenge_size: int = 16
    evidence_max_age: float = 300.0
    verifier_keys: tuple[VerifyingKey, ...] = ()  # passport: the Verifiers whose results we accept
    tam_attestation: bytes | None = None  # sent in a new QueryRequest after ERR_ATTESTATION_REQUIRED
    tam_attestation_format: str | None = None
    # fresh TAM attestation for the Agent's challenge (e.g. a Verifier's result); preferred over the above
    tam_attestation_provider: Callable[[bytes | None], bytes] | None = None
    token_with_attestation: bool = False  # the WG example sends token and challenge together
    strict_transport_identity: bool = False  # refuse devices without a registered transport identity
    policy: Policy | None = None
    keep_expired: float = 24 * 3600.0  # how long expired requests are kept to say "expired"
    # Seconds ended sessions (with their audit rows) are kept before the timer prunes them
    # (protocol.retention); None keeps them for ever.
    keep_history: float | None = None
    # With a secret, a QueryRequest to a peer without an authenticated transport identity stores
    # nothing: its token authenticates itself (protocol.stateless). None = every request is stored.
    stateless_secret: bytes | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if not self.keys:
            raise TamFailure("TamConfig needs at least one signing key")
        if self.attestation not in att.MODELS:
            raise TamFailure(f"attestation must be one of {att.MODELS}, not {self.attestation!r}")
        if self.keep_history is not None and not self.keep_history > 0:
            raise TamFailure(
                f"keep_history must be a positive number of seconds or None, not {self.keep_history}"
            )
        if self.attestation == att.NONE:
            self.data_items &= ~int(DataItem.ATTESTATION)

    @property
    def suites(self) -> tuple[CipherSuite, ...]:
        return tuple(suite_of(k) for k in self.keys)

    def initial_request(self, negotiated: dict[str, Any]) -> RequestParams:
        """The first QueryRequest's parameters: what was negotiated with the device, else ours."""
        suites = tuple(normalize_suite(s) for s in negotiated.get("suites", [])) or self.suites
        return RequestParams(
            versions=tuple(negotiated.get("versions", self.versions)),
            suites=suites,
            profiles=tuple(tuple(p) for p in negotiated.get("profiles", self.suit_cose_profiles)),
            freshness=tuple(negotiated.get("freshness", self.freshness_mechanisms)),
            data_items=self.data_items,
            attestation=self.attestation if self.data_items & ATTESTATION_BIT else att.NONE,
        )

    def query_keys(self, device_alg: int | None, suites: tuple[CipherSuite, ...]) -> list[SigningKey]:
        """The keys to sign a QueryRequest with: COSE_Sign1 once the device's suite is known, else
        one signature per offered suite (docs/protocol-facts.md §1.6)."""
        keys: list[SigningKey] = []
        if device_alg is not None and (k := self.key_for_alg(device_alg)) is not None:
            return [k]
        for suite in suites:
            k = self.key_for_alg(suite[0][1])
            if k is not None and k not in keys:
                keys.append(k)
        if not keys:
            raise TamFailure("no TAM key for any offered cipher suite")
        return keys

    def key_for_alg(self, alg: int) -> SigningKey | None:
        alg = normalize_alg(alg)
        for key in self.keys:
            if normalize_alg(key.alg) == alg:
                return key
        return None


@dataclass(frozen=True)
class RequestParams:
    """Parameters of a QueryRequest, kept in the outstanding row to check the answer against."""

    versions: tuple[int, ...]
    suites: tuple[CipherSuite, ...]
    profiles: tuple[SuitCoseProfile, ...]
    freshness: tuple[int, ...]
    data_items: int
    attestation: str
    round: int = 0

    def query_request(
        self,
        token: bytes | None,
        challenge: bytes | None,
        attestation_payload: bytes | None = None,
        attestation_format: str | None = None,
    ) -> QueryRequest:
        """The QueryRequest that asks for these parameters."""
        return QueryRequest(
            token=token,
            supported_freshness_mechanisms=None if self.freshness == (0,) else self.freshness,
            challenge=challenge,
            versions=self.versions,
            attestation_payload_format=attestation_format,
            attestation_payload=attestation_payload,
            supported_teep_cipher_suites=self.suites,
            supported_suit_cose_profiles=self.profiles,
            data_item_requested=self.data_items,
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "versions": list(self.versions),
            "suites": [[list(op) for op in s] for s in self.suites],
            "profiles": [list(p) for p in self.profiles],
            "freshness": list(self.freshness),
            "data_items": self.data_items,
            "attestation": self.attestation,
            "round": self.round,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> RequestParams:
        return cls(
            versions=tuple(d["versions"]),
            suites=tuple(normalize_suite(s) for s in d["suites"]),
            profiles=tuple(tuple(p) for p in d["profiles"]),
            freshness=tuple(d["freshness"]),
            data_items=int(d["data_items"]),
            attestation=str(d["attestation"]),
            round=int(d.get("round", 0)),
        )


def wants_challenge(req: RequestParams) -> bool:
    """A QueryRequest carries a challenge when it asks for background-check evidence with nonces."""
    return bool(
        req.data_items & ATTESTATION_BIT
        and req.attestation == att.BACKGROUND_CHECK
        and FreshnessMechanism.NONCE in req.freshness
    )


def cid_json(cid: ComponentId) -> list[str]:
    return [p.hex() for p in cid]


def cid_from_json(parts: list[str]) -> ComponentId:
    return tuple(bytes.fromhex(p) for p in parts)


__all__ = [
    "ATTESTATION_BIT",
    "TRUSTED_COMPONENTS_BIT",
    "Clock",
    "RequestParams",
    "Rng",
    "TamConfig",
    "cid_from_json",
    "cid_json",
    "suite_of",
    "wants_challenge",
]
