"""`teep-coap check tam URI`: the conformance battery against any TAM, over CoAP (coap, coaps) or HTTP.

Over CoAP it sends what a Broker sends and what a Broker never should (wrong Content-Format, GET, an
unsigned message, bytes that are not CBOR, Block1 blocks, a Size1 above any limit) with aiocoap
directly, because the project's client refuses to send most of these. Over HTTP it runs the rules of
`profiles.probe`. The first answer (a QueryRequest) gets the message checks of `conformance`.

Note: the checks open sessions on the TAM that they never finish, as a Broker that gives up would.
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiocoap
import aiohttp
import cbor2
from aiocoap import Message
from aiocoap.numbers.codes import Code
from aiocoap.optiontypes import BlockOption

from teep_coap.encoding.cbor_codec import decode
from teep_coap.encoding.errors import TeepDecodeError
from teep_coap.model.codes import MEDIA_TYPE_TEEP_CBOR, MessageType
from teep_coap.profiles import probe
from teep_coap.profiles.conformance import CheckError, Report, examine_message
from teep_coap.profiles.schema import Profile
from teep_coap.profiles.stack import coap_options
from teep_coap.security import cose
from teep_coap.security.errors import SecurityError
from teep_coap.transport.coap.client import TRANSPORTS, CoapClient
from teep_coap.transport.coap.credentials import DeviceCredentials

TOO_LARGE = 10 * 1024 * 1024  # Size1 no TAM should take for one TEEP message


async def check_tam(
    profile: Profile,
    uri: str,
    *,
    peer_key: Any | None = None,
    psk: tuple[str, bytes] | None = None,
    credentials: DeviceCredentials | None = None,
    ssl_context: Any | None = None,
    timeout: float = 10.0,
) -> Report:
    """Run every check that fits the profile's binding against the TAM at `uri`."""
    report = Report("tam", uri, profile.name)
    if profile.protocol != "teep" or profile.encoding != "cbor":
        raise CheckError(
            f"check tam covers TEEP CBOR/COSE profiles; {profile.name!r} is "
            f"{profile.protocol}/{profile.encoding}"
        )
    if profile.transport.is_coap:
        await _check_coap(report, profile, uri, peer_key, psk, timeout, credentials)
    else:
        await _check_http(report, uri, peer_key, ssl_context, timeout)
    return report


async def _check_http(
    report: Report, uri: str, peer_key: Any | None, ssl_context: Any, timeout: float
) -> None:

    rule_ids = {
        "empty POST with Accept": "http.connect",
        "Content-Type is": "http.content-type",
        "X-Content-Type-Options": "http.security-headers",
        "Content-Security-Policy": "http.security-headers",
        "Referrer-Policy": "http.security-headers",
        "no Cache-Control": "http.no-cache-control",
        "no cookies": "http.no-cookies",
        "wrong Content-Type": "http.wrong-content-type",
        "request without the TEEP Accept": "http.bad-accept",
        "GET is not served": "http.method",
        "TAM reachable": "http.connect",
    }
    checks = await probe.probe_tam(
        uri, media_type=MEDIA_TYPE_TEEP_CBOR, ssl_context=ssl_context, timeout=timeout
    )
    for check in checks:
        check_id = next((v for k, v in rule_ids.items() if check.rule.startswith(k)), None)
        if check_id is None:
            continue  # the probe's own look at the message: done properly below
        report.add(check_id, check.outcome == probe.PASS, f"{check.rule}: {check.detail}")
    bodies = []
    async with aiohttp.ClientSession(
        timeout=aiohttp.ClientTimeout(total=timeout),
        connector=aiohttp.TCPConnector(ssl=ssl_context if ssl_context is not None else True),
    ) as session:
        for _ in range(2):
            try:
                async with session.post(uri, data=b"", headers={"Accept": MEDIA_TYPE_TEEP_CBOR}) as r:
                    bodies.append(await r.content.read(1 << 20) if r.status == 200 else b"")
            except (aiohttp.ClientError, TimeoutError):
                bodies.append(b"")
        _examine_query_requests(report, bodies, peer_key)

        token = getattr(_decoded_token(bodies[0]), "token", None) or bytes(16)
        headers = {"Accept": MEDIA_TYPE_TEEP_CBOR, "Content-Type": MEDIA_TYPE_TEEP_CBOR}
        for check_id, body in (
            ("http.not-cbor", b"\xff\xfe not cbor"),
            ("http.unsigned", cbor2.dumps([2, {20: token}])),  # a bare QueryResponse, no COSE around it
        ):
            try:
                async with session.post(uri, data=body, headers=headers, allow_redirects=False) as r:
                    refused = r.status >= 400
                    report.add(check_id, refused, f"status {r.status}")
            except (aiohttp.ClientError, TimeoutError) as exc:
                report.add(check_id, False, f"{type(exc).__name__}: {exc}")


def _examine_query_requests(report: Report, bodies: list[bytes], peer_key: Any | None) -> None:
    """Message checks on the first QueryRequest; token freshness across two."""
    if not bodies or not bodies[0]:
        report.add("teep.cddl", None, "no QueryRequest received")
        return
    first = examine_message(report, bodies[0], int(MessageType.QUERY_REQUEST), peer_key)
    second = None
    if len(bodies) > 1 and bodies[1]:
        probe = Report("tam", report.target, report.profile)
        second = examine_message(probe, bodies[1], int(MessageType.QUERY_REQUEST), None)
    if first is None or second is None:
        report.add("teep.token-fresh", None, "two QueryRequests are needed")
        return
    # without a token (attestation requested) the challenge is what must be new
    what = "token" if getattr(first, "token", None) or getattr(second, "token", None) else "challenge"
    v1, v2 = getattr(first, what, None), getattr(second, what, None)
    if v1 is None and v2 is None:
        report.add(
            "teep.token-fresh", False, "neither a token nor a challenge: nothing makes the answer fresh"
        )
    else:
        shown = f"{what} {v1.hex() if v1 else None} then {v2.hex() if v2 else None}"
        report.add("teep.token-fresh", v1 != v2, shown)


async def _check_coap(
    report: Report,
    profile: Profile,
    uri: str,
    peer_key: Any | None,
    psk: tuple[str, bytes] | None,
    timeout: float,
    credentials: DeviceCredentials | None = None,
) -> None:

    scheme = profile.transport.scheme
    if scheme == "coaps" and psk is None:
        raise CheckError("a coaps TAM needs --psk-hex and --psk-identity (or --state with transport.toml)")
    cf = profile.transport.content_format
    oscore_client = None
    if scheme == "coap+oscore":
        # OSCORE (pre-shared or keyed by EDHOC): the Broker's own client sets the context up

        if credentials is None:
            raise CheckError(
                f"an OSCORE TAM ({profile.name}) needs --state: an Agent folder with transport.toml"
            )
        oscore_client = CoapClient(coap_options(profile), uri, credentials)
        uri = oscore_client.uri
        ctx = await oscore_client.context()
    else:
        ctx = await aiocoap.Context.create_client_context(transports=TRANSPORTS[scheme])
    if psk is not None and scheme == "coaps":
        authority = uri.split("://", 1)[1].split("/", 1)[0]
        ctx.client_credentials.load_from_dict(
            {
                f"coaps://{authority}/*": {
                    "dtls": {"psk": {"hex": psk[1].hex()}, "client-identity": {"ascii": psk[0]}}
                }
            }
        )

    async def ask(
        code: Code = Code.POST,
        payload: bytes = b"",
        *,
        content_format: int | None = None,
        accept: int | None = cf,
        block1: tuple[int, bool, int] | None = None,
        block2: tuple[int, bool, int] | None = None,
        size1: int | None = None,
        blockwise: bool = True,
        echo: bytes | None = None,
    ) -> Message | str:
        msg = Message(code=code, uri=uri, payload=payload)
        if echo is not None:
            msg.opt.echo = echo
        if content_format is not None:
            msg.opt.content_format = content_format
        if accept is not None:
            msg.opt.accept = accept
        if block1 is not None:
            msg.opt.block1 = BlockOption.BlockwiseTuple(*block1)
        if block2 is not None:
            msg.opt.block2 = BlockOption.BlockwiseTuple(*block2)
        if size1 is not None:
            msg.opt.size1 = size1
        try:
            request = ctx.request(msg, handle_blockwise=blockwise)
            answer = await asyncio.wait_for(request.response, timeout)
        except TimeoutError:
            return f"no answer in {timeout} s"
        except aiocoap.error.Error as exc:
            return f"{type(exc).__name__}: {exc}"
        if answer.code == Code.UNAUTHORIZED and answer.opt.echo and echo is None:
            # RFC 9175 §2.4: prove our address with the Echo value and ask again (as a Broker does)
            return await ask(
                code, payload, content_format=content_format, accept=accept, block1=block1, block2=block2,
                size1=size1, blockwise=blockwise, echo=bytes(answer.opt.echo),
            )  # fmt: skip
        return answer

    def status(answer: Message | str) -> str:
        return answer if isinstance(answer, str) else f"{answer.code.dotted} {answer.code.name_printable}"

    try:
        first = await ask()
        if isinstance(first, str):
            report.add("coap.connect", False, first)
            return
        ok = first.code == Code.CHANGED and bool(first.payload)
        report.add("coap.connect", ok, f"{status(first)}, {len(first.payload)} bytes")
        if first.payload:
            got = first.opt.content_format
            report.add(
                "coap.content-format", got == cf, f"Content-Format {None if got is None else int(got)}"
            )
        second = await ask()
        bodies = [first.payload if ok else b""]
        bodies.append(second.payload if not isinstance(second, str) and second.code == Code.CHANGED else b"")
        _examine_query_requests(report, bodies, peer_key)

        wrong = await ask(payload=b"\x82\x02\xa0", content_format=0)
        report.add("coap.wrong-content-format", _is(wrong, Code.UNSUPPORTED_CONTENT_FORMAT), status(wrong))
        accept = await ask(accept=0)
        report.add("coap.bad-accept", _is(accept, Code.NOT_ACCEPTABLE), status(accept))
        get = await ask(Code.GET)
        report.add("coap.method", _is(get, Code.METHOD_NOT_ALLOWED), status(get))
        garbage = await ask(payload=b"\xff\xfe not cbor", content_format=cf)
        report.add("coap.not-cbor", _is(garbage, Code.BAD_REQUEST), status(garbage))
        token = getattr(_decoded_token(first.payload), "token", None) or bytes(16)
        unsigned = cbor2.dumps([2, {20: token}])  # a bare QueryResponse, no COSE around it
        bare = await ask(payload=unsigned, content_format=cf)
        report.add("coap.unsigned", _is(bare, Code.BAD_REQUEST), status(bare))

        small = await ask(block2=(0, False, 0), blockwise=False)  # 16-byte blocks asked for
        if isinstance(small, str) or small.code != Code.CHANGED:
            report.add("coap.block2", False, status(small))
        else:
            b2 = small.opt.block2
            report.add(
                "coap.block2",
                b2 is not None and b2.size_exponent == 0 and len(small.payload) <= 16,
                f"Block2 #{b2.block_number} of {b2.size} bytes, more={b2.more}: {len(small.payload)} bytes"
                if b2
                else f"no Block2, {len(small.payload)} bytes",
            )
        body = b"\x00" * 100
        codes = []
        for num, start in enumerate(range(0, len(body), 32)):
            last = start + 32 >= len(body)
            answer = await ask(
                payload=body[start : start + 32], content_format=cf, block1=(num, not last, 1),
                size1=len(body) if num == 0 else None, blockwise=False,
            )  # fmt: skip
            codes.append(status(answer))
            if isinstance(answer, str) or (not last and answer.code != Code.CONTINUE):
                break
        continued = all(c.startswith("2.31") for c in codes[:-1]) and len(codes) == 4
        final_ok = codes[-1].startswith("4.00")  # 100 zero bytes are no TEEP message
        report.add("coap.block1", continued and final_ok, ", ".join(codes))
        big = await ask(
            payload=b"\x00" * 32, content_format=cf, block1=(0, True, 1), size1=TOO_LARGE, blockwise=False
        )
        report.add("coap.too-large", _is(big, Code.REQUEST_ENTITY_TOO_LARGE), status(big))
    finally:
        await (oscore_client.close() if oscore_client is not None else ctx.shutdown())


def _is(answer: Any, code: Any) -> bool:
    return not isinstance(answer, str) and answer.code == code


def _decoded_token(data: bytes) -> Any:
    """The QueryRequest inside a COSE object, unverified (for its token), or None."""

    try:
        payload = cose.inspect(data).payload
        return decode(payload) if payload else None
    except (SecurityError, TeepDecodeError):
        return None
