"""`teep-coap bench sessions` runs real sessions against a TAM process and reports honest figures."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from teep_coap.bench.sessions import (
    BenchError,
    BenchResult,
    engine_cpu_seconds,
    format_result,
    run_bench,
    tree_cpu_seconds,
)
from teep_coap.store.throwaway_pg import postgres_binaries, throwaway_postgres_server

pytestmark = pytest.mark.timeout(120)


@pytest.mark.parametrize("profile", ["coap", "coaps-psk", "coap-oscore"])
def test_small_run(profile: str) -> None:
    r = run_bench(profile, devices=6, concurrency=3, image_size=300)
    assert r.ok == 6 and r.failed == 0
    assert len(r.latencies) == 6 and all(x > 0 for x in r.latencies)
    assert r.percentile(50) <= r.percentile(99)
    assert r.tam_cpu_seconds is not None and r.tam_cpu_seconds > 0
    # the engine's share comes from the TAM's --stats-file: part of the process's CPU, never more
    # (/proc counts CPU in clock ticks of 10 ms: one tick of slack)
    assert r.tam_engine_cpu_seconds is not None
    assert 0 < r.tam_engine_cpu_seconds <= r.tam_cpu_seconds + 0.01
    j = r.to_json()
    assert j["sessions_per_second"] > 0 and j["profile"] == profile
    assert "sessions/s" in format_result(r)
    assert f"in engine calls {j['tam_engine_cpu_ms_per_session']} ms" in format_result(r)
    # a TAM that waits for datagrams gives up its CPU: at least once per session
    assert r.tam_context_switches is not None and r.tam_context_switches >= 6
    assert f"{j['tam_context_switches_per_session']} context switches per session" in format_result(r)
    # SQLite runs inside the TAM: no database server to count
    assert r.database_cpu_seconds is None and j["database_cpu_ms_per_session"] is None
    assert "database server" not in format_result(r)
    # busy shares: CPU over wall time; six sessions leave both sides mostly idle, never above a core
    # (10 ms /proc ticks of slack over a short run)
    tam_busy, client_busy = j["tam_busy_share_per_worker"], j["client_busy_share"]
    assert 0 < tam_busy < 1.1 and 0 < client_busy < 1.1
    assert tam_busy == round(r.tam_cpu_seconds / r.seconds, 3)
    assert f"busy: TAM {tam_busy * 100:.0f} % of a core per worker" in format_result(r)


def test_busy_shares_count_each_worker_s_core() -> None:
    r = BenchResult("coap", 1, 1, 10, 10, 0, 2.0, tam_cpu_seconds=3.0, client_cpu_seconds=1.5, tam_workers=2)
    j = r.to_json()
    assert (j["tam_busy_share_per_worker"], j["client_busy_share"]) == (0.75, 0.75)
    assert j["tam_to_device_cpu_ratio"] == 2.0  # 3 s of TAM CPU against 1.5 s of the devices'
    assert "the TAM's CPU per session 2.0 of the devices'" in format_result(r)
    idle = BenchResult("coap", 1, 1, 1, 0, 1, 0.0)
    assert idle.to_json()["tam_to_device_cpu_ratio"] is None
    assert "the TAM's CPU per session ? of the devices'" in format_result(idle)
    assert BenchResult("coap", 1, 1, 1, 0, 1, 0.0).to_json()["tam_busy_share_per_worker"] is None


def test_sessions_beyond_devices_repeat_devices() -> None:
    seen: list[tuple[int, int, int]] = []
    r = run_bench(
        "coap", devices=2, concurrency=2, sessions=4, image_size=100, progress=lambda *a: seen.append(a)
    )
    # the second session of a device finds nothing to install: still a complete session
    assert r.ok == 4
    assert seen == [(1, 0, 4), (2, 0, 4), (3, 0, 4), (4, 0, 4)]  # the progress display's feed


@pytest.mark.parametrize("profile", ["teep-cbor-http", "teep-cbor-https"])
def test_same_bench_over_http(profile: str) -> None:
    """The session benchmark also runs the HTTP binding's profiles (TAM process with --certs for https)."""
    from teep_coap.profiles import profile_names

    if profile not in profile_names():
        pytest.fail(f"profile {profile} is missing from the shipped profiles")
    r = run_bench(profile, devices=4, concurrency=2, image_size=200)
    assert r.ok == 4 and r.failed == 0


def test_engine_cpu_summed_over_workers(new_pg_database: Callable[[str], str]) -> None:
    """With `--workers 2` each worker appends its own line to the stats file; the bench sums them."""
    url = new_pg_database("stats")
    r = run_bench("coap", devices=8, concurrency=4, image_size=200, tam_workers=2, db=url)
    assert r.ok == 8 and r.tam_cpu_seconds is not None
    assert r.tam_engine_cpu_seconds is not None
    assert 0 < r.tam_engine_cpu_seconds <= r.tam_cpu_seconds + 0.02


def test_rate_spaces_the_sessions_out() -> None:
    """`--rate 5`: the sixth session starts no earlier than 1 s after the first, although four could
    run at once and each takes a few milliseconds."""
    r = run_bench("coap", devices=4, concurrency=4, sessions=6, image_size=100, rate=5.0)
    assert r.ok == 6 and r.failed == 0
    assert r.seconds >= 1.0
    assert r.to_json()["target_sessions_per_second"] == 5.0
    assert "(started at most 5 per second)" in format_result(r)
    assert max(r.latencies) < 1.0  # a session's latency counts from its own start


def test_rate_must_be_positive() -> None:
    with pytest.raises(BenchError, match="above 0"):
        run_bench("coap", devices=1, concurrency=1, rate=0.0)
    with pytest.raises(BenchError, match="above 0"):
        run_bench("coap", devices=1, concurrency=1, rate=float("nan"))


def test_throwaway_postgres_cpu_is_reported_apart() -> None:
    """With `--db postgres` the bench starts the server, so it counts the server's processes' CPU
    (the backends serving the workers) apart from the TAM's."""
    if postgres_binaries() is None:
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) are not installed")
    # enough sessions for several of /proc's 10 ms ticks (about 1 ms of the server's CPU per session)
    r = run_bench(
        "coap", devices=20, concurrency=4, sessions=60, image_size=200, tam_workers=2, db="postgres"
    )
    assert r.ok == 60 and r.database == "postgresql"
    assert r.database_cpu_seconds is not None and r.database_cpu_seconds > 0
    j = r.to_json()
    assert f"database server: {j['database_cpu_ms_per_session']} ms of CPU per session" in format_result(r)


def test_throwaway_server_names_its_main_process() -> None:
    if postgres_binaries() is None:
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) are not installed")
    with throwaway_postgres_server(durable=False) as server:
        pid = server.server_pid()
        assert pid is not None
        assert "postgres" in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
        cpu = tree_cpu_seconds(pid)
        assert cpu is not None and cpu >= 0
    assert server.server_pid() is None  # stopped and deleted


_BURN = "import time\nend = time.process_time() + {s}\nwhile time.process_time() < end: pass\n"


def test_tree_cpu_counts_live_and_ended_children() -> None:
    """A forking server's CPU: its own, its children's while they run and after they ended."""
    me = os.getpid()
    before = tree_cpu_seconds(me)
    assert before is not None
    subprocess.run([sys.executable, "-c", _BURN.format(s=0.3)], check=True, timeout=60)  # ended, waited
    after_ended = tree_cpu_seconds(me)
    assert after_ended is not None and after_ended - before >= 0.25
    live = subprocess.Popen([sys.executable, "-c", _BURN.format(s=30)])
    try:
        deadline = time.monotonic() + 20
        while (tree_cpu_seconds(live.pid) or 0) < 0.3 and time.monotonic() < deadline:
            time.sleep(0.05)
        with_live = tree_cpu_seconds(me)
        assert with_live is not None and with_live - after_ended >= 0.25
    finally:
        live.kill()
        live.wait(10)
    assert tree_cpu_seconds(2**22 + 12345) is None  # no such process


def test_stats_file_needs_every_worker(tmp_path: Path) -> None:
    """A missing worker line (a worker killed at the stop deadline) gives no figure, not half of one."""
    stats = tmp_path / "s.jsonl"
    stats.write_text(json.dumps({"engine_cpu_seconds": 0.5}) + "\n")
    assert engine_cpu_seconds(stats, 1) == 0.5
    assert engine_cpu_seconds(stats, 2) is None
    stats.write_text("not json\n")
    assert engine_cpu_seconds(stats, 1) is None
    assert engine_cpu_seconds(tmp_path / "absent.jsonl", 1) is None
