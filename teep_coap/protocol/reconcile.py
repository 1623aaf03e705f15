"""What the device has and what it should get: the TAM's record brought in line with a device's
report, and the install/remove plan its policy gives.

Functions over the `TamRepository` port, apart from the engine's message handling (`protocol.tam`):
this is where the TAM decides, and the rules are in docs/engines.md.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from typing import Any

from teep_coap.model.codes import Label
from teep_coap.model.teep import ComponentId, QueryResponse, SystemPropertyClaims
from teep_coap.protocol.errors import InvalidMessage
from teep_coap.protocol.lru import LruCache
from teep_coap.protocol.ports import TamRepository
from teep_coap.protocol.records import Device, DeviceComponent, Outstanding, component_key
from teep_coap.protocol.tam_config import cid_from_json
from teep_coap.security.suit.codec import parse_envelope
from teep_coap.security.suit.errors import SuitError
from teep_coap.security.suit.report import parse_report

log = logging.getLogger("teep_coap.protocol.tam")

MAX_LIST_ITEMS = (
    256  # per tc-list / requested-tc-list / unneeded-manifest-list: bounds what one device stores
)
DIGEST_CACHE_SIZE = 256  # manifest digests kept, keyed by the envelope bytes

_digests: LruCache[bytes, str | None] = LruCache(DIGEST_CACHE_SIZE)


def record_report(
    store: TamRepository,
    now: float,
    sid: int,
    device: Device,
    msg: QueryResponse,
    claims: dict[str, Any] | None,
    asked_tcs: bool,
) -> list[DeviceComponent]:
    """Store what the device reported; returns the device's components afterwards. Its installed
    set is replaced only when the request asked for trusted components (otherwise an absent
    tc-list says nothing)."""
    for name, items in (
        ("tc-list", msg.tc_list),
        ("requested-tc-list", msg.requested_tc_list),
        ("unneeded-manifest-list", msg.unneeded_manifest_list),
    ):
        if items is not None and len(items) > MAX_LIST_ITEMS:
            raise InvalidMessage(f"{name} has {len(items)} entries, more than {MAX_LIST_ITEMS}")
    # First: on PostgreSQL the touch locks the device's row, which set_device_components needs anyway.
    store.touch_device(device.id, now, attested_claims=claims)
    installed: dict[ComponentId, int | None] | None = None
    if asked_tcs:
        installed = reconcile(store, now, sid, device, msg.tc_list or (), claims)
    wanted = {tuple(r.component_id): r.tc_manifest_sequence_number for r in msg.requested_tc_list or ()}
    unneeded = [tuple(c) for c in msg.unneeded_manifest_list or ()]
    return store.set_device_components(device.id, now, installed=installed, wanted=wanted, unneeded=unneeded)


def reconcile(
    store: TamRepository,
    now: float,
    sid: int,
    device: Device,
    tc_list: Sequence[SystemPropertyClaims],
    claims: dict[str, Any] | None,
) -> dict[ComponentId, int | None]:
    """What the device has, per its report: the truth the TAM's record is brought in line with.

    Each tc-list entry's tc-manifest-sequence-number replaces the recorded one (higher after a lost
    Success, lower after a device restored from backup: the TAM then offers its newest again, and
    the Agent never accepts anything lower than it holds). Where the report disagrees with the
    record and appraised evidence names the component's manifest digest, the catalog version with
    that digest (among the reported and the recorded one) wins over the tc-list. A version the
    catalog does not know is recorded as reported and audited; it only ever stops the TAM from
    offering something not newer (docs/engines.md).
    """
    if not tc_list:
        return {}  # nothing installed: no record to read (the hot path of a first session)
    recorded = {component_key(c.component_id): c.installed_seq for c in store.device_components(device.id)}
    attested: dict[str, str] | None = None
    out: dict[ComponentId, int | None] = {}
    for entry in tc_list:
        cid = tuple(entry.component_id)
        seq = reported_seq(entry)
        before = recorded.get(component_key(cid))
        if (seq is not None and seq == before) or (seq is None and claims is None):
            out[cid] = seq  # agrees, or nothing to reconcile with (None keeps the recorded number)
            continue
        if claims is not None:
            attested = attested if attested is not None else attested_digests(claims)
            digest = attested.get(".".join(p.hex() for p in cid))
            if digest is not None:
                # Only the versions the two sides name (all of them when the device names none):
                # a device cannot make the TAM hash its whole catalog in every session.
                hints = None if seq is None else [n for n in (seq, before) if n is not None and n >= 0]
                version = next(
                    (
                        e
                        for e in store.component_versions(cid, hints)
                        if hashlib.sha256(e.envelope).hexdigest() == digest
                    ),
                    None,
                )
                if version is None:
                    store.audit(
                        sid, now, "unknown-manifest", f"{cid_text(cid)} digest={digest[:16]} seq={seq}"
                    )
                else:
                    if seq is not None and version.sequence_number != seq:
                        store.audit(
                            sid,
                            now,
                            "tc-list-disagrees",
                            f"{cid_text(cid)} reported={seq} attested={version.sequence_number}",
                        )
                    seq = version.sequence_number
        if seq != before:
            log.info("device %s: %s recorded %s, device has %s", device.kid.hex(), cid_text(cid), before, seq)
            store.audit(sid, now, "reconciled", f"{cid_text(cid)} recorded={before} device={seq}")
        out[cid] = seq
    return out


def plan(
    store: TamRepository, device: Device, components: Sequence[DeviceComponent] | None = None
) -> tuple[list[tuple[ComponentId, int, bytes]], list[ComponentId]]:
    """What policy says this device should get and lose now (`components`: the device's, if the
    caller has just read them)."""
    if components is None:
        components = store.device_components(device.id)
    have = {component_key(c.component_id): c for c in components}
    install: list[tuple[ComponentId, int, bytes]] = []
    remove: list[ComponentId] = []
    catalog = {component_key(e.component_id): e for e in store.latest_components()}
    for key, entry in catalog.items():
        dc = have.get(key)
        installed = dc is not None and dc.installed_seq is not None
        if entry.audience == "delete":
            if installed:
                remove.append(entry.component_id)
            continue
        if dc is not None and dc.unneeded:
            if installed and entry.audience != "all":
                remove.append(entry.component_id)
            continue
        wanted = entry.audience == "all" or (dc is not None and dc.wanted)
        if not wanted:
            continue
        if (
            dc is not None
            and dc.wanted
            and dc.wanted_min_seq is not None
            and entry.sequence_number < dc.wanted_min_seq
        ):
            log.info(
                "device %s wants %s >= %d; catalog has %d",
                device.kid.hex(),
                entry.name,
                dc.wanted_min_seq,
                entry.sequence_number,
            )
            continue
        if not installed or (
            dc is not None and dc.installed_seq is not None and 0 <= dc.installed_seq < entry.sequence_number
        ):
            install.append((entry.component_id, entry.sequence_number, entry.envelope))
    # Unneeded components the catalog does not know are still removed on the device's request.
    for key, dc in have.items():
        if dc.unneeded and dc.installed_seq is not None and key not in catalog:
            remove.append(dc.component_id)
    return install, remove


def manifest_digest(envelope: bytes) -> str | None:
    """Hex digest of an envelope's manifest (what a SUIT report names), None if unreadable; kept per
    envelope (the same catalog envelope goes to every device)."""
    kept, cached = _digests.get(envelope)
    if kept:
        return cached
    try:
        digest: str | None = parse_envelope(envelope).digest.value.hex()
    except SuitError:
        digest = None
    _digests.put(envelope, digest)
    return digest


def installed_per_reports(row: Outstanding, reports: Sequence[bytes]) -> dict[ComponentId, int]:
    """After ERR_MANIFEST_PROCESSING_FAILED: the planned installs whose SUIT report says success
    (reports arrive inside the device-signed Error, so they are not verified again here)."""
    ok: set[str] = set()
    for raw in reports:
        try:
            rep = parse_report(raw)
        except SuitError:
            continue
        if rep.success:
            ok.add(rep.manifest_digest.value.hex())
    return {
        cid_from_json(item[0]): int(item[1])
        for item in row.data.get("install", [])
        if len(item) > 2 and item[2] is not None and item[2] in ok
    }


def reported_seq(entry: SystemPropertyClaims) -> int | None:
    """The tc-manifest-sequence-number of a tc-list entry, None when absent (peers that do not send it)
    or not an unsigned integer."""
    seq = entry.parameters.get(int(Label.TC_MANIFEST_SEQUENCE_NUMBER))
    return seq if type(seq) is int and 0 <= seq < 1 << 64 else None


def attested_digests(claims: dict[str, Any]) -> dict[str, str]:
    """Component key → hex SHA-256 of the installed envelope, from the `manifests` claim of appraised
    evidence (entries `[content-format, {1: "#<component key>", 0: [alg, digest]}]`; others ignored)."""
    out: dict[str, str] = {}
    for item in claims.get("manifests") or ():
        try:
            body = item[1]
            uri, (alg, digest) = body["1"], body["0"]
        except (TypeError, KeyError, IndexError, ValueError):
            continue
        if isinstance(uri, str) and uri.startswith("#") and alg == -16 and isinstance(digest, str):
            out[uri[1:]] = digest
    return out


def cid_text(cid: ComponentId) -> str:
    return ".".join(p.hex() for p in cid)


__all__ = [
    "attested_digests",
    "cid_text",
    "installed_per_reports",
    "manifest_digest",
    "plan",
    "reconcile",
    "record_report",
    "reported_seq",
]
