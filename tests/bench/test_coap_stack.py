"""`bench coap-stack`: our CoAP + DTLS stack and libcoap's C server, the same device sessions in turns."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from teep_coap.bench.coap_stack import SERVERS, libcoap_server, run_coap_stack
from teep_coap.bench.sessions import BenchError

pytestmark = pytest.mark.timeout(240)


def test_both_servers_answer_every_exchange_and_the_engine_is_taken_off() -> None:
    c = run_coap_stack(sessions=400, exchanges=2, rounds=2, concurrency=8, devices=50)
    assert len(c.rounds) == 2
    for ours, theirs in c.rounds:
        assert (ours.server, theirs.server) == SERVERS
        assert ours.failed == 0 and theirs.failed == 0
        assert ours.sessions == theirs.sessions == 400 and ours.exchanges == 2
        assert ours.engine_cpu is not None and 0 < ours.engine_cpu < ours.server_cpu
        assert 0 < ours.stack_ms < ours.cpu_ms
        assert theirs.engine_cpu is None and theirs.stack_ms == theirs.cpu_ms > 0
    figures = c.to_json()
    assert len(figures["ratio_by_round"]) == 2 and set(figures["stack_cpu_ms_per_session"]) == set(SERVERS)


def test_a_missing_or_failing_libcoap_server_is_named() -> None:
    with pytest.raises(BenchError, match=r"no-such-coap-server not found.*libcoap3-bin"):
        run_coap_stack(sessions=10, rounds=1, devices=10, libcoap_executable="no-such-coap-server")
    with pytest.raises(BenchError, match="false exited"), libcoap_server("false"):
        pass


def test_the_cli_prints_json() -> None:
    run = subprocess.run(
        [sys.executable, "-c", "from teep_coap.cli import main; main()", "bench", "coap-stack",
         "--sessions", "500", "--exchanges", "1", "--rounds", "1", "--concurrency", "8", "--json"],
        capture_output=True, text=True, timeout=200,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-800:]
    figures = json.loads(run.stdout)
    ((ours, theirs),) = figures["rounds"]
    assert ours["server"] == "teep-coap" and theirs["server"] == "libcoap"
    assert ours["failed"] == 0 and theirs["failed"] == 0 and ours["exchanges_per_session"] == 1
