"""The OTrP Agent (Broker + simulated TEE), sans-IO: one OTrP request in, the signed response out.

The simulated TEE keeps its Security Domains, SP AIK keys and Trusted Application binaries in a state
folder (`state.json` plus files), so a restart keeps what was installed. Every answer follows the draft:
TEE-signed responses with `status` "fail" and a `reason` for the §6/§8 errors, unsigned Broker errors
(ERR_AGENT_TEE_UNKNOWN) when the request is for another TEE. Input that cannot even be recognized as an
OTrP request raises `OtrpDecodeError` (the transport answers 400 / 4.00).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from teep_coap.otrp.model import (
    OTRP_VERSION,
    RESPONSE_FOR,
    BrokerError,
    CreateSDRequest,
    CreateSDResponse,
    CreateSDResultContent,
    DeleteSDRequest,
    DeleteTARequest,
    Dsi,
    DsiDocument,
    GetDeviceStateRequest,
    GetDeviceTEEStateResponse,
    InstallTARequest,
    OtrpAlgorithmError,
    OtrpDecodeError,
    OtrpError,
    OtrpErrorCode,
    OtrpMessage,
    OtrpProtocolError,
    OtrpSecurityError,
    OtrpUntrustedError,
    Reason,
    ResultContent,
    SdInfo,
    SdList,
    TaInfo,
    TeeAik,
    TeeInfo,
    UpdateSDRequest,
    UpdateSDResponse,
    UpdateSDResultContent,
    UpdateTARequest,
)
from teep_coap.otrp.protocol.wire import Encoding, OtrpCodec, codec_for, dsi_digest
from teep_coap.otrp.security.jose import Sealed
from teep_coap.otrp.security.pki import (
    OtrpIdentity,
    PrivateKey,
    PublicKey,
    cert_public_key,
    common_name,
    generate_key,
    load_cert_der,
    public_der,
    signature_alg,
)

E = OtrpErrorCode
MAX_SEEN = 256  # (rid, tid) pairs remembered per TAM against replays


class _Fail(Exception):
    """Internal: abort the command with a TEE-signed failure."""

    def __init__(self, code: OtrpErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass
class OtrpAgentConfig:
    """The TEE's identity, the TAM trust anchors it embeds, and its limits."""

    identity: OtrpIdentity
    tam_anchors: tuple[x509.Certificate, ...]
    encoding: Encoding = "json"
    tee_name: str | None = None  # default: the CN of the TEE certificate
    tee_version: str = "1.0"
    spaik_type: str = "RSA"  # "RSA" (the draft's MUST) or "ECC"
    max_tas: int = 64  # more ⇒ ERR_TEE_RESOURCE_FULL
    max_ta_size: int = 64 * 1024 * 1024

    @property
    def name(self) -> str:
        return self.tee_name or self.identity.name


@dataclass
class OtrpAgentEngine:
    """ProcessOTrPMessage of the Broker with the simulated TEE behind it."""

    config: OtrpAgentConfig
    state_dir: Path
    keygen: Callable[[str], PrivateKey] = field(default=generate_key, kw_only=True)
    last_sent: Sealed | None = field(default=None, init=False)
    last_sent_name: str = field(default="", init=False)
    codec: OtrpCodec = field(init=False)
    _spaik_cache: dict[str, PrivateKey] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        self.state_dir = Path(self.state_dir)
        self.codec = codec_for(self.config.encoding)
        (self.state_dir / "ta").mkdir(parents=True, exist_ok=True)
        (self.state_dir / "spaik").mkdir(parents=True, exist_ok=True)
        self._state = self._load()

    # ------------------------------------------------------------------ state on disk

    def _load(self) -> dict[str, Any]:
        path = self.state_dir / "state.json"
        if not path.exists():
            return {"sds": {}, "spaik": {}, "tam_certs": [], "dsihash": {}}
        try:
            state: dict[str, Any] = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise OtrpError(f"agent state {path} is unreadable: {exc}") from None
        for key in ("sds", "spaik", "tam_certs", "dsihash"):
            state.setdefault(key, {} if key != "tam_certs" else [])
        return state

    def _save(self) -> None:
        path = self.state_dir / "state.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self._state, indent=1, sort_keys=True))
        os.replace(tmp, path)

    @staticmethod
    def _fname(*parts: str) -> str:
        return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:32]

    def _ta_path(self, sdname: str, taid: str) -> Path:
        return self.state_dir / "ta" / f"{self._fname(sdname, taid)}.bin"

    def installed(self) -> dict[str, dict[str, bytes]]:
        """{sdname: {taid: TA binary}} as stored on disk (for tests and the CLI)."""
        return {
            sd: {taid: self._ta_path(sd, taid).read_bytes() for taid in info["tas"]}
            for sd, info in self._state["sds"].items()
        }

    def _spaik_key(self, spid: str) -> PrivateKey | None:
        entry = self._state["spaik"].get(spid)
        if entry is None:
            return None
        cached = self._spaik_cache.get(entry["file"])
        if cached is None:
            pem = (self.state_dir / "spaik" / entry["file"]).read_bytes()
            loaded = serialization.load_pem_private_key(pem, None)
            if not isinstance(loaded, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
                raise OtrpError(f"SP AIK of {spid!r} is neither RSA nor EC")
            cached = self._spaik_cache[entry["file"]] = loaded
        return cached

    def _new_spaik(self, spid: str) -> PrivateKey:
        key = self.keygen(self.config.spaik_type)
        old = self._state["spaik"].get(spid)
        name = f"{self._fname(spid, os.urandom(8).hex())}.pem"
        pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        path = self.state_dir / "spaik" / name
        path.write_bytes(pem)
        path.chmod(0o600)
        self._spaik_cache[name] = key
        if old is not None:  # a renewed SP AIK replaces the old one
            (self.state_dir / "spaik" / old["file"]).unlink(missing_ok=True)
            self._spaik_cache.pop(old["file"], None)
        self._state["spaik"][spid] = {"file": name, "type": "RSA" if signature_alg(key) == "RS256" else "ECC"}
        return key

    def _drop_spaik_if_unused(self, spid: str) -> None:
        if any(sd["spid"] == spid for sd in self._state["sds"].values()):
            return
        entry = self._state["spaik"].pop(spid, None)
        if entry is not None:
            (self.state_dir / "spaik" / entry["file"]).unlink(missing_ok=True)

    # ------------------------------------------------------------------ entry point

    def receive(self, data: bytes) -> bytes | None:
        """One OTrP request → the signed response (or an unsigned Broker error)."""
        self.last_sent = None
        tam_keys = [cert_public_key(load_cert_der(base64.b64decode(c))) for c in self._state["tam_certs"]]
        try:
            opened = self.codec.open(
                data, self.config.identity.private_key, verify_keys=tam_keys, anchors=self.config.tam_anchors
            )
        except OtrpError as exc:
            return self._refuse_unopened(data, exc)
        msg = opened.msg
        if not isinstance(msg, OtrpMessage) or not msg.IS_REQUEST:
            raise OtrpProtocolError(f"the Agent expects an OTrP request, got {type(msg).__name__}")
        tam_cert = opened.signer_cert
        if tam_cert is None and opened.signer_key is not None:
            tam_cert = self._cached_cert_for(opened.signer_key)
        if tam_cert is None:
            raise OtrpSecurityError("cannot tell which TAM signed the request")
        tam_key = cert_public_key(load_cert_der(tam_cert))
        tamid = common_name(load_cert_der(tam_cert))
        if self._seen(tamid, msg.rid, msg.tid):
            # "(rid, tid) must be unique" [draft]: a replayed command is refused, never re-applied
            return self._fail(msg, tam_key, E.ERR_REQUEST_INVALID, "this (rid, tid) was already processed")
        if msg.ver != OTRP_VERSION:
            return self._fail(msg, tam_key, E.ERR_UNSUPPORTED_MSG_VERSION, f"version {msg.ver!r} is not 1.0")
        if isinstance(msg, GetDeviceStateRequest):
            return self._get_device_state(msg, tam_cert, tam_key, tamid)
        tee = getattr(msg, "tee", None)
        did = getattr(getattr(msg, "content", None), "did", None)
        if tee != self.config.name or (did is not None and did != self.config.identity.did):
            return self._broker_error(msg, E.ERR_AGENT_TEE_UNKNOWN)
        # a failed command leaves no trace: the in-memory state goes back to this snapshot
        snapshot = json.loads(json.dumps(self._state))
        try:
            content = getattr(msg, "content", None)
            if getattr(content, "tamid", tamid) != tamid:
                raise _Fail(E.ERR_TAM_NOT_AUTHORIZED, "tamid is not the signer's identity")
            stored = self._state["dsihash"].get(tamid)
            dsihash = getattr(msg, "dsihash", None)
            if dsihash is not None and (stored is None or base64.b64decode(stored) != dsihash):
                raise _Fail(E.ERR_DEV_STATE_MISMATCH, "dsihash is not the hash of the DSI last returned")
            handler = {
                CreateSDRequest: self._create_sd,
                UpdateSDRequest: self._update_sd,
                DeleteSDRequest: self._delete_sd,
                InstallTARequest: self._install_ta,
                UpdateTARequest: self._update_ta,
                DeleteTARequest: self._delete_ta,
            }[type(msg)]
            extra = handler(msg, tamid)  # type: ignore[operator]
        except _Fail as fail:
            self._state = snapshot
            return self._fail(msg, tam_key, fail.code, fail.message)
        except OSError as exc:
            self._state = snapshot
            return self._fail(msg, tam_key, E.ERR_TEE_FAIL, f"TEE storage failure: {exc.strerror}")
        self._save()
        dsi = self._dsi_for(tamid) if getattr(msg, "nextdsi", False) else None
        if dsi is not None:
            self._remember_dsi(tamid, dsi)
        return self._respond(type(msg), msg.rid, msg.tid, tam_key, "pass", None, extra, dsi)

    def _seen(self, tamid: str, rid: str, tid: str) -> bool:
        """Remember the last `MAX_SEEN` (rid, tid) pairs of each TAM; True if this one is a repeat."""
        seen: list[str] = self._state.setdefault("seen", {}).setdefault(tamid, [])
        key = f"{tid}\0{rid}"
        if key in seen:
            return True
        seen.append(key)
        del seen[:-MAX_SEEN]
        self._save()
        return False

    # ------------------------------------------------------------------ answers

    def _cached_cert_for(self, key: PublicKey) -> bytes | None:
        wanted = public_der(key)
        for c in self._state["tam_certs"]:
            der = base64.b64decode(c)
            if public_der(cert_public_key(load_cert_der(der))) == wanted:
                return der
        return None

    def _refuse_unopened(self, data: bytes, exc: OtrpError) -> bytes:
        cls, rid, tid = self.codec.peek(data)
        if cls is None or cls not in RESPONSE_FOR:
            if isinstance(exc, OtrpDecodeError):
                raise exc
            raise OtrpDecodeError("message", f"not an OTrP request ({exc})") from None
        code = E.ERR_REQUEST_INVALID  # bad structure, signature or decryption failure (§8)
        if isinstance(exc, OtrpUntrustedError):
            code = E.ERR_TAM_NOT_TRUSTED
        elif isinstance(exc, OtrpAlgorithmError):
            code = E.ERR_UNSUPPORTED_CRYPTO_ALG
        text = str(exc)
        # no trusted TAM key: the reason goes at TBS level, unencrypted (like GetDeviceState failures)
        reason = Reason(error_code=code, error_message=text[:200])
        return self._respond(cls, rid, tid, None, "fail", reason, {}, None)

    def _broker_error(self, msg: OtrpMessage, code: OtrpErrorCode) -> bytes:
        err = BrokerError(errcode=code, rid=msg.rid, tid=msg.tid)
        self.last_sent = Sealed(self.codec.encode_unsigned(err), b"")
        self.last_sent_name = err.OUTER_NAME
        return self.last_sent.wire

    def _fail(self, msg: OtrpMessage, tam_key: PublicKey | None, code: OtrpErrorCode, text: str) -> bytes:
        reason = Reason(error_code=code, error_message=text)
        return self._respond(type(msg), msg.rid, msg.tid, tam_key, "fail", reason, {}, None)

    def _respond(
        self,
        request_cls: type[OtrpMessage],
        rid: str,
        tid: str,
        tam_key: PublicKey | None,
        status: str,
        reason: Reason | None,
        extra: dict[str, Any],
        dsi: Dsi | None,
    ) -> bytes:
        cls = RESPONSE_FOR[request_cls]
        did = self.config.identity.did
        response: OtrpMessage
        if cls is GetDeviceTEEStateResponse:
            response = GetDeviceTEEStateResponse(
                rid=rid,
                tid=tid,
                status=status,
                reason=reason,
                supportedsigalgs=extra.get("supportedsigalgs"),
            )
        elif tam_key is None:
            response = cls(rid=rid, tid=tid, status=status, reason=reason)  # type: ignore[call-arg]
        else:
            content_cls = {
                CreateSDResponse: CreateSDResultContent,
                UpdateSDResponse: UpdateSDResultContent,
            }.get(cls, ResultContent)
            content = content_cls(did=did, reason=reason, dsi=dsi, **extra)
            response = cls(rid=rid, tid=tid, status=status, content=content)  # type: ignore[call-arg]
        self.last_sent = self.codec.seal(response, self.config.identity, tam_key)
        self.last_sent_name = (
            response.OUTER_NAME if cls is not GetDeviceTEEStateResponse else "GetDeviceStateResponse"
        )
        return self.last_sent.wire

    # ------------------------------------------------------------------ DSI

    def _dsi_for(self, tamid: str) -> Dsi:
        """The DSI as this TAM may see it: only the SDs it owns, and the SP AIKs of their SPs."""
        sds = [(name, sd) for name, sd in sorted(self._state["sds"].items()) if sd["owner"] == tamid]
        spids = sorted({sd["spid"] for _, sd in sds})
        aiks = []
        for spid in spids:
            key = self._spaik_key(spid)
            if key is not None:
                aiks.append(
                    TeeAik(
                        spaik=public_der(key.public_key()),
                        spaiktype=self._state["spaik"][spid]["type"],
                        spid=spid,
                    )
                )
        ident = self.config.identity
        return Dsi(
            tee=TeeInfo(
                name=self.config.name,
                ver=self.config.tee_version,
                cert=ident.cert_der,
                cacert=ident.chain_der[1:],
                sdlist=SdList(
                    cnt=len(sds),
                    sd=tuple(
                        SdInfo(
                            name=name,
                            spid=sd["spid"],
                            talist=tuple(TaInfo(taid=t) for t in sorted(sd["tas"])),
                        )
                        for name, sd in sds
                    ),
                ),
                teeaiklist=tuple(aiks),
            )
        )

    def _remember_dsi(self, tamid: str, dsi: Dsi) -> None:
        digest = dsi_digest(self.config.encoding, DsiDocument(dsi=dsi))
        self._state["dsihash"][tamid] = base64.b64encode(digest).decode()
        self._save()

    # ------------------------------------------------------------------ commands

    def _get_device_state(
        self, msg: GetDeviceStateRequest, tam_cert: bytes, tam_key: PublicKey, tamid: str
    ) -> bytes:
        own = self.config.identity.sig_alg
        if msg.supportedsigalgs is not None and own not in msg.supportedsigalgs:
            reason = Reason(
                error_code=E.ERR_UNSUPPORTED_CRYPTO_ALG, error_message=f"this TEE signs with {own}"
            )
            return self._respond(
                type(msg), msg.rid, msg.tid, tam_key, "fail", reason, {"supportedsigalgs": (own,)}, None
            )
        cached = base64.b64encode(tam_cert).decode()
        if cached not in self._state["tam_certs"]:
            self._state["tam_certs"].append(cached)
        dsi = self._dsi_for(tamid)
        self._remember_dsi(tamid, dsi)
        response = GetDeviceTEEStateResponse(
            rid=msg.rid, tid=msg.tid, signerreq=False, edsi=DsiDocument(dsi=dsi)
        )  # signerreq false: the TAM certificate is cached, later requests may omit x5c
        self.last_sent = self.codec.seal(response, self.config.identity, tam_key)
        self.last_sent_name = "GetDeviceStateResponse"
        return self.last_sent.wire

    def _sd(self, sdname: str, tamid: str) -> dict[str, Any]:
        sd: dict[str, Any] | None = self._state["sds"].get(sdname)
        if sd is None:
            raise _Fail(E.ERR_SD_NOT_FOUND, f"no security domain {sdname!r}")
        if sd["owner"] != tamid:
            raise _Fail(E.ERR_TAM_NOT_AUTHORIZED, f"security domain {sdname!r} belongs to another TAM")
        return sd

    @staticmethod
    def _check_spcert(der: bytes) -> str:
        try:
            load_cert_der(der, "spcert")
        except OtrpSecurityError as exc:
            raise _Fail(E.ERR_SPCERT_INVALID, str(exc)) from None
        return base64.b64encode(der).decode()

    def _create_sd(self, msg: CreateSDRequest, tamid: str) -> dict[str, Any]:
        c = msg.content
        if c.sdname in self._state["sds"]:
            raise _Fail(E.ERR_SD_ALREADY_EXISTS, f"security domain {c.sdname!r} exists")
        spcert = self._check_spcert(c.spcert)
        extra: dict[str, Any] = {"sdname": c.sdname}
        if self._spaik_key(c.spid) is None:
            extra["teespaik"] = public_der(self._new_spaik(c.spid).public_key())
        self._state["sds"][c.sdname] = {"spid": c.spid, "owner": tamid, "spcerts": [spcert], "tas": {}}
        return extra

    def _update_sd(self, msg: UpdateSDRequest, tamid: str) -> dict[str, Any]:
        c = msg.content
        sd = self._sd(c.sdname, tamid)
        if sd["spid"] != c.spid:
            raise _Fail(E.ERR_REQUEST_INVALID, f"security domain {c.sdname!r} is not of SP {c.spid!r}")
        ch = c.changes
        for der in ch.spcert or ():
            sd["spcerts"].append(self._check_spcert(der))
        if ch.deloldspcert:
            drop = set(ch.deloldspcert)
            sd["spcerts"] = [
                s for s in sd["spcerts"] if hashlib.sha256(base64.b64decode(s)).digest() not in drop
            ]
        extra: dict[str, Any] = {}
        if ch.newsdname is not None and ch.newsdname != c.sdname:
            if ch.newsdname in self._state["sds"]:
                raise _Fail(E.ERR_SDNAME_ALREADY_USED, f"security domain name {ch.newsdname!r} is in use")
            for taid in sd["tas"]:
                os.replace(self._ta_path(c.sdname, taid), self._ta_path(ch.newsdname, taid))
            self._state["sds"][ch.newsdname] = self._state["sds"].pop(c.sdname)
        old_spid = sd["spid"]
        if ch.newspid is not None:
            sd["spid"] = ch.newspid
        if ch.renewteespaik or (ch.newspid is not None and self._spaik_key(ch.newspid) is None):
            key = self._new_spaik(sd["spid"])
            extra["teespaik"] = public_der(key.public_key())
            extra["teespaiktype"] = self._state["spaik"][sd["spid"]]["type"]
        if old_spid != sd["spid"]:
            self._drop_spaik_if_unused(old_spid)
        return extra

    def _delete_sd(self, msg: DeleteSDRequest, tamid: str) -> dict[str, Any]:
        c = msg.content
        sd = self._sd(c.sdname, tamid)
        if sd["tas"] and not c.deleteta:
            raise _Fail(
                E.ERR_SD_NOT_EMPTY, f"security domain {c.sdname!r} still holds {len(sd['tas'])} TA(s)"
            )
        for taid in sd["tas"]:
            self._ta_path(c.sdname, taid).unlink(missing_ok=True)
        del self._state["sds"][c.sdname]
        self._drop_spaik_if_unused(sd["spid"])
        return {}

    def _open_ta(
        self, msg: InstallTARequest | UpdateTARequest, sd: dict[str, Any]
    ) -> tuple[bytes | None, bytes | None]:
        if sd["spid"] != msg.content.spid:
            raise _Fail(E.ERR_TA_INVALID, f"SP {msg.content.spid!r} is not registered with this SD")
        key = self._spaik_key(sd["spid"])
        if key is None:
            raise _Fail(E.ERR_TA_INVALID, "no SP AIK for this SP")
        try:
            ta, pdata = self.codec.open_ta(msg.encrypted_ta, key)
        except OtrpError as exc:
            raise _Fail(E.ERR_TA_INVALID, f"TA does not decrypt: {exc}") from None
        if ta is not None and len(ta) > self.config.max_ta_size:
            raise _Fail(E.ERR_TEE_RESOURCE_FULL, "TA larger than this TEE accepts")
        if msg.content.spcert is not None:
            sd["spcerts"].append(self._check_spcert(msg.content.spcert))
        return ta, pdata

    def _store_ta(
        self, sd: dict[str, Any], sdname: str, taid: str, ta: bytes | None, pdata: bytes | None
    ) -> None:
        path = self._ta_path(sdname, taid)
        if ta is not None:
            tmp = path.with_suffix(".tmp")
            tmp.write_bytes(ta)
            os.replace(tmp, path)
        entry = sd["tas"].setdefault(taid, {})
        if ta is not None:
            entry["sha256"] = hashlib.sha256(ta).hexdigest()
        if pdata is not None:
            entry["pdata"] = base64.b64encode(pdata).decode()

    def _install_ta(self, msg: InstallTARequest, tamid: str) -> dict[str, Any]:
        c = msg.content
        sd = self._sd(c.sdname, tamid)
        if c.taid in sd["tas"]:
            raise _Fail(E.ERR_TA_ALREADY_INSTALLED, f"TA {c.taid!r} is installed")
        if sum(len(s["tas"]) for s in self._state["sds"].values()) >= self.config.max_tas:
            raise _Fail(E.ERR_TEE_RESOURCE_FULL, f"this TEE holds at most {self.config.max_tas} TAs")
        ta, pdata = self._open_ta(msg, sd)
        self._store_ta(sd, c.sdname, c.taid, ta, pdata)
        return {}

    def _update_ta(self, msg: UpdateTARequest, tamid: str) -> dict[str, Any]:
        c = msg.content
        sd = self._sd(c.sdname, tamid)
        if c.taid not in sd["tas"]:
            raise _Fail(E.ERR_TA_NOT_FOUND, f"TA {c.taid!r} is not installed")
        ta, pdata = self._open_ta(msg, sd)
        self._store_ta(sd, c.sdname, c.taid, ta, pdata)
        return {}

    def _delete_ta(self, msg: DeleteTARequest, tamid: str) -> dict[str, Any]:
        c = msg.content
        sd = self._sd(c.sdname, tamid)
        if c.taid not in sd["tas"]:
            raise _Fail(E.ERR_TA_NOT_FOUND, f"TA {c.taid!r} is not installed")
        self._ta_path(c.sdname, c.taid).unlink(missing_ok=True)
        del sd["tas"][c.taid]  # personalization data goes with it
        return {}


__all__ = ["OtrpAgentConfig", "OtrpAgentEngine"]
