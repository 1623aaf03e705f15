"""Our CoAP client against libcoap's coap-server: block-wise PUT and GET of a 64 KiB component."""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import time
from collections.abc import Iterator

import pytest

from teep_coap.bench.coap_stack import free_udp_pair
from teep_coap.profiles import load_profile
from teep_coap.transport.coap import CoapClient
from teep_coap.transport.coap.credentials import DeviceCredentials

pytestmark = [pytest.mark.interop, pytest.mark.timeout(120)]
PSK = b"teep-interop-psk"


@pytest.fixture
def coap_server(request: pytest.FixtureRequest) -> Iterator[int]:
    binary = request.param
    if shutil.which(binary) is None:
        pytest.fail(f"{binary} not installed (scripts/setup.sh installs libcoap3-bin)")
    port = free_udp_pair()
    cmd = [binary, "-A", "127.0.0.1", "-p", str(port), "-d", "10"]
    if "notls" not in binary:
        cmd += ["-k", PSK.decode()]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    time.sleep(0.3)
    try:
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        yield port
    finally:
        proc.terminate()
        proc.wait(10)


def _profile(name: str, block: int):  # type: ignore[no-untyped-def]
    p = load_profile(name)
    return dataclasses.replace(
        p,
        transport=dataclasses.replace(p.transport, block_size=block),
        limits=dataclasses.replace(p.limits, request_timeout=60.0),
    )


@pytest.mark.parametrize("block", [64, 1024])
@pytest.mark.parametrize(
    ("coap_server", "scheme"),
    [("coap-server-notls", "coap"), ("coap-server-openssl", "coaps"), ("coap-server-gnutls", "coaps")],
    indirect=["coap_server"],
)
async def test_put_get_64k(coap_server: int, scheme: str, block: int) -> None:
    body = os.urandom(64 * 1024)
    if scheme == "coap":
        client = CoapClient(_profile("coap", block), f"coap://127.0.0.1:{coap_server}/tc")
    else:
        creds = DeviceCredentials("interop", "interop", PSK)
        client = CoapClient(_profile("coaps-psk", block), f"coaps://127.0.0.1:{coap_server + 1}/tc", creds)
    try:
        code, _ = await client.request("PUT", body)
        assert code == "2.01"
        code, got = await client.request("GET")
        assert code == "2.05"
        assert got == body
    finally:
        await client.close()
