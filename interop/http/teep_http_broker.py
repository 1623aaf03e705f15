#!/usr/bin/env python3
"""Run our TEEP Broker + Agent against any TAM that follows draft-ietf-teep-otrp-over-http-15.

    python interop/http/teep_http_broker.py --state AGENTDIR --tam https://tam.example/tam --ca ca.pem

1. probe: the rules of the HTTP binding, checked from the Broker's side (MUST = fail, SHOULD = warn);
2. session: empty POST, then every TAM message goes to our Agent (AGENTDIR, made by
   `teep-coap agent init`) and every Agent answer is POSTed back, until the TAM answers 204.

Each exchange is printed (HTTP status, bytes, TEEP message type). Exit status: 0 when the probe has no
failure and the session ended normally, 1 otherwise, 2 on bad arguments.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path

from teep_coap.store.agentdir import load_agent_state


def describe(data: bytes | None, encoding: str) -> str:
    """TEEP message type of a signed message, read without verifying (for the log only)."""
    names = {1: "QueryRequest", 2: "QueryResponse", 3: "Update", 5: "Success", 6: "Error"}
    if not data:
        return "(empty)"
    try:
        if encoding == "json":
            from teep_coap.security.jose import parse_json

            kind = json.loads(parse_json(data).payload).get("type")
        else:
            import cbor2

            from teep_coap.security.cose import inspect

            kind = cbor2.loads(inspect(data).payload or b"")[0]
    except Exception as exc:  # a log line, never a failure: the Agent judges the message
        return f"(not a signed TEEP message: {exc})"
    return names.get(kind, f"type {kind}")


async def main(args: argparse.Namespace) -> int:
    from teep_coap.model.codes import MEDIA_TYPE_TEEP_CBOR, MEDIA_TYPE_TEEP_JSON
    from teep_coap.profiles.probe import FAIL, probe_tam
    from teep_coap.protocol.broker import BrokerSession, Done, Send
    from teep_coap.security.certs import client_ssl_context
    from teep_coap.transport.base import TransportError
    from teep_coap.transport.http import HttpBrokerClient

    encoding = "json" if args.json else "cbor"
    media_type = MEDIA_TYPE_TEEP_JSON if args.json else MEDIA_TYPE_TEEP_CBOR
    ssl_ctx = client_ssl_context(args.ca) if args.tam.startswith("https:") else None
    ok = True
    if not args.no_probe:
        print(f"probe {args.tam} ({media_type})")
        for check in await probe_tam(
            args.tam, media_type=media_type, ssl_context=ssl_ctx, timeout=args.timeout
        ):
            print(f"  [{check.outcome:4}] {check.rule}: {check.detail}")
            ok = ok and check.outcome != FAIL
    if args.probe_only:
        return 0 if ok else 1

    state = load_agent_state(args.state)
    from teep_coap.protocol.agent import AgentEngine
    from teep_coap.protocol.wire import COSE, JOSE

    agent = AgentEngine(state, wire=JOSE if args.json else COSE)
    print(f"session with {args.tam}")
    client = HttpBrokerClient(args.tam, media_type, ssl_ctx, args.timeout)
    session = BrokerSession(agent, args.tam, max_rounds=args.max_rounds)
    action: Send | Done = session.start()
    try:
        while isinstance(action, Send):
            print(f"  -> POST {len(action.payload):6} bytes {describe(action.payload, encoding)}")
            try:
                answer = await client.post(action.payload)
            except TransportError as exc:
                print(f"  <- {exc}")
                action = session.on_transport_error(exc)
                continue
            print(
                f"  <- {'200' if answer else '204'} {len(answer or b''):6} bytes {describe(answer, encoding)}"
            )
            action = session.on_response(answer)
    finally:
        await client.close()
    last = getattr(agent, "last_response", None)
    print(f"session {'ended' if action.ok else 'FAILED'}: {action.reason}")
    if last is not None:
        print(f"last Agent message: {type(last).__name__} {getattr(agent, 'last_note', '')}".rstrip())
    return 0 if ok and action.ok else 1


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--tam", required=True, help="TAM URI (http:// or https://), e.g. https://127.0.0.1:8443/tam"
    )
    p.add_argument(
        "--state", type=Path, help="Agent folder (teep-coap agent init); needed unless --probe-only"
    )
    p.add_argument("--ca", type=Path, default=None, help="CA certificate to trust (default: system store)")
    p.add_argument("--json", action="store_true", help="application/teep+json with JWS instead of teep+cbor")
    p.add_argument("--timeout", type=float, default=20.0, help="seconds per HTTP request")
    p.add_argument("--max-rounds", type=int, default=16)
    p.add_argument("--probe-only", action="store_true")
    p.add_argument("--no-probe", action="store_true")
    args = p.parse_args(argv)
    if not args.probe_only and args.state is None:
        p.error("--state is required to run a session")
    return args


if __name__ == "__main__":
    arguments = parse(sys.argv[1:])
    try:
        sys.exit(asyncio.run(main(arguments)))
    except Exception as exc:
        from teep_coap.errors import TeepCoapError

        if isinstance(exc, TeepCoapError):
            print(f"error: {exc}", file=sys.stderr)
            sys.exit(2)
        raise
