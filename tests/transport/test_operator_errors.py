"""Operator mistakes and credential errors, with real processes, sockets and SQLite files.

Busy port refused; credentials added while `tam serve` runs are served; device names cannot leave the
TAM folder; an envelope no Agent can take is refused at `tam component add`; an Agent refusing an
Update closes its session row; a refused replay is audited; each credential error says its cause.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import socket
import time
from pathlib import Path

import pytest
from cli_run import run_cli
from coap_helpers import quick

from teep_coap.bench.sessions import make_world, tam_process
from teep_coap.store.agentdir import init_agent_state, load_agent_state
from teep_coap.transport.base import TransportError, TransportTimeout
from teep_coap.transport.coap import CoapClient, CoapServer
from teep_coap.transport.coap.credentials import load_agent_credentials, provision_device

pytestmark = pytest.mark.timeout(120)


cli = run_cli


def _port_of(uri: str) -> int:
    return int(uri.rsplit(":", 1)[1].split("/", 1)[0])


def test_second_tam_on_a_busy_port_is_refused(tmp_path: Path) -> None:
    world = make_world(tmp_path / "tam", tmp_path / "agents", 1, 64)
    with tam_process("coaps-psk", world.tam_dir) as (uri, _pid):
        port = _port_of(uri)
        second = cli("tam", "serve", "--profile", "coaps-psk", "--dir", str(world.tam_dir),
                     "--bind", f"127.0.0.1:{port}", timeout=30)  # fmt: skip
        assert second.returncode == 2
        last = second.stderr.strip().splitlines()[-1]
        assert last.startswith("teep-coap: error: UDP port") and "already in use" in last
        # a plain UDP socket holding the port is refused the same way (plain coap profile)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as holder:
            holder.bind(("127.0.0.1", 0))
            busy = holder.getsockname()[1]
            third = cli("tam", "serve", "--profile", "coap", "--dir", str(world.tam_dir),
                        "--bind", f"127.0.0.1:{busy}", timeout=30)  # fmt: skip
        assert third.returncode == 2 and "already in use" in third.stderr


def test_credentials_added_while_serving_are_picked_up(tmp_path: Path) -> None:
    world = make_world(tmp_path / "tam", tmp_path / "agents", 1, 64)
    with tam_process("coaps-psk", world.tam_dir) as (uri, _pid):
        provision_device(world.tam_dir, tmp_path / "late", "late-device")
        late = load_agent_credentials(tmp_path / "late")

        async def first_message() -> bytes | None:
            deadline = time.monotonic() + 15
            while True:  # the TAM looks at credentials.toml about once a second
                client = CoapClient(quick("coaps-psk", request_timeout=2.0), uri, late)
                try:
                    return await client.post(b"")
                except TransportError:
                    if time.monotonic() > deadline:
                        raise
                finally:
                    await client.close()

        assert asyncio.run(first_message())  # the QueryRequest that starts a session


async def test_server_update_devices_adds_and_removes(tmp_path: Path) -> None:
    a = provision_device(tmp_path / "tam", tmp_path / "a", "a")
    b = provision_device(tmp_path / "tam", tmp_path / "b", "b")

    async def handler(payload: bytes, peer: object) -> bytes | None:
        return b"hello"

    profile = quick("coaps-psk", request_timeout=1.5)
    async with CoapServer(profile, handler, devices=[a]) as server:
        assert server.update_devices([b]) == (1, 1)
        ok = CoapClient(profile, server.uri, load_agent_credentials(tmp_path / "b"))
        gone = CoapClient(profile, server.uri, load_agent_credentials(tmp_path / "a"))
        try:
            assert await ok.post(b"") == b"hello"
            with pytest.raises(TransportError, match="does not know the PSK identity 'a'"):
                await gone.post(b"")
        finally:
            await ok.close()
            await gone.close()


def test_device_names_cannot_leave_the_tam_folder(tmp_path: Path) -> None:
    tam = tmp_path / "site" / "tam"
    for name in ("../../x", "/etc/x", ".hidden", "a/b", ""):
        r = cli("tam", "credentials", "--dir", str(tam), "--name", name)
        assert r.returncode == 2, name
        assert r.stderr.startswith("teep-coap: error: device name") and r.stderr.count("\n") == 1
    assert not (tmp_path / "x").exists() and not tam.exists()
    assert cli("tam", "credentials", "--dir", str(tam), "--name", "dev-1.a_b").returncode == 0


def _envelope(tmp_path: Path, size: int) -> Path:
    from teep_coap.security.suit.build import build_envelope
    from teep_coap.store.tamdir import init_tam_dir, load_tam_dir

    init_tam_dir(tmp_path / "tam", algs=("esp256",))
    config, store = load_tam_dir(tmp_path / "tam")
    store.close()
    state = init_agent_state(tmp_path / "agent", config.keys[0].public, "esp256")
    env = build_envelope(
        bytes(size), key=config.keys[0], component_id=(b"big",), sequence_number=1,
        vendor_id=state.config.vendor_id, class_id=state.config.class_id,
    )  # fmt: skip
    path = tmp_path / "big.suit"
    path.write_bytes(env)
    return path


def test_oversized_component_refused_at_add_unless_forced(tmp_path: Path) -> None:
    path = _envelope(tmp_path, 1_200_000)
    tam = str(tmp_path / "tam")
    r = cli("tam", "component", "add", "--dir", tam, "--audience", "all", str(path))
    assert r.returncode == 2 and "every Agent would refuse it" in r.stderr
    assert '"envelope_size"' not in cli("tam", "component", "list", "--dir", tam).stdout
    forced = cli("tam", "component", "add", "--dir", tam, "--audience", "all", "--force", str(path))
    assert forced.returncode == 0 and "teep-coap: warning:" in forced.stderr
    assert '"envelope_size"' in cli("tam", "component", "list", "--dir", tam).stdout


def test_some_profiles_too_small_is_a_warning(tmp_path: Path) -> None:
    path = _envelope(tmp_path, 300_000)  # over coap-constrained's 256 KiB, under the others
    r = cli("tam", "component", "add", "--dir", str(tmp_path / "tam"), str(path))
    assert r.returncode == 0
    assert "warning" in r.stderr and "coap-constrained" in r.stderr and "coaps-psk" not in r.stderr


def test_agent_refusing_an_update_leaves_no_open_session(tmp_path: Path) -> None:
    from teep_coap.protocol.agent import AgentEngine
    from teep_coap.store.tamdir import load_tam

    world = make_world(tmp_path / "tam", tmp_path / "agents", 1, 1_100_000)  # Update > the Agent's 1 MiB
    tam = load_tam(world.tam_dir)
    agent = AgentEngine(load_agent_state(world.agent_dirs[0]))
    try:
        for _ in range(2):  # the next session ends the same way
            message = tam.connect("dev-00000")
            rounds = 0
            while message is not None and rounds < 6:
                answer = agent.receive(message)
                message = tam.receive(answer, "dev-00000") if answer else None
                rounds += 1
        sessions = tam.store.sessions()
        assert len(sessions) == 2
        assert all(ended is not None and outcome.startswith("error:") for *_, ended, outcome in sessions)
    finally:
        tam.store.close()


def test_refused_replay_is_audited(tmp_path: Path) -> None:
    from teep_coap.protocol.agent import AgentEngine
    from teep_coap.protocol.errors import InvalidMessage
    from teep_coap.store.tamdir import load_tam

    world = make_world(tmp_path / "tam", tmp_path / "agents", 1, 64)
    now = [time.time()]
    tam = load_tam(world.tam_dir, clock=lambda: now[0])
    agent = AgentEngine(load_agent_state(world.agent_dirs[0]))
    try:
        query_response = agent.receive(tam.connect("dev-00000"))
        assert query_response
        update = tam.receive(query_response, "dev-00000")
        assert update
        success = agent.receive(update)
        assert success and tam.receive(success, "dev-00000") is None
        now[0] += 10 * 24 * 3600  # long after: the next session drops the expired requests
        assert tam.connect("dev-00000")
        with pytest.raises(InvalidMessage):
            tam.receive(query_response, "dev-00000")
        events = [(event, detail) for _, _, event, detail in tam.store.audit_log()]
        refused = [d for e, d in events if e == "refused"]
        assert len(refused) == 1 and "no outstanding request" in refused[0]
        with pytest.raises(InvalidMessage):  # junk is refused without a database write
            tam.receive(b"\xa0junk", "dev-00000")
        assert len(tam.store.audit_log()) == len(events)
    finally:
        tam.store.close()
    listed = cli("tam", "audit", "--dir", str(world.tam_dir), "--event", "refused")
    assert listed.returncode == 0
    [entry] = json.loads(listed.stdout)
    assert entry["session"] is None and "no outstanding request" in entry["detail"]


async def test_credential_errors_name_their_cause(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    d = provision_device(tmp_path / "tam", tmp_path / "agent", "agent-1")
    good = load_agent_credentials(tmp_path / "agent")

    async def handler(payload: bytes, peer: object) -> bytes | None:
        return b"hello"

    profile = quick("coaps-psk", request_timeout=30.0)  # every case must fail long before this
    async with CoapServer(profile, handler, devices=[d]) as server:
        cases = [
            (dataclasses.replace(good, psk=bytes(16)), server.uri, TransportError,
             "alert decrypt_error.*DTLS PSK most likely does not match"),
            (dataclasses.replace(good, psk_identity="nobody"), server.uri, TransportError,
             "does not know the PSK identity 'nobody'"),
        ]  # fmt: skip
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as closed:
            closed.bind(("127.0.0.1", 0))
            free = closed.getsockname()[1]
        cases.append((good, f"coaps://127.0.0.1:{free}/teep", TransportError, "nothing is listening"))
        for creds, uri, kind, text in cases:
            client = CoapClient(profile, uri, creds)
            try:
                with pytest.raises(kind, match=text) as exc:
                    await client.post(b"")
                assert "NetworkError" not in str(exc.value) and "\n" not in str(exc.value)
                assert not isinstance(exc.value, TransportTimeout)  # told at once, not after the timeout
            finally:
                await client.close()
        client = CoapClient(profile, server.uri, good)  # the right key still gets in afterwards
        try:
            assert await client.post(b"") == b"hello"
        finally:
            await client.close()
    refusals = [r.getMessage() for r in caplog.records if "Finished did not verify" in r.getMessage()]
    assert len(refusals) == 1 and "'agent-1'" in refusals[0]


def test_agent_run_with_a_wrong_psk_says_so_in_one_line_at_once(tmp_path: Path) -> None:
    world = make_world(tmp_path / "tam", tmp_path / "agents", 1, 64)
    agent = world.agent_dirs[0]
    toml = agent / "transport.toml"
    lines = toml.read_text().splitlines()
    toml.write_text(
        "\n".join('psk_hex = "' + "00" * 16 + '"' if x.startswith("psk_hex") else x for x in lines)
    )
    with tam_process("coaps-psk", world.tam_dir) as (uri, _pid):
        t0 = time.monotonic()
        run = cli("agent", "run", "--profile", "coaps-psk", "--tam", uri, "--state", str(agent), timeout=60)
        took = time.monotonic() - t0
    assert run.returncode == 2
    error = [line for line in run.stderr.splitlines() if line.startswith("teep-coap: error:")]
    assert (
        len(error) == 1
        and "alert decrypt_error" in error[0]
        and "DTLS PSK most likely does not match" in error[0]
    )
    assert "Traceback" not in run.stderr
    assert took < 20  # the profile's request_timeout (20 s) was not waited out
