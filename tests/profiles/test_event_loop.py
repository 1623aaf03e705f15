"""The servers' event loop (`tam serve --loop`, `bench sessions --tam-loop`): uvloop where it is
installed, asyncio's own on request, a clear error for a loop that cannot run; and real TEEP sessions
over loopback against a `tam serve` on each loop, for the transports whose code touches the loop's
transports directly (DTLS, plain CoAP's batch reads, TLS accepted by `loop.start_tls`, OSCORE)."""

from __future__ import annotations

import asyncio
import importlib
import re
from pathlib import Path
from types import ModuleType

import pytest
import uvloop
from cli_run import run_cli

from teep_coap.bench.compare import parse_setup
from teep_coap.bench.sessions import BenchError, run_bench
from teep_coap.profiles import event_loop
from teep_coap.profiles.event_loop import EventLoopError, loop_factory, loop_name, run_on, server_loop


async def _running_loop_name() -> str:
    return loop_name(asyncio.get_running_loop())


def test_each_choice_runs_on_its_loop() -> None:
    assert run_on("asyncio", _running_loop_name()) == "asyncio"
    assert run_on("uvloop", _running_loop_name()) == "uvloop"
    assert run_on("auto", _running_loop_name()) == "uvloop"  # installed with the package
    assert loop_factory("asyncio") is None
    assert loop_factory("auto") is uvloop.new_event_loop


def test_an_unknown_choice_is_refused_and_its_coroutine_closed() -> None:
    main = _running_loop_name()
    with pytest.raises(EventLoopError, match=r"unknown event loop 'tokio'.*auto, uvloop, asyncio"):
        run_on("tokio", main)
    assert main.cr_frame is None  # closed: no "never awaited" warning later


def test_without_uvloop_auto_falls_back_and_uvloop_says_what_to_do(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.import_module

    def no_uvloop(name: str, package: str | None = None) -> ModuleType:
        if name == "uvloop":
            raise ImportError("No module named 'uvloop'")
        return real(name, package)

    monkeypatch.setattr(event_loop.importlib, "import_module", no_uvloop)
    assert loop_factory("auto") is None
    assert run_on("auto", _running_loop_name()) == "asyncio"
    with pytest.raises(EventLoopError, match=r"--loop uvloop: uvloop cannot be imported.*--loop asyncio"):
        loop_factory("uvloop")


def test_compare_takes_the_loop_of_each_side() -> None:
    assert parse_setup("profile=coaps-psk,tam-loop=asyncio").tam_loop == "asyncio"
    assert parse_setup("profile=coaps-psk").tam_loop == "auto"
    assert "TAM on uvloop" in parse_setup("tam-loop=uvloop").label()
    with pytest.raises(BenchError, match="tam-loop is one of auto, uvloop, asyncio"):
        parse_setup("tam-loop=trio")
    with pytest.raises(BenchError, match="TAM event loop 'trio'"):
        run_bench("coaps-psk", devices=1, concurrency=1, tam_loop="trio")


@pytest.mark.parametrize(
    ("profile", "loop", "ran_on"),
    [
        ("coaps-psk", "auto", "uvloop"),
        ("coaps-psk", "asyncio", "asyncio"),
        ("coap-constrained", "uvloop", "uvloop"),
        ("coap", "auto", "uvloop"),
        ("coap", "asyncio", "asyncio"),
        ("coap-oscore", "auto", "uvloop"),
        ("teep-cbor-https", "auto", "asyncio"),
    ],
)
def test_sessions_go_through_on_each_loop(profile: str, loop: str, ran_on: str) -> None:
    """The TAM's own statistics name the loop it ran on, and every session completed."""
    result = run_bench(profile, devices=8, concurrency=4, image_size=200, tam_loop=loop)
    assert result.failures == [] and result.ok == 8
    assert result.tam_event_loop == ran_on


@pytest.mark.parametrize("scheme", ["coap", "coaps", "coap+oscore"])
def test_the_coap_servers_take_the_loop_asked_for(scheme: str) -> None:
    """Plain CoAP, OSCORE and EDHOC read through `add_reader`, which uvloop stops at a socket error:
    their server turns ICMP error reports off (tests/transport/test_icmp_errors.py)."""
    for choice in ("auto", "uvloop", "asyncio"):
        assert server_loop(choice, scheme) == choice


@pytest.mark.parametrize("scheme", ["http", "https"])
def test_an_http_server_stays_on_asyncio(scheme: str) -> None:
    """uvloop starts reading a new TCP connection after `connection_made`, where the HTTPS accept
    pauses it: HTTP(S) stays on asyncio."""
    assert server_loop("auto", scheme) == "asyncio" and server_loop("asyncio", scheme) == "asyncio"
    refusal = f"--loop uvloop serves CoAP profiles only, not {scheme}: use auto or asyncio"
    with pytest.raises(EventLoopError, match=re.escape(refusal)):
        server_loop("uvloop", scheme)


def test_tam_serve_refuses_uvloop_for_http_with_a_message(tmp_path: Path) -> None:
    tam = tmp_path / "tam"
    assert run_cli("tam", "init", "--dir", str(tam)).returncode == 0
    for workers in ("1", "2"):  # with workers, before any is started
        served = run_cli(
            "tam",
            "serve",
            "--profile",
            "teep-cbor-http",
            "--dir",
            str(tam),
            "--loop",
            "uvloop",
            "--workers",
            workers,
        )
        assert served.returncode != 0 and "Traceback" not in served.stderr
        assert "--loop uvloop serves CoAP profiles only, not http" in served.stderr
        assert "worker" not in served.stderr.lower()
