"""DTLS PSKs longer than 16 bytes never reach the DTLS stack.

DTLSSocket copies a configured PSK into tinydtls's 16-byte buffer without checking its length. Before
this was checked, a `tam serve` with one device configured with a 64-byte key died of SIGSEGV as soon
as any peer's ClientKeyExchange named that device's identity — no key needed. Now every place a PSK is
made refuses such a key by name, a running TAM keeps its devices when such an entry is added to its
credentials file, and the server's look-up refuses one that got past those.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from cli_run import run_cli
from coap_helpers import quick

from teep_coap.bench.lean_dtls import LeanDtlsClient
from teep_coap.bench.sessions import make_world, tam_process
from teep_coap.transport.base import TransportError
from teep_coap.transport.coap import CoapClient, CoapServer
from teep_coap.transport.coap.credentials import (
    PSK_MAX_BYTES,
    CredentialsError,
    DeviceCredentials,
    load_agent_credentials,
    load_tam_credentials,
    provision_device,
)
from teep_coap.transport.coap.server import IndexedCredentials

pytestmark = pytest.mark.timeout(120)

LONG = bytes(range(64))


cli = run_cli


def _append_device(tam_dir: Path, identity: str, psk: bytes) -> None:
    """A [[device]] entry written by hand, as an operator might (no check on the way in)."""
    with (tam_dir / "credentials.toml").open("a", encoding="utf-8") as f:
        f.write(f'\n[[device]]\nname = "{identity}"\npsk_identity = "{identity}"\npsk_hex = "{psk.hex()}"\n')


@pytest.mark.parametrize("size", [PSK_MAX_BYTES + 1, 32, 64])
def test_a_long_psk_is_refused_wherever_one_is_made(tmp_path: Path, size: int) -> None:
    key = LONG[:size]
    with pytest.raises(CredentialsError, match=f"psk is {size} bytes.*at most 16"):
        provision_device(tmp_path / "tam", tmp_path / "agent", "long-key", psk=key)
    assert not (tmp_path / "agent" / "transport.toml").exists()
    with pytest.raises(CredentialsError, match=f"psk is {size} bytes"):
        DeviceCredentials("long-key", "long-key", key)

    provision_device(tmp_path / "tam", tmp_path / "agent", "good")  # a 16-byte key of its own
    _append_device(tmp_path / "tam", "long-key", key)
    with pytest.raises(CredentialsError, match=rf"credentials.toml device #2: psk is {size} bytes"):
        load_tam_credentials(tmp_path / "tam")

    toml = tmp_path / "agent" / "transport.toml"
    lines = toml.read_text().splitlines()
    toml.write_text("\n".join(f'psk_hex = "{key.hex()}"' if x.startswith("psk_hex") else x for x in lines))
    with pytest.raises(CredentialsError, match=f"transport.toml.*psk is {size} bytes"):
        load_agent_credentials(tmp_path / "agent")


def test_the_cli_refuses_a_long_psk_in_one_line(tmp_path: Path) -> None:
    world = make_world(tmp_path / "tam", tmp_path / "agents", 1, 64)
    tam = "coaps://127.0.0.1:9/teep"
    run = cli("agent", "run", "--profile", "coaps-psk", "--tam", tam, "--state", str(world.agent_dirs[0]),
              "--psk-hex", LONG[:32].hex(), "--psk-identity", "dev")  # fmt: skip
    assert run.returncode == 2 and "psk is 32 bytes" in run.stderr and "Traceback" not in run.stderr
    check = cli("check", "tam", tam, "--psk-hex", LONG[:17].hex(), "--psk-identity", "x")
    assert check.returncode == 2 and "17 bytes" in check.stderr and "Traceback" not in check.stderr


def test_the_servers_look_up_never_hands_over_a_long_key() -> None:
    creds = IndexedCredentials()
    with pytest.raises(CredentialsError, match="psk is 32 bytes"):
        creds.set_psk("dev", LONG[:32])
    # an entry made the aiocoap way, past set_psk
    creds.load_from_dict(
        {"coaps://*": {"dtls": {"psk": {"hex": LONG[:32].hex()}, "client-identity": {"ascii": "dev"}}}}
    )
    with pytest.raises(KeyError):
        creds.find_dtls_psk(b"dev")
    creds.set_psk("ok", bytes(16))
    assert creds.find_dtls_psk(b"ok")[0] == bytes(16)


def test_tam_serve_refuses_a_long_psk_at_start(tmp_path: Path) -> None:
    world = make_world(tmp_path / "tam", tmp_path / "agents", 1, 64)
    _append_device(world.tam_dir, "long-key", LONG)
    run = cli("tam", "serve", "--profile", "coaps-psk", "--dir", str(world.tam_dir), timeout=60)
    assert run.returncode == 2, (run.returncode, run.stderr[-500:])  # was: started, then SIGSEGV (-11)
    assert "psk is 64 bytes" in run.stderr and "Traceback" not in run.stderr


def test_a_long_psk_added_while_serving_neither_crashes_nor_unserves(tmp_path: Path) -> None:
    world = make_world(tmp_path / "tam", tmp_path / "agents", 1, 64)
    good = load_agent_credentials(world.agent_dirs[0])
    profile = quick("coaps-psk", request_timeout=3.0)

    async def first_message(creds: DeviceCredentials) -> bytes | None:
        client = LeanDtlsClient(profile, uri, creds)
        try:
            return await asyncio.wait_for(client.post(b""), 10)
        finally:
            await client.close()

    with tam_process("coaps-psk", world.tam_dir) as (uri, pid):
        _append_device(world.tam_dir, "long-key", LONG)
        time.sleep(2.5)  # the TAM looks at credentials.toml about once a second
        # a peer that knows no key at all, only the identity (before the check: the TAM died here)
        with pytest.raises((TransportError, TimeoutError)):
            asyncio.run(first_message(DeviceCredentials("long-key", "long-key", bytes(16))))
        assert Path(f"/proc/{pid}").exists()
        assert "State:\tZ" not in Path(f"/proc/{pid}/status").read_text()
        assert asyncio.run(first_message(good))  # the devices served so far still are


async def test_a_psk_identity_over_32_bytes_is_named_before_any_handshake(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """tinydtls takes identities of at most 32 bytes; a longer one failed every handshake with an
    internal_error alert that read like a wrong key. Device names (the default identity) may be
    longer, so the server names such a device when it loads it and both clients refuse at once."""
    fits = provision_device(tmp_path / "tam", tmp_path / "fits", "d" * 32)
    long = provision_device(tmp_path / "tam", tmp_path / "long", "d" * 33)

    async def handler(payload: bytes, peer: object) -> bytes | None:
        return b"hello"

    profile = quick("coaps-psk", request_timeout=3.0)
    async with CoapServer(profile, handler, devices=[fits, long]) as server:
        assert "psk_identity 'ddddddddddddddddddddddddddddddddd' is 33 bytes" in caplog.text
        ok = CoapClient(profile, server.uri, load_agent_credentials(tmp_path / "fits"))
        try:
            assert await ok.post(b"") == b"hello"
        finally:
            await ok.close()
        with pytest.raises(TransportError, match=r"is 33 bytes.*at most 32"):
            LeanDtlsClient(profile, server.uri, load_agent_credentials(tmp_path / "long"))
        client = CoapClient(profile, server.uri, load_agent_credentials(tmp_path / "long"))
        t0 = time.monotonic()
        try:
            with pytest.raises(CredentialsError, match=r"is 33 bytes.*at most 32"):
                await client.post(b"")
        finally:
            await client.close()
        assert time.monotonic() - t0 < 1.0  # refused before any datagram, not after a timeout
