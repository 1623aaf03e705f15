"""The TEEP Agent's state folder: keys, trusted TAM keys, configuration, components, broker state.

    DIR/agent.toml        configuration (identity claims, suites, versions, attestation model)
    DIR/key/              the Agent's TEEP signing key (private.pem, public.pem, ...)
    DIR/report-key/       the key that signs SUIT reports (must differ from the TEEP key)
    DIR/trust/            public keys of the TAMs this Agent obeys
    DIR/tc-signers/       public keys trusted to sign SUIT manifests (by default the TAM's key)
    DIR/verifier/         passport model only: the key of the (simulated, local) Verifier
    DIR/tam-verifiers/    optional: Verifiers whose Attestation Results about the TAM are accepted
    DIR/components/       the ComponentStore (installed Trusted Components; atomic on disk)
    DIR/broker.json       RequestTA / UnrequestTA / policy-check bookkeeping
    DIR/last-reports.cbor SUIT reports of the last Update (sent when a QueryRequest asks for them)

Every write goes to a temp file that replaces the old one (os.replace), so a crash leaves the old or
the new file, never half of one.
"""

from __future__ import annotations

import json
import os
import shutil
import tomllib
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cbor2

from teep_coap.model.codes import (
    PROFILE_ED25519_A128CTR,
    PROFILE_ED25519_CHACHA_POLY,
    PROFILE_ESP256_A128CTR,
    PROFILE_ESP256_A128GCM,
    CoseAlg,
    SuitCoseProfile,
)
from teep_coap.protocol import attestation as att
from teep_coap.protocol.errors import AgentStateError
from teep_coap.protocol.ports import AgentComponents
from teep_coap.security.errors import SecurityError
from teep_coap.security.keys import (
    SigningKey,
    VerifyingKey,
    generate_key,
    load_signing_key,
    load_verifying_key,
    write_key_files,
)
from teep_coap.security.truststore import TrustStore

CONFIG_FILE = "agent.toml"
BROKER_FILE = "broker.json"
REPORTS_FILE = "last-reports.cbor"


def write_atomic(path: Path, data: bytes, *, durable: bool = True) -> None:
    """Write via a temp file in the same folder (+ fsync when `durable`) + os.replace: a crash leaves
    the old or the new file. Without fsync a power loss may lose the new content, never mix them."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        if durable:
            os.fsync(fh.fileno())
    os.replace(tmp, path)


def _profiles_for(alg: int) -> tuple[SuitCoseProfile, ...]:
    if alg in (int(CoseAlg.ED25519), int(CoseAlg.EDDSA)):
        return (PROFILE_ED25519_A128CTR, PROFILE_ED25519_CHACHA_POLY)
    return (PROFILE_ESP256_A128CTR, PROFILE_ESP256_A128GCM)


@dataclass
class AgentConfig:
    """The simulated TEE's identity and what its Agent supports."""

    vendor_id: bytes
    class_id: bytes
    ueid: bytes
    oemid: bytes = bytes.fromhex("894823")
    hwmodel: bytes = b"teep-coap-sim"
    hwversion: str = "1.0"
    versions: tuple[int, ...] = (0,)
    freshness_mechanisms: tuple[int, ...] = (0,)
    suit_cose_profiles: tuple[SuitCoseProfile, ...] = ()
    attestation: str = att.BACKGROUND_CHECK  # background-check | passport
    require_tam_attestation: bool = False
    tam_uri: str | None = None
    accept_unsigned: bool = False  # testing only: process bare (unsigned) TEEP messages

    def to_toml(self) -> str:
        def hx(b: bytes) -> str:
            return f'"{b.hex()}"'

        lines = [
            "# TEEP Agent configuration (teep-coap); byte values in hex",
            f"vendor-id = {hx(self.vendor_id)}",
            f"class-id = {hx(self.class_id)}",
            f"ueid = {hx(self.ueid)}",
            f"oemid = {hx(self.oemid)}",
            f"hwmodel = {hx(self.hwmodel)}",
            f"hwversion = {json.dumps(self.hwversion)}",
            f"versions = {list(self.versions)}",
            f"freshness-mechanisms = {list(self.freshness_mechanisms)}",
            f"suit-cose-profiles = {[list(p) for p in self.suit_cose_profiles]}",
            f"attestation = {json.dumps(self.attestation)}  # background-check | passport",
            f"require-tam-attestation = {'true' if self.require_tam_attestation else 'false'}",
            f"accept-unsigned = {'true' if self.accept_unsigned else 'false'}",
        ]
        if self.tam_uri:
            lines.append(f"tam-uri = {json.dumps(self.tam_uri)}")
        return "\n".join(lines) + "\n"

    @classmethod
    def from_toml(cls, text: str, where: str) -> AgentConfig:
        try:
            d = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise AgentStateError(f"{where} is not valid TOML: {exc}") from exc
        known = {
            "vendor-id", "class-id", "ueid", "oemid", "hwmodel", "hwversion", "versions",
            "freshness-mechanisms", "suit-cose-profiles", "attestation", "require-tam-attestation",
            "tam-uri", "accept-unsigned",
        }  # fmt: skip
        extra = set(d) - known
        if extra:
            raise AgentStateError(f"{where}: unknown keys {sorted(extra)}")
        try:
            cfg = cls(
                vendor_id=bytes.fromhex(d["vendor-id"]),
                class_id=bytes.fromhex(d["class-id"]),
                ueid=bytes.fromhex(d["ueid"]),
                oemid=bytes.fromhex(d.get("oemid", "894823")),
                hwmodel=bytes.fromhex(d["hwmodel"]) if "hwmodel" in d else b"teep-coap-sim",
                hwversion=str(d.get("hwversion", "1.0")),
                versions=tuple(int(v) for v in d.get("versions", [0])),
                freshness_mechanisms=tuple(int(v) for v in d.get("freshness-mechanisms", [0])),
                suit_cose_profiles=tuple(tuple(int(x) for x in p) for p in d.get("suit-cose-profiles", [])),  # type: ignore[misc]
                attestation=str(d.get("attestation", att.BACKGROUND_CHECK)),
                require_tam_attestation=bool(d.get("require-tam-attestation", False)),
                tam_uri=d.get("tam-uri"),
                accept_unsigned=bool(d.get("accept-unsigned", False)),
            )
        except (KeyError, ValueError, TypeError) as exc:
            raise AgentStateError(f"{where}: missing or invalid field ({exc})") from exc
        if cfg.attestation not in (att.BACKGROUND_CHECK, att.PASSPORT):
            raise AgentStateError(f"{where}: attestation must be background-check or passport")
        return cfg


@dataclass
class BrokerState:
    """What RFC 9397's Broker-facing calls remember between runs."""

    requested: dict[str, dict[str, Any]] = field(default_factory=dict)  # cid key -> {cid, tam, min_seq}
    unrequested: dict[str, dict[str, Any]] = field(default_factory=dict)
    policy_queue: list[str] | None = None  # TAM URIs still to return in this policy-check round
    last_error: dict[str, float] = field(default_factory=dict)  # tam uri -> time of ProcessError
    tam_challenges: list[str] = field(default_factory=list)  # hex challenges sent with Error 7
    # An Update the Agent began and no TAM has confirmed since (its session did not end well): written
    # before the install, so the next run can say what was recovered: {token, before: {cid key: seq}};
    # None when every Update so far ended in a finished session.
    unconfirmed: dict[str, Any] | None = None

    def to_json(self) -> bytes:
        return json.dumps(
            {
                "requested": self.requested,
                "unrequested": self.unrequested,
                "policy_queue": self.policy_queue,
                "last_error": self.last_error,
                "tam_challenges": self.tam_challenges,
                "unconfirmed": self.unconfirmed,
            },
            indent=1,
            sort_keys=True,
        ).encode()

    @classmethod
    def from_json(cls, data: bytes, where: str) -> BrokerState:
        try:
            d = json.loads(data)
            return cls(
                requested=dict(d.get("requested", {})),
                unrequested=dict(d.get("unrequested", {})),
                policy_queue=d.get("policy_queue"),
                last_error=dict(d.get("last_error", {})),
                tam_challenges=[str(c) for c in d.get("tam_challenges", [])],
                unconfirmed=dict(d["unconfirmed"]) if d.get("unconfirmed") else None,
            )
        except (ValueError, TypeError, AttributeError) as exc:
            raise AgentStateError(f"{where} is damaged: {exc}") from exc


@dataclass
class AgentState:
    """Everything an AgentEngine needs, loaded from (and saved to) its folder."""

    root: Path
    config: AgentConfig
    key: SigningKey
    report_key: SigningKey
    trust: TrustStore
    tc_trust: TrustStore
    components: AgentComponents
    broker: BrokerState
    verifier_key: SigningKey | None = None
    tam_verifiers: TrustStore = field(default_factory=TrustStore)

    # ---- creation and loading ----

    @classmethod
    def init(
        cls,
        root: str | os.PathLike[str],
        tam_key: VerifyingKey | str | os.PathLike[str] | bytes,
        alg: str | int = "esp256",
        *,
        tc_signer_keys: list[VerifyingKey] | None = None,
        attestation: str = att.BACKGROUND_CHECK,
        tam_uri: str | None = None,
        vendor_id: bytes | None = None,
        class_id: bytes | None = None,
        ueid: bytes | None = None,
        key: SigningKey | None = None,
        open_components: Callable[[Path], AgentComponents],
    ) -> AgentState:
        """Create a new Agent folder (refuses a folder that already holds an Agent); see `load`."""

        path = Path(root)
        if (path / CONFIG_FILE).exists():
            raise AgentStateError(f"{path} already holds an Agent ({CONFIG_FILE} exists)")
        try:
            tam = tam_key if isinstance(tam_key, VerifyingKey) else load_verifying_key(tam_key)
            agent_key = key or generate_key(alg)
            report_key = generate_key(agent_key.alg)
            path.mkdir(parents=True, exist_ok=True)
            write_key_files(agent_key, path / "key")
            write_key_files(report_key, path / "report-key")
            for folder, keys in (("trust", [tam]), ("tc-signers", tc_signer_keys or [tam])):
                (path / folder).mkdir(exist_ok=True)
                for k in keys:
                    write_atomic(path / folder / f"{k.kid.hex()[:16]}.pem", k.to_pem())
            if attestation == att.PASSPORT:
                write_key_files(generate_key("esp256"), path / "verifier")
        except SecurityError as exc:
            raise AgentStateError(f"cannot create Agent keys: {exc}") from exc
        except OSError as exc:
            raise AgentStateError(f"cannot create Agent folder {path}: {exc.strerror or exc}") from exc
        config = AgentConfig(
            vendor_id=vendor_id or uuid.uuid5(uuid.NAMESPACE_DNS, "teep-coap.example").bytes,
            class_id=class_id or uuid.uuid5(uuid.NAMESPACE_DNS, "sim-tee.teep-coap.example").bytes,
            ueid=ueid or b"\x01" + agent_key.kid[:16],  # RAND type UEID derived from the key
            suit_cose_profiles=_profiles_for(agent_key.alg),
            attestation=attestation,
            tam_uri=tam_uri,
        )
        write_atomic(path / CONFIG_FILE, config.to_toml().encode())
        write_atomic(path / BROKER_FILE, BrokerState().to_json())
        (path / "components").mkdir(exist_ok=True)
        return cls.load(path, open_components)

    @classmethod
    def load(
        cls, root: str | os.PathLike[str], open_components: Callable[[Path], AgentComponents]
    ) -> AgentState:
        """Read an Agent folder; `open_components(DIR/components)` opens its component store (the
        caller picks the implementation: `teep_coap.store.agentdir.load_agent_state` uses the
        on-disk `ComponentStore`)."""
        path = Path(root)
        cfg_path = path / CONFIG_FILE
        try:
            config = AgentConfig.from_toml(cfg_path.read_text(encoding="utf-8"), str(cfg_path))
            key = load_signing_key(path / "key" / "private.pem")
            report_key = load_signing_key(path / "report-key" / "private.pem")
            trust = TrustStore.from_dir(path / "trust")
            tc_trust = TrustStore.from_dir(path / "tc-signers")
            verifier = (
                load_signing_key(path / "verifier" / "private.pem")
                if (path / "verifier" / "private.pem").exists()
                else None
            )
            tam_verifiers = (
                TrustStore.from_dir(path / "tam-verifiers")
                if (path / "tam-verifiers").is_dir()
                else TrustStore()
            )
            broker_path = path / BROKER_FILE
            broker = (
                BrokerState.from_json(broker_path.read_bytes(), str(broker_path))
                if broker_path.exists()
                else BrokerState()
            )
        except FileNotFoundError as exc:
            raise AgentStateError(f"{path} is not an Agent folder: {exc.filename} is missing") from exc
        except OSError as exc:
            raise AgentStateError(f"cannot read Agent folder {path}: {exc.strerror or exc}") from exc
        except SecurityError as exc:
            raise AgentStateError(f"Agent folder {path}: {exc}") from exc
        if key.kid == report_key.kid:
            raise AgentStateError(f"{path}: the SUIT report key must differ from the TEEP key")
        return cls(
            root=path,
            config=config,
            key=key,
            report_key=report_key,
            trust=trust,
            tc_trust=tc_trust,
            components=open_components(path / "components"),
            broker=broker,
            verifier_key=verifier,
            tam_verifiers=tam_verifiers,
        )

    # ---- persistence of the mutable parts ----

    def save_broker(self, *, durable: bool = True) -> None:
        write_atomic(self.root / BROKER_FILE, self.broker.to_json(), durable=durable)

    def save_reports(self, reports: list[bytes]) -> None:
        # diagnostics only (re-sent when a QueryRequest asks for suit-reports): no fsync needed
        write_atomic(self.root / REPORTS_FILE, cbor2.dumps(reports), durable=False)

    def last_reports(self) -> list[bytes]:
        try:
            data = cbor2.loads((self.root / REPORTS_FILE).read_bytes())
        except FileNotFoundError:
            return []
        except Exception as exc:  # a damaged local file: report it as such, whatever cbor2 raised
            raise AgentStateError(f"{self.root / REPORTS_FILE} is damaged: {exc}") from exc
        return [bytes(r) for r in data] if isinstance(data, list) else []

    def reset(self) -> None:
        """Remove every installed component (testing)."""
        shutil.rmtree(self.root / "components", ignore_errors=True)
        (self.root / "components").mkdir()
