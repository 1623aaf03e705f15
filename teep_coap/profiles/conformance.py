"""The conformance report of `teep-coap check tam` / `check agent`: a registry of checks and results.

Every check has an id, the section of the draft (or of our CoAP binding, docs/coap-binding.md) whose
rule it tests, and the rule's level. A failed MUST is `fail`, a failed SHOULD is `warn`; a check that
could not run says `skip` and why. `teep-coap check` exits 0 only when no MUST failed.
"""

from __future__ import annotations

import functools
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import cddl_verifier

from teep_coap.encoding.cbor_codec import decode
from teep_coap.encoding.errors import TeepDecodeError
from teep_coap.errors import TeepCoapError
from teep_coap.model.codes import MessageType
from teep_coap.security import cose
from teep_coap.security.errors import SecurityError

PASS, WARN, FAIL, SKIP = "pass", "warn", "fail", "skip"
MUST, SHOULD = "MUST", "SHOULD"

PROTOCOL = "draft-ietf-teep-protocol"
HTTP_BINDING = "draft-ietf-teep-otrp-over-http-15"
COAP_BINDING = "teep-coap CoAP binding (docs/coap-binding.md)"


@dataclass(frozen=True)
class CheckSpec:
    """One rule: what is checked, where the rule is written, how strong it is."""

    id: str
    section: str
    level: str  # MUST | SHOULD
    title: str


def _spec(id: str, section: str, level: str, title: str) -> CheckSpec:
    return CheckSpec(id, section, level, title)


_SPECS = (
    # TAM, CoAP binding
    _spec("coap.connect", f"{COAP_BINDING} §1", MUST, "empty CON POST starts a session: 2.04 with a message"),
    _spec("coap.content-format", f"{COAP_BINDING} §2", MUST, "answers carry Content-Format 65000"),
    _spec(
        "coap.wrong-content-format",
        f"{COAP_BINDING} §2",
        MUST,
        "a payload with another Content-Format gets 4.15",
    ),
    _spec("coap.bad-accept", f"{COAP_BINDING} §2", SHOULD, "an Accept other than 65000 gets 4.06"),
    _spec("coap.method", f"{COAP_BINDING} §1", SHOULD, "methods other than POST get 4.05"),
    _spec("coap.not-cbor", f"{COAP_BINDING} §4", MUST, "a payload that is not CBOR gets 4.00"),
    _spec(
        "coap.unsigned",
        f'{PROTOCOL}, "Validating a TEEP Message"',
        MUST,
        "an unsigned TEEP message is refused (4.00)",
    ),
    _spec(
        "coap.block2",
        "RFC 7959 §2.4; " + f"{COAP_BINDING} §3",
        SHOULD,
        "a smaller Block2 size asked for in the request is honoured",
    ),
    _spec(
        "coap.block1",
        "RFC 7959 §2.3; " + f"{COAP_BINDING} §3",
        MUST,
        "a request in Block1 blocks is taken (2.31 Continue per block)",
    ),
    _spec(
        "coap.too-large",
        "RFC 7959 §2.9.3; " + f"{COAP_BINDING} §3",
        SHOULD,
        "Size1 above the limit gets 4.13",
    ),
    # TAM, HTTP binding (the probe's rules)
    _spec(
        "http.connect",
        f'{HTTP_BINDING}, "TEEP/HTTP Server Behavior"',
        MUST,
        "empty POST with Accept starts a session: 200 with a message",
    ),
    _spec(
        "http.content-type",
        f'{HTTP_BINDING}, "TEEP/HTTP Server Behavior"',
        MUST,
        "Content-Type is the TEEP media type",
    ),
    _spec(
        "http.security-headers",
        f'{HTTP_BINDING}, "TEEP/HTTP Server Behavior"',
        MUST,
        "nosniff, CSP default-src 'none', no-referrer",
    ),
    _spec("http.no-cache-control", f'{HTTP_BINDING}, "TEEP/HTTP Server Behavior"', MUST, "no Cache-Control"),
    _spec("http.no-cookies", f'{HTTP_BINDING}, "TEEP/HTTP Server Behavior"', SHOULD, "no cookies"),
    _spec(
        "http.wrong-content-type",
        f'{HTTP_BINDING}, "TEEP/HTTP Server Behavior"',
        SHOULD,
        "wrong Content-Type gets 415",
    ),
    _spec(
        "http.bad-accept",
        f'{HTTP_BINDING}, "TEEP/HTTP Server Behavior"',
        SHOULD,
        "a request without the TEEP Accept fails",
    ),
    _spec(
        "http.not-cbor",
        f'{PROTOCOL}, "Validating a TEEP Message"',
        MUST,
        "a body that is not CBOR is refused (4xx), not answered",
    ),
    _spec(
        "http.unsigned",
        f'{PROTOCOL}, "Validating a TEEP Message"',
        MUST,
        "an unsigned TEEP message is refused (4xx), not answered",
    ),
    _spec("http.method", f'{HTTP_BINDING}, "TEEP/HTTP Server Behavior"', SHOULD, "GET is not served"),
    # the TEEP messages themselves (either role)
    _spec(
        "teep.cose",
        f'{PROTOCOL}, "Validating a TEEP Message"',
        MUST,
        "the message is a tagged COSE_Sign1 or COSE_Sign",
    ),
    _spec(
        "teep.signature",
        f'{PROTOCOL}, "Validating a TEEP Message"',
        MUST,
        "the signature verifies with the peer's key",
    ),
    _spec(
        "teep.cddl",
        f'{PROTOCOL}, "Detailed Messages Specification" (CDDL)',
        MUST,
        "the payload is a valid TEEP message of the expected type",
    ),
    _spec(
        "teep.token-fresh",
        f'{PROTOCOL}, "QueryRequest Message" (token)',
        MUST,
        "each QueryRequest has a new token (or challenge)",
    ),
    _spec(
        "teep.token-echo",
        f'{PROTOCOL}, "QueryResponse Message" (token)',
        MUST,
        "the answer carries the request's token exactly",
    ),
    # Agent, as seen by a TAM
    _spec("agent.connect", f"{COAP_BINDING} §1", MUST, "the Broker starts with an empty POST to the TAM URI"),
    _spec(
        "agent.content-format",
        f"{COAP_BINDING} §2",
        MUST,
        "requests with a payload carry the TEEP Content-Format / Content-Type",
    ),
    _spec(
        "agent.block2",
        "RFC 7959 §2.3; " + f"{COAP_BINDING} §3",
        MUST,
        "a QueryRequest sent in small Block2 blocks is reassembled",
    ),
    _spec(
        "agent.rejects-unsigned",
        f'{PROTOCOL}, "TEEP Agent Behavior"',
        MUST,
        "an unsigned Update is not processed (Error or no Success)",
    ),
)
REGISTRY: dict[str, CheckSpec] = {s.id: s for s in _SPECS}


class CheckError(TeepCoapError):
    """The battery could not run at all (bad arguments, unknown check id)."""


@dataclass(frozen=True)
class CheckResult:
    id: str
    section: str
    level: str
    title: str
    result: str  # pass | warn | fail | skip
    detail: str


@dataclass
class Report:
    """All results of one run against one peer."""

    role: str  # "tam" | "agent"
    target: str
    profile: str
    results: list[CheckResult] = field(default_factory=list)

    def add(self, check_id: str, ok: bool | None, detail: str) -> None:
        """Record a check: ok None = skipped (detail says why); a failure counts by the rule's level."""
        spec = REGISTRY.get(check_id)
        if spec is None:
            raise CheckError(f"unknown check {check_id!r}")
        result = SKIP if ok is None else PASS if ok else FAIL if spec.level == MUST else WARN
        self.results.append(CheckResult(spec.id, spec.section, spec.level, spec.title, result, detail))

    @property
    def must_failed(self) -> bool:
        return any(r.result == FAIL for r in self.results)

    def counts(self) -> dict[str, int]:
        return {k: sum(r.result == k for r in self.results) for k in (PASS, WARN, FAIL, SKIP)}

    def to_json(self) -> dict[str, Any]:
        return {
            "role": self.role,
            "target": self.target,
            "profile": self.profile,
            "ok": not self.must_failed,
            "counts": self.counts(),
            "results": [asdict(r) for r in self.results],
        }

    def format(self) -> str:
        lines = [f"check {self.role} {self.target} (profile {self.profile})"]
        for r in self.results:
            lines.append(f"  {r.result.upper():<4} {r.level:<6} {r.id:<26} {r.title}")
            lines.append(f"       {r.section}: {r.detail}")
        c = self.counts()
        verdict = "no MUST failed" if not self.must_failed else "a MUST failed"
        lines.append(f"{c[PASS]} pass, {c[WARN]} warn, {c[FAIL]} fail, {c[SKIP]} skip: {verdict}")
        return "\n".join(lines)


# The draft's CDDL with the COSE and SUIT rules it imports (the same text as tests/cddl/teep-all.cddl,
# which a test keeps equal), checked by an independent CDDL validator (PyPI cddl-verifier).
TEEP_CDDL = Path(__file__).with_name("cddl") / "teep-all.cddl"
CDDL_ROOT = "teep-message"


@functools.cache
def _cddl_validator() -> Any:
    return cddl_verifier.Validator(TEEP_CDDL)


def cddl_problem(payload: bytes) -> str | None:
    """None when `payload` matches the draft's CDDL (rule teep-message); else the validator's words,
    naming the rule and the place that fail."""
    result = _cddl_validator().validate(payload, CDDL_ROOT)
    if result:
        return None
    return "; ".join(f"at {d.path_text}: {d}" for d in result.diagnostics) or "does not match teep-message"


def examine_message(
    report: Report, data: bytes, expected_type: int, peer_key: Any | None, token: bytes | None = None
) -> Any | None:
    """The checks every received TEEP message gets: COSE structure, signature, CDDL (the draft's CDDL
    through a CDDL validator, then our strict decoding), and, when `token` is given, that it is echoed.
    Returns the decoded message or None."""

    try:
        info = cose.inspect(data, allow_untagged=False)
    except SecurityError as exc:
        report.add("teep.cose", False, str(exc))
        report.add("teep.signature", None, "not a COSE object")
        report.add("teep.cddl", None, "not a COSE object")
        return None
    report.add("teep.cose", info.payload is not None, f"{info.structure}")
    if peer_key is None:
        report.add("teep.signature", None, "no peer key given (--peer-key)")
    else:
        try:
            cose.verify(data, peer_key)
            report.add("teep.signature", True, "verified")
        except SecurityError as exc:
            report.add("teep.signature", False, str(exc))
    if info.payload is None:
        report.add("teep.cddl", None, "detached payload")
        return None
    problem = cddl_problem(info.payload)
    if problem is not None:
        report.add("teep.cddl", False, f"the CDDL validator refuses it: {problem}"[:600])
        return None
    try:
        message = decode(info.payload)
    except TeepDecodeError as exc:
        report.add("teep.cddl", False, f"matches the CDDL, but our decoder refuses it: {exc}")
        return None
    got = int(getattr(message, "type", -1))
    name = MessageType(expected_type).name
    report.add("teep.cddl", got == expected_type, f"{type(message).__name__} (expected {name})")
    if token is not None:
        echoed = getattr(message, "token", None)
        report.add(
            "teep.token-echo", echoed == token, f"sent {token.hex()}, got {echoed.hex() if echoed else None}"
        )
    return message
