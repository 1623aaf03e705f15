#!/usr/bin/env python3
"""Serve our TAM over HTTP(S) (draft-ietf-teep-otrp-over-http-15) for interop runs by hand.

    teep-coap certs generate --out /tmp/certs
    teep-coap tam init --dir /tmp/tam ...            # keys, database; add devices and components
    python interop/http/serve_our_tam.py --tam-dir /tmp/tam --certs /tmp/certs --port 8443

Prints the TAM URI and serves until Ctrl-C. `--profile` picks the encoding and scheme
(teep-cbor-https by default; teep-cbor-http, teep-json-http(s) work too). Binds 127.0.0.1 unless
`--host` says otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path


async def serve(args: argparse.Namespace) -> None:
    from teep_coap.bench.scenario import engine_handler
    from teep_coap.profiles import load_profile
    from teep_coap.profiles.stack import make_server
    from teep_coap.store.tamdir import load_tam

    profile = load_profile(args.profile)
    tam = load_tam(args.tam_dir)
    if profile.encoding == "json":
        import dataclasses

        from teep_coap.protocol.wire import JOSE

        tam = dataclasses.replace(tam, wire=JOSE)  # TEEP JSON + JWS on the wire
    server = make_server(profile, engine_handler(tam), host=args.host, port=args.port, certs_path=args.certs)
    await server.start()
    print(f"TAM serving {server.uri} ({profile.name}, {profile.media_type})", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await server.stop()


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tam-dir", type=Path, required=True, help="TAM folder (teep-coap tam init)")
    p.add_argument("--profile", default="teep-cbor-https")
    p.add_argument("--certs", type=Path, default=None, help="folder of `teep-coap certs generate` (HTTPS)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8443)
    args = p.parse_args(argv)
    try:
        asyncio.run(serve(args))
    except KeyboardInterrupt:
        return 0
    except Exception as exc:
        from teep_coap.errors import TeepCoapError

        if isinstance(exc, TeepCoapError):
            print(f"error: {exc}", file=sys.stderr)
            return 2
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
