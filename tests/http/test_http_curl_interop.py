"""Our TAM with an HTTP client we did not write: curl (libcurl + OpenSSL) drives a whole TEEP session
over HTTPS on loopback; our Agent engine answers between the requests."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest

from teep_coap.bench.scenario import COMPONENT_ID, engine_handler, teep_world
from teep_coap.model.codes import MEDIA_TYPE_TEEP_CBOR
from teep_coap.profiles import load_profile
from teep_coap.profiles.stack import make_server
from teep_coap.security import certs

pytestmark = pytest.mark.interop


async def curl_post(uri: str, ca: Path, body: bytes, work: Path) -> tuple[int, dict[str, str], bytes]:
    (work / "req").write_bytes(body)
    args = [
        "curl",
        "-sS",
        "--max-time",
        "10",
        "--cacert",
        str(ca),
        "-X",
        "POST",
        "--http1.1",
        "-H",
        f"Accept: {MEDIA_TYPE_TEEP_CBOR}",
        "-D",
        str(work / "headers"),
        "-o",
        str(work / "resp"),
        "-w",
        "%{http_code}",
    ]
    if body:
        args += ["-H", f"Content-Type: {MEDIA_TYPE_TEEP_CBOR}", "--data-binary", f"@{work / 'req'}"]
    else:
        args += ["-H", "Content-Length: 0"]
    proc = await asyncio.create_subprocess_exec(
        *args, uri, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(proc.communicate(), 20)
    assert proc.returncode == 0, err.decode()
    headers = {}
    for line in (work / "headers").read_text().splitlines()[1:]:
        if ":" in line:
            k, v = line.split(":", 1)
            headers[k.strip().lower()] = v.strip()
    resp = (work / "resp").read_bytes() if (work / "resp").exists() else b""
    return int(out.decode()), headers, resp


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
async def test_curl_runs_a_teep_session_against_our_https_tam(tmp_path: Path) -> None:
    profile = load_profile("teep-cbor-https")
    world = teep_world(profile, tmp_path, 4096)
    bundle = certs.write_bundle(tmp_path / "certs")
    statuses = []
    async with make_server(profile, engine_handler(world.tam), certs_path=bundle.directory) as server:
        payload = b""
        for _ in range(6):
            status, headers, body = await curl_post(server.uri, bundle.ca_cert, payload, tmp_path)
            statuses.append(status)
            assert headers.get("x-content-type-options") == "nosniff"
            assert headers.get("referrer-policy") == "no-referrer"
            assert "cache-control" not in headers and "set-cookie" not in headers
            if status == 204:
                break
            assert status == 200 and headers["content-type"] == MEDIA_TYPE_TEEP_CBOR
            answer = world.agent.receive(body)
            assert answer is not None
            payload = answer
    assert statuses == [200, 200, 204]
    assert type(world.agent.last_response).__name__ == "Success"
    assert len(world.agent.state.components.image(COMPONENT_ID)) == 4096
