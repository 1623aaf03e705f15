"""The SUIT command interpreter of the Agent: runs one command sequence of a verified, supported
manifest against the device's identity, writing fetched and copied images into an in-memory staging
area (the caller commits it). Split out of `security.suit.processor`, which re-exports
`DeviceIdentity` and `Fetcher`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from teep_coap.errors import TeepCoapError
from teep_coap.security.suit.constants import REP_RECORD_ON_FAILURE, REP_RECORD_ON_SUCCESS, Command, Parameter
from teep_coap.security.suit.errors import (
    ComponentUnsupported,
    ConditionFailed,
    OperationFailed,
    PayloadTooLarge,
    SuitError,
    UnsupportedCommand,
)
from teep_coap.security.suit.model import CommandSequence, Envelope, SuitCommand, SuitDigest
from teep_coap.security.suit.report import SuitRecord
from teep_coap.security.suit.store_api import ComponentStoreApi as ComponentStore

Fetcher = Callable[[str], bytes]


@dataclass(frozen=True)
class DeviceIdentity:
    """What the vendor/class/device conditions compare against."""

    vendor_id: bytes
    class_id: bytes
    device_id: bytes | None = None


class Interpreter:
    """Runs command sequences against staged state; never touches the store."""

    def __init__(
        self,
        env: Envelope,
        device: DeviceIdentity,
        store: ComponentStore,
        fetcher: Fetcher | None,
        limit: int,
    ) -> None:
        self.env = env
        self.device = device
        self.store = store
        self.fetcher = fetcher
        self.limit = limit
        self.components = env.manifest.common.components
        self.params: list[dict[int, Any]] = [{} for _ in self.components]
        self.content: dict[int, bytes] = {}
        self.unlinked: set[int] = set()
        self.invoked: set[int] = set()
        self.current: tuple[int, ...] = (0,) if self.components else ()
        self.records: list[SuitRecord] = []

    # -- helpers ---------------------------------------------------------------------------------

    def _record(self, section: int, cmd: SuitCommand, idx: int, props: dict[int, Any]) -> SuitRecord:
        return SuitRecord(section, cmd.offset, idx, props)

    def _fail(
        self, exc_type: type[SuitError], msg: str, section: int, cmd: SuitCommand, idx: int
    ) -> SuitError:
        return exc_type(msg, section=section, offset=cmd.offset, component_index=idx)

    def _image_of(self, idx: int) -> bytes | None:
        if idx in self.content:
            return self.content[idx]
        try:
            return self.store.image(self.components[idx]) if self.store.get(self.components[idx]) else None
        except TeepCoapError:  # the store failed to read it (ComponentStoreError)
            return None

    # -- execution -------------------------------------------------------------------------------

    def run(self, seq: CommandSequence, section: int) -> None:
        for cmd in seq:
            self._exec(cmd, section)

    def _exec(self, cmd: SuitCommand, section: int) -> None:
        code = cmd.code
        if code == Command.DIRECTIVE_SET_COMPONENT_INDEX:
            arg = cmd.arg
            idxs = (
                tuple(range(len(self.components)))
                if arg is True
                else (arg if isinstance(arg, tuple) else (arg,))
            )
            for i in idxs:
                if i >= len(self.components):
                    raise self._fail(
                        ComponentUnsupported, f"component index {i} out of range", section, cmd, i
                    )
            self.current = idxs
            return
        if code == Command.DIRECTIVE_RUN_SEQUENCE:
            self.run(cmd.arg, section)
            return
        if code == Command.DIRECTIVE_TRY_EACH:
            self._try_each(cmd, section)
            return
        for idx in self.current:
            self._exec_one(cmd, section, idx)

    def _try_each(self, cmd: SuitCommand, section: int) -> None:
        last: SuitError | None = None
        for alt in cmd.arg:
            if alt is None:  # trailing nil: "none matched" is not a failure
                return
            saved = ([dict(p) for p in self.params], dict(self.content), set(self.unlinked), self.current)
            try:
                self.run(alt, section)
                return
            except ConditionFailed as exc:
                last = exc
                self.params, self.content, self.unlinked, self.current = saved
        assert last is not None
        raise last

    def _exec_one(self, cmd: SuitCommand, section: int, idx: int) -> None:
        code, p = cmd.code, self.params[idx]
        policy = cmd.arg if isinstance(cmd.arg, int) and not isinstance(cmd.arg, bool) else 0
        try:
            props = self._dispatch(cmd, section, idx, p)
        except SuitError as exc:
            if exc.offset is None:
                exc.section, exc.offset, exc.component_index = section, cmd.offset, idx
            if exc.command is None:
                exc.command = code
            if policy & REP_RECORD_ON_FAILURE:
                self.records.append(self._record(section, cmd, idx, exc.properties))
            raise
        if policy & REP_RECORD_ON_SUCCESS:
            self.records.append(self._record(section, cmd, idx, props))

    def _dispatch(self, cmd: SuitCommand, section: int, idx: int, p: dict[int, Any]) -> dict[int, Any]:
        code = cmd.code
        if code == Command.DIRECTIVE_OVERRIDE_PARAMETERS:
            p.update(cmd.arg)
            return {}
        if code == Command.DIRECTIVE_SET_PARAMETERS:
            for k, v in cmd.arg.items():
                p.setdefault(k, v)
            return {}
        if code in (
            Command.CONDITION_VENDOR_IDENTIFIER,
            Command.CONDITION_CLASS_IDENTIFIER,
            Command.CONDITION_DEVICE_IDENTIFIER,
        ):
            param, mine, name = {
                Command.CONDITION_VENDOR_IDENTIFIER: (
                    Parameter.VENDOR_IDENTIFIER,
                    self.device.vendor_id,
                    "vendor",
                ),
                Command.CONDITION_CLASS_IDENTIFIER: (
                    Parameter.CLASS_IDENTIFIER,
                    self.device.class_id,
                    "class",
                ),
                Command.CONDITION_DEVICE_IDENTIFIER: (
                    Parameter.DEVICE_IDENTIFIER,
                    self.device.device_id,
                    "device",
                ),
            }[Command(code)]
            want = p.get(param)
            if want is None:
                raise ConditionFailed(f"{name}-identifier condition without the {name}-identifier parameter")
            if want != mine:
                exc = ConditionFailed(
                    f"{name} identifier {_hex(want)} does not match this device ({_hex(mine)})"
                )
                exc.properties = {int(param): want}
                raise exc
            return {int(param): want}
        if code == Command.CONDITION_IMAGE_MATCH:
            return self._image_match(idx, p)
        if code == Command.CONDITION_CHECK_CONTENT:
            want = p.get(Parameter.CONTENT)
            if want is None or self._image_of(idx) != want:
                raise ConditionFailed("check-content: component content differs from parameter content")
            return {}
        if code == Command.CONDITION_ABORT:
            raise ConditionFailed("abort condition reached")
        if code == Command.DIRECTIVE_FETCH:
            return self._fetch(idx, p)
        if code == Command.DIRECTIVE_WRITE:
            data = p.get(Parameter.CONTENT)
            if data is None:
                raise OperationFailed("write without the content parameter (18)")
            self._stage(idx, data)
            return {}
        if code == Command.DIRECTIVE_COPY:
            src = p.get(Parameter.SOURCE_COMPONENT)
            if src is None or src >= len(self.components):
                raise OperationFailed("copy needs a valid source-component parameter (22)")
            data = self._image_of(src)
            if data is None:
                raise OperationFailed(f"copy: source component {src} has no content")
            self._stage(idx, data)
            return {}
        if code == Command.DIRECTIVE_UNLINK:
            self.unlinked.add(idx)
            return {}
        if code == Command.DIRECTIVE_INVOKE:
            self.invoked.add(idx)  # TEEP's Update procedure installs; running the TC is the TEE's business
            return {}
        raise UnsupportedCommand(f"command {code} is not supported by this processor")

    def _stage(self, idx: int, data: bytes) -> None:
        if len(data) > self.limit:
            raise PayloadTooLarge(f"payload of {len(data)} bytes exceeds the limit of {self.limit} bytes")
        self.content[idx] = data
        self.unlinked.discard(idx)

    def _fetch(self, idx: int, p: dict[int, Any]) -> dict[int, Any]:
        uri = p.get(Parameter.URI)
        if uri is None:
            raise OperationFailed("fetch without the uri parameter (21)")
        size = p.get(Parameter.IMAGE_SIZE)
        if isinstance(size, int) and size > self.limit:
            raise PayloadTooLarge(f"image-size {size} exceeds the limit of {self.limit} bytes; not fetched")
        if uri.startswith("#"):
            data = self.env.integrated.get(uri)
            if data is None:
                raise OperationFailed(f"integrated payload {uri!r} is not in the envelope")
        else:
            if self.fetcher is None:
                raise OperationFailed(f"cannot fetch {uri!r}: no fetcher configured")
            try:
                data = self.fetcher(uri)
            except SuitError:
                raise
            except Exception as exc:  # any fetcher failure is a failed fetch directive
                raise OperationFailed(f"fetching {uri!r} failed: {exc}") from None
            if not isinstance(data, bytes):
                raise OperationFailed(f"fetcher returned {type(data).__name__} for {uri!r}, not bytes")
        self._stage(idx, data)
        return {int(Parameter.URI): uri}

    def _image_match(self, idx: int, p: dict[int, Any]) -> dict[int, Any]:
        want = p.get(Parameter.IMAGE_DIGEST)
        if not isinstance(want, SuitDigest):
            raise ConditionFailed("image-match without the image-digest parameter (3)")
        data = self._image_of(idx)
        if data is None:
            raise ConditionFailed("image-match: the component has no image")
        size = p.get(Parameter.IMAGE_SIZE)
        actual = SuitDigest.of(data, want.algorithm)
        if actual.value != want.value or (size is not None and size != len(data)):
            exc = ConditionFailed(
                f"image-match failed: got {len(data)} bytes with digest {actual.value.hex()[:16]}…, "
                f"manifest says {size} bytes with digest {want.value.hex()[:16]}…"
            )
            exc.properties = {int(Parameter.IMAGE_DIGEST): actual, int(Parameter.IMAGE_SIZE): len(data)}
            raise exc
        return {int(Parameter.IMAGE_DIGEST): want, int(Parameter.IMAGE_SIZE): len(data)}


def _hex(v: Any) -> str:
    return v.hex() if isinstance(v, bytes) else repr(v)
