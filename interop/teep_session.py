#!/usr/bin/env python3
"""A whole TEEP session against our TAM where every CoAP exchange is made by a foreign client.

    python interop/teep_session.py --client libcoap-openssl --profile coaps-psk --block 64

Our side: `teep-coap tam serve` (a process) and `teep-coap agent process` (one call per TAM message:
the Agent only makes and consumes payloads). The foreign side: libcoap's `coap-client-*` (plain CoAP or
DTLS PSK, block size 64..1024) or node-coap (`interop/node/post.js`, plain CoAP). The script loops:
POST the Agent's last answer (empty at first) → feed the TAM's answer to the Agent → until the TAM
answers 2.04 without payload. Exit 0 only if the Trusted Component ended up installed.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
CLIENTS = ("libcoap-openssl", "libcoap-gnutls", "libcoap-notls", "node")
PSK = b"teep-interop-psk"  # ASCII so that libcoap's `-k` takes it as is (16 bytes)
TIMEOUT = 30  # seconds for any one foreign-client call


def teep(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", "from teep_coap.cli import main; main()", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def make_world(root: Path) -> tuple[Path, Path]:
    """One TAM, one device with an ASCII PSK, one Trusted Component for all devices."""
    from teep_coap.bench.sessions import make_world as bench_world
    from teep_coap.transport.coap.credentials import TAM_CREDENTIALS_FILE, provision_device

    world = bench_world(root / "tam", root / "agents", 1, 1800)
    agent_dir = world.agent_dirs[0]
    # replace the random PSK by an ASCII one (libcoap's -k): provision again under the same identity
    (world.tam_dir / TAM_CREDENTIALS_FILE).unlink()
    provision_device(world.tam_dir, agent_dir, agent_dir.name, psk=PSK)
    return world.tam_dir, agent_dir


def foreign_post(
    client: str, uri: str, infile: Path, outfile: Path, cf: int, block: int, identity: str
) -> str:
    """One POST made by the foreign client; returns the response code text; raises on failure."""
    if client == "node":
        cmd = ["node", str(HERE / "node" / "post.js"), uri, str(infile), str(outfile), str(cf)]
        run = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT)
        if run.returncode != 0:
            raise RuntimeError(f"node-coap POST failed ({run.returncode}): {run.stdout} {run.stderr}")
        return run.stdout.strip()
    binary = "coap-client-" + client.split("-", 1)[1]
    cmd = [binary, "-m", "post", "-t", str(cf), "-A", str(cf), "-b", str(block), "-B", str(TIMEOUT)]
    cmd += ["-f", str(infile), "-o", str(outfile)]
    if uri.startswith("coaps://"):
        cmd += ["-k", PSK.decode(), "-u", identity]
    run = subprocess.run([*cmd, uri], capture_output=True, text=True, timeout=TIMEOUT + 5)
    if run.returncode != 0 or run.stderr.strip():
        raise RuntimeError(f"{binary} failed ({run.returncode}): {run.stdout} {run.stderr}".strip())
    return "2.04"


def session(client: str, profile: str, block: int, workdir: Path) -> dict[str, object]:
    from teep_coap.bench.sessions import COMPONENT_ID, tam_process
    from teep_coap.profiles import load_profile

    tam_dir, agent_dir = make_world(workdir)
    cf = load_profile(profile).transport.content_format
    steps: list[str] = []
    with tam_process(profile, tam_dir) as (uri, _pid):
        payload = workdir / "out.cbor"
        payload.write_bytes(b"")
        for rnd in range(1, 9):
            answer = workdir / f"in-{rnd}.cbor"
            if answer.exists():
                answer.unlink()
            code = foreign_post(client, uri, payload, answer, cf, block, agent_dir.name)
            got = answer.read_bytes() if answer.exists() else b""
            steps.append(f"POST {payload.stat().st_size} B -> {code} with {len(got)} B")
            if not got:
                break
            processed = teep("agent", "process", "--state", str(agent_dir), str(answer), "-o", str(payload))
            if processed.returncode != 0:
                raise RuntimeError(f"agent process failed: {processed.stderr}")
            steps.append("agent: " + json.loads(processed.stdout)["note"])
            if payload.stat().st_size == 0:
                break
        else:
            raise RuntimeError("session did not end in 8 rounds")
    status = teep("agent", "status", "--state", str(agent_dir))
    installed = COMPONENT_ID[0].hex() in status.stdout or COMPONENT_ID[0].decode() in status.stdout
    return {"client": client, "profile": profile, "block": block, "steps": steps, "installed": installed}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--client", choices=CLIENTS, required=True)
    ap.add_argument("--profile", choices=("coap", "coap-no-echo", "coaps-psk"), default="coap")
    ap.add_argument("--block", type=int, choices=(16, 32, 64, 128, 256, 512, 1024), default=1024)
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = ap.parse_args()
    if args.client == "node" and args.profile == "coaps-psk":
        ap.error("node-coap speaks plain CoAP only")
    tool = "node" if args.client == "node" else "coap-client-" + args.client.split("-", 1)[1]
    if shutil.which(tool) is None:
        print(f"{tool} not found (scripts/setup.sh installs it)", file=sys.stderr)
        return 3
    work = Path(tempfile.mkdtemp(prefix="teep-interop-"))
    t0 = time.monotonic()
    try:
        result = session(args.client, args.profile, args.block, work)
    except Exception as exc:
        print(f"FAILED: {exc}", file=sys.stderr)
        return 1
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    result["seconds"] = round(time.monotonic() - t0, 2)
    print(json.dumps(result, indent=2))
    return 0 if result["installed"] else 1


if __name__ == "__main__":
    sys.exit(main())
