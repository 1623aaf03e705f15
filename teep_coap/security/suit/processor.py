"""The SUIT Update Procedure of a TEEP Agent: verify an envelope, run its command sequences, and
commit the result to the component store in one atomic step.

Nothing touches the store until every check passed: commands write into an in-memory staging area
(fetched images per component index), and only a fully successful run becomes one
`ComponentStore.commit`. A failure returns a `ProcessResult` with the typed error and a failed SUIT
report whose reason is the error's `reason`.

Order: envelope top-level map → authenticate (digest + signature + severed members) → decode the
manifest (only now: SUIT authenticates before it interprets) → capability check (refuse
dependencies, encryption info, unknown members, the pre-2024 layout) → anti-rollback against the
store → shared sequence → payload-fetch → install → validate → commit.
The commands themselves run in `security.suit.interpreter`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from teep_coap.errors import TeepCoapError
from teep_coap.security.suit.codec import parse_envelope
from teep_coap.security.suit.constants import (
    Command,
    EnvelopeKey,
    ManifestKey,
    Parameter,
    ReportReason,
)
from teep_coap.security.suit.errors import (
    ComponentUnsupported,
    OperationFailed,
    ParameterUnsupported,
    PayloadTooLarge,
    RollbackRefused,
    SeveringUnsupported,
    SuitError,
    UnsupportedCommand,
    UnsupportedLayout,
)
from teep_coap.security.suit.interpreter import DeviceIdentity, Fetcher, Interpreter
from teep_coap.security.suit.model import ComponentId, Envelope, SuitDigest
from teep_coap.security.suit.report import ReportResult, SuitRecord, SuitReport, build_report
from teep_coap.security.suit.store_api import ComponentStoreApi as ComponentStore
from teep_coap.security.suit.store_api import StagedInstall as Install
from teep_coap.security.suit.verify import verify_envelope

DEFAULT_MAX_PAYLOAD_SIZE = 1 << 20  # 1 MiB: a simulated TEE's component limit (configurable)

# Section number used in records for the shared sequence (it lives in suit-common, key 3).
SECTION_COMMON = int(ManifestKey.COMMON)

_KNOWN_PARAMETERS = frozenset(int(p) for p in Parameter) - {int(Parameter.ENCRYPTION_INFO)}
_SUPPORTED_MANIFEST_KEYS = frozenset(
    int(k)
    for k in (
        ManifestKey.VERSION,
        ManifestKey.SEQUENCE_NUMBER,
        ManifestKey.COMMON,
        ManifestKey.REFERENCE_URI,
        ManifestKey.MANIFEST_COMPONENT_ID,
        ManifestKey.VALIDATE,
        ManifestKey.LOAD,
        ManifestKey.INVOKE,
        ManifestKey.PAYLOAD_FETCH,
        ManifestKey.INSTALL,
        ManifestKey.TEXT,
        ManifestKey.UNINSTALL,
    )
)


# What the interpreter implements; anything else anywhere in the manifest (uninstall and invoke
# included, which an install does not run) refuses the manifest up front.
_SUPPORTED_COMMANDS = frozenset(
    int(c)
    for c in (
        Command.CONDITION_VENDOR_IDENTIFIER,
        Command.CONDITION_CLASS_IDENTIFIER,
        Command.CONDITION_IMAGE_MATCH,
        Command.CONDITION_CHECK_CONTENT,
        Command.CONDITION_ABORT,
        Command.CONDITION_DEVICE_IDENTIFIER,
        Command.DIRECTIVE_SET_COMPONENT_INDEX,
        Command.DIRECTIVE_TRY_EACH,
        Command.DIRECTIVE_WRITE,
        Command.DIRECTIVE_SET_PARAMETERS,
        Command.DIRECTIVE_OVERRIDE_PARAMETERS,
        Command.DIRECTIVE_FETCH,
        Command.DIRECTIVE_COPY,
        Command.DIRECTIVE_INVOKE,
        Command.DIRECTIVE_RUN_SEQUENCE,
        Command.DIRECTIVE_UNLINK,
    )
)


@dataclass(frozen=True)
class ProcessResult:
    success: bool
    report: SuitReport
    installed: tuple[ComponentId, ...] = ()
    removed: tuple[ComponentId, ...] = ()
    records: tuple[SuitRecord, ...] = ()
    error: SuitError | None = None
    sequence_number: int | None = None
    manifest_component_id: ComponentId | None = None
    invoke_requested: tuple[ComponentId, ...] = ()
    # The same manifest (sequence number and digest) had installed every component it names already:
    # nothing was run or written, and the operation counts as done (a repeated Update is idempotent).
    already_installed: bool = False

    @property
    def reason(self) -> ReportReason:
        return ReportReason.OK if self.error is None else self.error.reason

    def raise_for_error(self) -> None:
        if self.error is not None:
            raise self.error


def unsupported_features(env: Envelope) -> list[tuple[type[SuitError], str]]:
    """What this processor cannot do with `env`, most specific error class first in each pair."""
    found: list[tuple[type[SuitError], str]] = []
    m = env.manifest
    if EnvelopeKey.DELEGATION in env.extensions:
        found.append((UnsupportedCommand, "delegation chains (envelope key 1) are not supported"))
    if m.common.dependencies:
        found.append((UnsupportedCommand, "dependencies (common key 1, trust-domains) are not supported"))
    for key in m.extensions:
        found.append((UnsupportedCommand, f"manifest member {key} is not supported"))
    for key in (ManifestKey.DEPENDENCY_RESOLUTION, ManifestKey.CANDIDATE_VERIFICATION):
        if key in m.sequences or key in m.severed:
            found.append(
                (UnsupportedCommand, f"{key.name.lower().replace('_', '-')} ({int(key)}) is not supported")
            )
    for key in m.common.extensions:
        found.append((UnsupportedCommand, f"common member {key} is not supported"))
    sequences = dict(m.sequences)
    if m.common.shared_sequence is not None:
        sequences[SECTION_COMMON] = m.common.shared_sequence
    for section, seq in sorted(sequences.items()):
        for cmd in seq.walk():
            if cmd.code not in _SUPPORTED_COMMANDS:
                found.append(
                    (UnsupportedCommand, f"command {cmd.code} in section {section} is not supported")
                )
            if cmd.code in (Command.DIRECTIVE_OVERRIDE_PARAMETERS, Command.DIRECTIVE_SET_PARAMETERS):
                if Parameter.ENCRYPTION_INFO in cmd.arg:
                    found.append(
                        (
                            ParameterUnsupported,
                            f"encryption info (parameter 19, draft-ietf-suit-firmware-encryption) in section "
                            f"{section} is not supported",
                        )
                    )
                for p in cmd.arg:
                    if p not in _KNOWN_PARAMETERS and p != Parameter.ENCRYPTION_INFO:
                        found.append(
                            (ParameterUnsupported, f"parameter {p} in section {section} is not supported")
                        )
    inv = m.sequences.get(ManifestKey.INVOKE)
    if (
        inv is not None
        and ManifestKey.INSTALL not in m.sequences
        and ManifestKey.INSTALL not in m.severed
        and any(c.code == Command.DIRECTIVE_FETCH for c in inv.walk())
    ):
        found.append(
            (
                UnsupportedLayout,
                "manifest uses the pre-Nov-2024 SUIT layout (install at key 9, which is now invoke); "
                "re-issue it with install = 20",
            )
        )
    # Most specific class first: a parameter problem outranks the generic command one.
    found.sort(key=lambda f: 0 if issubclass(f[0], ParameterUnsupported) else 1)
    return found


def _first_unsupported_command(env: Envelope) -> tuple[int, int, int] | None:
    """(section, offset, command) of the first command the interpreter does not implement."""
    m = env.manifest
    sequences = dict(m.sequences)
    if m.common.shared_sequence is not None:
        sequences[SECTION_COMMON] = m.common.shared_sequence
    for section, seq in sorted(sequences.items()):
        for cmd in seq.walk():
            if cmd.code not in _SUPPORTED_COMMANDS:
                return section, cmd.offset, cmd.code
    return None


def _failure_report(
    env: Envelope | None, data: bytes, exc: SuitError, records: list[SuitRecord], nonce: bytes | None
) -> SuitReport:
    uri = (env.manifest.reference_uri or "") if env else ""
    digest = env.digest if env else SuitDigest.of(data)
    record = SuitRecord(exc.section or 0, exc.offset or 0, exc.component_index or 0, exc.properties)
    code = exc.command or 0
    return build_report(
        manifest_uri=uri,
        manifest_digest=digest,
        nonce=nonce,
        records=records,
        failure=ReportResult(code, record, int(exc.reason)),
    )


def process_envelope(
    data: bytes,
    *,
    trust: Any,
    store: ComponentStore,
    fetcher: Fetcher | None = None,
    device: DeviceIdentity,
    report_nonce: bytes | None = None,
    max_payload_size: int = DEFAULT_MAX_PAYLOAD_SIZE,
) -> ProcessResult:
    """Run the SUIT Update Procedure for one envelope; see the module docstring for the order.

    Never raises for a refused envelope: the result carries `error` (a `SuitError` subclass) and a
    failed report; `result.raise_for_error()` turns it back into an exception.
    """
    env: Envelope | None = None
    interp: Interpreter | None = None
    try:
        if len(data) > max_payload_size + 64 * 1024:
            raise PayloadTooLarge(f"envelope of {len(data)} bytes exceeds the limit")
        # Authenticate first (top-level map, digest, signature), then decode the manifest: a
        # malformed manifest is only interpreted once it is known to come from a trusted signer.
        verified = verify_envelope(data, trust)
        verified.manifest  # noqa: B018 - SuitParseError here leaves `env` unset for the report
        env = verified
        problems = unsupported_features(env)
        if problems:
            cls = problems[0][0]
            err = cls("; ".join(msg for _, msg in problems))
            loc = _first_unsupported_command(env)
            if loc is not None and cls is UnsupportedCommand:
                err.section, err.offset = loc[0], loc[1]
                err.command = loc[2]
            raise err
        m = env.manifest
        if not m.common.components:
            raise ComponentUnsupported("manifest lists no components")
        if _already_installed(env, bytes(data), store):
            return ProcessResult(
                success=True,
                report=build_report(
                    manifest_uri=m.reference_uri or "",
                    manifest_digest=env.digest,
                    nonce=report_nonce,
                    records=[],
                ),
                sequence_number=m.sequence_number,
                manifest_component_id=m.manifest_component_id,
                already_installed=True,
            )
        _check_rollback(env, store)
        interp = Interpreter(env, device, store, fetcher, max_payload_size)
        if m.common.shared_sequence is not None:
            interp.run(m.common.shared_sequence, SECTION_COMMON)
        for key in (ManifestKey.PAYLOAD_FETCH, ManifestKey.INSTALL, ManifestKey.VALIDATE):
            seq = m.sequences.get(key)
            if seq is None and key in m.severed:
                raise SeveringUnsupported(f"section {int(key)} was severed and is not in the envelope")
            if seq is not None:
                interp.run(seq, int(key))
        installs = [
            Install(m.common.components[i], img, bytes(data), m.sequence_number, m.manifest_component_id)
            for i, img in sorted(interp.content.items())
            if i not in interp.unlinked
        ]
        removals = [
            m.common.components[i] for i in sorted(interp.unlinked) if store.get(m.common.components[i])
        ]
        store.commit(installs, removals)
    except TeepCoapError as caught:  # SuitError, or a store failure (ComponentStoreError)
        # A damaged or unwritable store (at the rollback check or the commit) fails the operation.
        exc = caught if isinstance(caught, SuitError) else OperationFailed(f"component store: {caught}")
        records = interp.records if interp else []
        return ProcessResult(
            success=False,
            report=_failure_report(env, bytes(data), exc, records, report_nonce),
            records=tuple(records),
            error=exc,
            sequence_number=env.manifest.sequence_number if env else None,
            manifest_component_id=env.manifest.manifest_component_id if env else None,
        )
    report = build_report(
        manifest_uri=m.reference_uri or "",
        manifest_digest=env.digest,
        nonce=report_nonce,
        records=interp.records,
    )
    return ProcessResult(
        success=True,
        report=report,
        installed=tuple(i.component_id for i in installs),
        removed=tuple(removals),
        records=tuple(interp.records),
        sequence_number=m.sequence_number,
        manifest_component_id=m.manifest_component_id,
        invoke_requested=tuple(m.common.components[i] for i in sorted(interp.invoked)),
    )


def _already_installed(env: Envelope, data: bytes, store: ComponentStore) -> bool:
    """True when every component the (authenticated) manifest names is installed by a manifest with the
    same sequence number and the same manifest digest: applying it again would change nothing. SUIT
    forbids going lower; the same manifest again is not a rollback but a repeat (a lost Success)."""
    m = env.manifest
    entries = [store.get(c) for c in m.common.components]
    if not entries:
        return False
    for entry in entries:
        if entry is None or entry.sequence_number != m.sequence_number:
            return False
        if entry.manifest_digest == hashlib.sha256(data).digest():
            continue  # byte-identical envelope (the usual case): no need to parse the stored one
        try:
            stored = parse_envelope(store.manifest(entry.component_id))
        except TeepCoapError:
            return False  # an unreadable stored manifest proves nothing: run the normal procedure
        if stored.digest != env.digest:
            return False
    return True


def _check_rollback(env: Envelope, store: ComponentStore) -> None:
    """Anti-rollback: the new sequence number must exceed what is installed for any component the
    manifest names (by component id or by manifest component id)."""
    m = env.manifest
    new = m.sequence_number
    entries = [e for e in (store.get(c) for c in m.common.components) if e is not None]
    if m.manifest_component_id is not None:
        entries += store.find_by_manifest_id(m.manifest_component_id)
    for e in entries:
        if new <= e.sequence_number:
            raise RollbackRefused(
                f"sequence number {new} is not greater than the installed {e.sequence_number} "
                f"of component {[p.hex() for p in e.component_id]} (rollback refused)"
            )


def _uninstall_removals(
    manifest_bytes: bytes, store: ComponentStore, device: DeviceIdentity | None
) -> tuple[list[ComponentId], Envelope]:
    """Run the stored manifest's uninstall section (verified when it was installed) and return the
    installed components it unlinks. The shared sequence runs first when `device` is known."""
    env = parse_envelope(manifest_bytes)
    m = env.manifest
    interp = Interpreter(env, device or _NO_DEVICE, store, None, DEFAULT_MAX_PAYLOAD_SIZE)
    if device is not None and m.common.shared_sequence is not None:
        interp.run(m.common.shared_sequence, SECTION_COMMON)
    assert m.uninstall is not None
    interp.run(m.uninstall, int(ManifestKey.UNINSTALL))
    removals = [m.common.components[i] for i in sorted(interp.unlinked) if store.get(m.common.components[i])]
    return removals, env


_NO_DEVICE = DeviceIdentity(b"", b"")


def unlink(
    component_id: ComponentId,
    *,
    store: ComponentStore,
    report_nonce: bytes | None = None,
    device: DeviceIdentity | None = None,
) -> ProcessResult:
    """Remove a Trusted Component named by its component id or its manifest component id (TEEP's
    unneeded-manifest-list).

    The uninstall section (24) of the manifest that installed it decides what goes (normally
    `[33 directive-unlink, 15]` on that manifest's component); a manifest without one removes
    everything it installed. All removals are one atomic commit; any failure removes nothing.
    """
    cid = tuple(component_id)
    digest = SuitDigest.of(b"")
    uri = ""
    removals: list[ComponentId] = []
    try:
        entries = store.find_by_manifest_id(cid) or [e for e in [store.get(cid)] if e is not None]
        if not entries:
            raise ComponentUnsupported(f"component {[p.hex() for p in cid]} is not installed")
        by_manifest: dict[bytes, list[ComponentId]] = {}
        for e in entries:
            by_manifest.setdefault(e.manifest_digest, []).append(e.component_id)
        for owned in by_manifest.values():
            manifest_bytes = store.manifest(owned[0])
            stored = parse_envelope(manifest_bytes)
            digest, uri = stored.digest, stored.manifest.reference_uri or ""
            if stored.manifest.uninstall is None:
                found = owned
            else:
                found, _ = _uninstall_removals(manifest_bytes, store, device)
                if not found:
                    raise OperationFailed("the uninstall section unlinks no installed component")
            removals += [c for c in found if c not in removals]
        store.commit([], removals)
    except TeepCoapError as caught:  # SuitError, or a store failure (ComponentStoreError)
        exc = caught if isinstance(caught, SuitError) else OperationFailed(f"component store: {caught}")
        rep = build_report(
            manifest_uri=uri,
            manifest_digest=digest,
            nonce=report_nonce,
            failure=ReportResult(
                exc.command if exc.command is not None else int(Command.DIRECTIVE_UNLINK),
                SuitRecord(
                    exc.section or int(ManifestKey.UNINSTALL), exc.offset or 0, exc.component_index or 0
                ),
                int(exc.reason),
            ),
        )
        return ProcessResult(False, rep, error=exc)
    rep = build_report(manifest_uri=uri, manifest_digest=digest, nonce=report_nonce)
    return ProcessResult(True, rep, removed=tuple(removals))


__all__ = [
    "DEFAULT_MAX_PAYLOAD_SIZE",
    "DeviceIdentity",
    "Fetcher",
    "ProcessResult",
    "process_envelope",
    "unlink",
    "unsupported_features",
]
