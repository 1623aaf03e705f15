"""`teep-coap certs`, the X.509 it writes, and the TCP counting relay."""

from __future__ import annotations

import asyncio
import stat
from pathlib import Path

import pytest
from click.testing import CliRunner

from teep_coap.cli import root
from teep_coap.security import certs
from teep_coap.transport.tcp_relay import C2S, S2C, TcpCountingRelay


def test_cli_generate_writes_a_chain_that_verifies(tmp_path: Path) -> None:
    out = tmp_path / "c"
    result = CliRunner().invoke(
        root, ["certs", "generate", "--out", str(out), "--client", "dev-1", "--host", "tam.test"]
    )
    assert result.exit_code == 0, result.output
    for name in ("ca.pem", "ca.key", "server.pem", "server.key", "client.pem", "client.key"):
        assert (out / name).is_file()
    for key in ("ca.key", "server.key", "client.key"):
        assert stat.S_IMODE((out / key).stat().st_mode) == 0o600
    ca = certs.read_certificate(out / "ca.pem")
    server = certs.read_certificate(out / "server.pem")
    server.verify_directly_issued_by(ca)
    certs.read_certificate(out / "client.pem").verify_directly_issued_by(ca)
    info = certs.describe_certificate(server)
    assert info["subject_alt_names"] == "tam.test" and info["ca"] == "False"
    assert certs.describe_certificate(ca)["ca"] == "True"
    shown = CliRunner().invoke(root, ["certs", "show", str(out / "server.pem")])
    assert shown.exit_code == 0 and "tam.test" in shown.output


def test_refusals_are_typed(tmp_path: Path) -> None:
    (tmp_path / "junk.pem").write_text("-----BEGIN CERTIFICATE-----\nnope\n-----END CERTIFICATE-----\n")
    with pytest.raises(certs.CertificateError):
        certs.read_certificate(tmp_path / "junk.pem")
    with pytest.raises(certs.CertificateError):
        certs.write_bundle(tmp_path / "x", days=0)
    with pytest.raises(certs.CertificateError):
        certs.server_ssl_context(tmp_path / "junk.pem", tmp_path / "missing.key")
    bad = CliRunner().invoke(root, ["certs", "generate", "--out", str(tmp_path / "y"), "--days", "0"])
    assert bad.exit_code != 0


async def test_relay_forwards_unchanged_and_counts_each_direction() -> None:
    received = bytearray()

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            received.extend(data)
            writer.write(data[::-1])
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with TcpCountingRelay("127.0.0.1", port) as relay:
        reader, writer = await asyncio.open_connection("127.0.0.1", relay.port)
        payload = bytes(range(256)) * 1000
        writer.write(payload)
        await writer.drain()
        back = await asyncio.wait_for(reader.readexactly(len(payload)), 5)
        writer.close()
    server.close()
    await server.wait_closed()
    assert bytes(received) == payload
    assert len(back) == len(payload)
    assert relay.count(direction=C2S) == len(payload) and relay.count(direction=S2C) == len(payload)
    assert relay.connections == 1
    assert b"".join(c.data for c in relay.chunks if c.direction == C2S) == payload
