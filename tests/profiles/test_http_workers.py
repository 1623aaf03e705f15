"""`tam serve --workers N` over HTTP: N processes listening on one TCP port (SO_REUSEPORT), one
real PostgreSQL database (a throwaway server), real TEEP sessions over loopback HTTP.

What must hold: every session completes and is recorded once whichever worker each connection
reached; the kernel really spreads connections (both worker pids answer, both served sessions); a
port another program holds is refused, for a lone server and for a set of workers alike.
"""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import aiohttp
import pytest

from teep_coap.bench.fleet import drive_fleet, make_fleet_world
from teep_coap.bench.sessions import run_bench, tam_pids, tam_process
from teep_coap.store.tam_db import TamStore

pytestmark = pytest.mark.timeout(240)
CLI = [sys.executable, "-c", "from teep_coap.cli import main; main()"]


def test_bench_sessions_with_two_http_workers(new_pg_database: Callable[[str], str]) -> None:
    """`bench sessions --profile teep-cbor-http --tam-workers 2 --db …`: every session completes,
    each is one `success` row, each Update claimed once."""
    url = new_pg_database("httpworkers")
    devices = 20
    result = run_bench(
        "teep-cbor-http", devices=devices, concurrency=6, sessions=2 * devices, tam_workers=2, db=url
    )
    assert result.failures == [] and result.ok == 2 * devices
    assert result.tam_workers == 2 and len(result.tam_peak_rss_mib) == 2
    assert result.tam_engine_cpu_seconds is not None  # both workers wrote their stats line
    store = TamStore(url)
    sessions = store.sessions()
    assert len(sessions) == 2 * devices
    assert all(s[3] is not None and s[4] == "success" for s in sessions)
    assert set(Counter(s[1] for s in sessions).values()) == {2}
    updates = [o for o in store.outstanding() if o.kind == "update"]
    assert len(updates) == 2 * devices and {o.state for o in updates} == {"answered"}
    store.close()


def test_https_workers_get_the_certificate_folder(new_pg_database: Callable[[str], str]) -> None:
    """Over HTTPS each worker is started with the parent's --certs and serves TLS on the shared port."""
    url = new_pg_database("httpsworkers")
    result = run_bench("teep-cbor-https", devices=6, concurrency=3, image_size=200, tam_workers=2, db=url)
    assert result.failures == [] and result.ok == 6 and len(result.tam_peak_rss_mib) == 2


async def _health_pids(port: int, tries: int) -> Counter[int]:
    """The pid in each of `tries` GET /health answers, each over a new TCP connection."""
    seen: Counter[int] = Counter()
    timeout = aiohttp.ClientTimeout(total=5)
    for _ in range(tries):
        async with (
            aiohttp.ClientSession(timeout=timeout, connector=aiohttp.TCPConnector(force_close=True)) as s,
            s.get(f"http://127.0.0.1:{port}/health") as got,
        ):
            assert got.status == 200
            text = await got.text()
            assert text.startswith("ok pid ")
            seen[int(text.split()[2])] += 1
    return seen


def test_both_http_workers_answer_and_serve_sessions(
    new_pg_database: Callable[[str], str], tmp_path: Path
) -> None:
    """New connections reach both workers (their pids in the health answers), and each worker
    served part of the sessions (its own line in --stats-file)."""
    url = new_pg_database("httpboth")
    world = make_fleet_world(tmp_path / "tam", tmp_path / "creds", 12, 200, "teep-cbor-http", db=url)
    stats = tmp_path / "stats.jsonl"
    extra = ("--db", url, "--workers", "2", "--stats-file", str(stats), "--loop", "asyncio")
    with tam_process("teep-cbor-http", world.tam_dir, extra=extra) as (uri, pid):
        workers = tam_pids(pid)
        assert len(workers) == 2 and pid not in workers
        port = int(uri.rsplit(":", 1)[1].split("/", 1)[0])
        # Each new connection goes to one worker at random: 40 all to the same one is 2^-39.
        seen = asyncio.run(_health_pids(port, 40))
        assert set(seen) == set(workers), seen
        drive = asyncio.run(drive_fleet("teep-cbor-http", uri, world, 36, 4))
    assert drive.failures == [] and len(drive.latencies) == 36
    lines = [json.loads(line) for line in stats.read_text().splitlines()]
    assert sorted(line["pid"] for line in lines) == sorted(workers)
    assert sum(line["sessions_done"] for line in lines) == 36
    assert all(line["sessions_done"] > 0 for line in lines), lines  # 36 on one worker: 2^-35
    assert all(line["sessions_failed"] == 0 for line in lines)
    assert [line["event_loop"] for line in lines] == ["asyncio", "asyncio"]  # --loop reached each worker


def _serve(tam: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, "tam", "serve", "--profile", "teep-cbor-http", "--dir", str(tam), *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize("holder_shares", [False, True], ids=["plain-listener", "reuseport-listener"])
def test_a_busy_tcp_port_is_refused(
    new_pg_database: Callable[[str], str], tmp_path: Path, holder_shares: bool
) -> None:
    """Another program listening on the port (even one that set SO_REUSEPORT itself, as a worker of
    another TAM does) is refused: by a lone server, and by the parent before any worker starts."""
    tam = tmp_path / "tam"
    subprocess.run([*CLI, "tam", "init", "--dir", str(tam)], check=True, capture_output=True, timeout=120)
    url = new_pg_database("httpbusy")
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as other:
        if holder_shares:
            other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        lone = _serve(tam, "--bind", f"127.0.0.1:{port}")
        several = _serve(tam, "--bind", f"127.0.0.1:{port}", "--db", url, "--workers", "2")
    for done in (lone, several):
        assert done.returncode == 2, done.stderr
        last = done.stderr.strip().splitlines()[-1]
        assert last == (
            f"teep-coap: error: TCP port {port} on 127.0.0.1 is already in use (another `tam serve`?); "
            "stop it or choose another --bind"
        )
        assert "Traceback" not in done.stderr and done.stdout == ""
