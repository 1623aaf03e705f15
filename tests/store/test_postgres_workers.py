"""Several TAM processes sharing one real PostgreSQL server (a throwaway one started here).

Two levels: processes racing on the same rows through TamStore (tokens, claims, component rows),
and `tam serve --workers 2` on one UDP port serving many simulated devices end to end. Each checks
what sharing must never break: no token accepted twice, no request claimed twice, no component
installed twice, no session row lost, the policy applied once per device.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import os
from collections import Counter
from collections.abc import Callable
from typing import Any

from teep_coap.store.tam_db import TamStore

RACERS = 3  # processes racing on the same rows
ROWS = 60  # tokens / requests / devices each racer goes for
CID = (b"race-tc",)


def _race(url: str, barrier: Any, out: Any) -> None:
    """One racer: the same tokens, requests and devices as every other racer, at the same moment."""
    store = TamStore(url)
    won_tokens: list[int] = []
    won_claims: list[int] = []
    errors: list[str] = []
    devices = [d.id for d in store.devices()]
    requests = sorted(o.id for o in store.outstanding())
    barrier.wait(30)
    for i in range(ROWS):
        try:
            if store.spend_token(hashlib.sha256(b"tok%d" % i).digest(), 1e12):
                won_tokens.append(i)
            if store.claim(requests[i], devices[i]):
                won_claims.append(requests[i])
                # What the TAM does after winning a Success: record the install.
                store.record_changes(devices[i], 2.0, installed={CID: 1}, removed=[])
            # Every racer reports the same device state at once (QueryResponse): first-time inserts
            # of the same rows by several processes.
            store.set_device_components(devices[(i * 7) % ROWS], 3.0, wanted={(b"w%d" % i,): None})
        except Exception as exc:  # reported to the test, which fails on any
            errors.append(f"{type(exc).__name__}: {exc}")
    store.close()
    out.put((won_tokens, won_claims, errors))


def test_racing_processes_win_each_row_once(new_pg_database: Callable[[str], str]) -> None:
    url = new_pg_database("race")
    store = TamStore(url)
    sid = store.start_session(1.0, device_id=None, transport_identity=None)
    for i in range(ROWS):
        dev = store.add_device(kid=b"%032d" % i, alg=-7, public_key=b"pem", now=1.0).id
        store.add_outstanding(
            session_id=sid, device_id=dev, kind="update", token=b"t%d" % i, challenge=None,
            now=1.0, lifetime=1e9, cap=4,
        )  # fmt: skip
    ctx = multiprocessing.get_context("spawn")
    barrier, out = ctx.Barrier(RACERS), ctx.Queue()
    procs = [ctx.Process(target=_race, args=(url, barrier, out)) for _ in range(RACERS)]
    for p in procs:
        p.start()
    results = [out.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(30)
    assert [e for _, _, errs in results for e in errs] == []
    tokens = Counter(t for won, _, _ in results for t in won)
    claims = Counter(c for _, won, _ in results for c in won)
    assert sorted(tokens) == list(range(ROWS)) and set(tokens.values()) == {1}
    assert len(claims) == ROWS and set(claims.values()) == {1}
    for dev in store.devices():
        comps = store.device_components(dev.id)
        assert [(c.component_id, c.installed_seq) for c in comps if c.installed_seq] == [(CID, 1)]
    store.close()


def test_two_workers_on_one_port_serve_many_devices(new_pg_database: Callable[[str], str]) -> None:
    """`tam serve --workers 2 --db postgresql…` with 40 devices, two sessions each: every session
    completes and is recorded once, every Update is claimed once, each device's component row is
    installed once. The benchmark's simulated Agents live only during their session (bench/fleet.py),
    so each device's second session installs again: two `success` sessions and two Updates a device."""
    from teep_coap.bench.sessions import run_bench

    url = new_pg_database("workers")
    devices = 40
    result = run_bench("coap", devices=devices, concurrency=8, sessions=2 * devices, tam_workers=2, db=url)
    assert result.failures == [] and result.ok == 2 * devices
    assert len(result.tam_peak_rss_mib) == 2  # two workers ran (the supervisor is not counted)
    store = TamStore(url)
    sessions = store.sessions()
    assert len(sessions) == 2 * devices
    assert all(s[3] is not None and s[4] == "success" for s in sessions)  # every session row ended
    per_device = Counter(s[1] for s in sessions)
    assert len(per_device) == devices and set(per_device.values()) == {2}
    log = store.audit_log()
    events = Counter(e for _, _, e, _ in log)
    assert events["send-update"] == events["recv-success"] == 2 * devices
    assert events["session-start"] == events["session-end"] == 2 * devices
    updates = [o for o in store.outstanding() if o.kind == "update"]
    assert len(updates) == 2 * devices and {o.state for o in updates} == {"answered"}
    assert len({o.token for o in updates}) == 2 * devices
    assert Counter(o.device_id for o in updates) == {d: 2 for d in per_device}
    for dev in store.devices():
        installed = [c for c in store.device_components(dev.id) if c.installed_seq is not None]
        assert len(installed) == 1 and installed[0].installed_seq >= 1
    store.close()


def test_workers_refuse_sqlite(tmp_path: os.PathLike[str]) -> None:
    """N > 1 workers on the folder's SQLite file: a one-line error saying what to use instead."""
    import subprocess
    import sys
    from pathlib import Path

    tam = Path(tmp_path) / "tam"
    cli = [sys.executable, "-c", "from teep_coap.cli import main; main()"]
    subprocess.run([*cli, "tam", "init", "--dir", str(tam)], check=True, capture_output=True, timeout=120)
    done = subprocess.run(
        [*cli, "tam", "serve", "--profile", "coap", "--dir", str(tam), "--workers", "2"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert done.stderr.startswith("teep-coap: error: --workers 2 needs a database the workers can share")
    assert "Traceback" not in done.stderr


def _tam_folder(tmp: os.PathLike[str]) -> tuple[list[str], str]:
    import subprocess
    import sys
    from pathlib import Path

    tam = Path(tmp) / "tam"
    cli = [sys.executable, "-c", "from teep_coap.cli import main; main()"]
    subprocess.run([*cli, "tam", "init", "--dir", str(tam)], check=True, capture_output=True, timeout=120)
    return cli, str(tam)


def test_workers_refuse_a_port_another_process_holds(
    new_pg_database: Callable[[str], str], tmp_path: os.PathLike[str]
) -> None:
    """The parent probes the port once: another program there is refused before any worker starts."""
    import socket
    import subprocess

    cli, tam = _tam_folder(tmp_path)
    url = new_pg_database("busy")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as other:
        other.bind(("127.0.0.1", 0))
        port = other.getsockname()[1]
        done = subprocess.run(
            [*cli, "tam", "serve", "--profile", "coap", "--dir", tam, "--db", url, "--workers", "2",
             "--bind", f"127.0.0.1:{port}"],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
    assert done.returncode == 2
    assert f"UDP port {port} on 127.0.0.1 is already in use" in done.stderr
    assert "Traceback" not in done.stderr and done.stdout == ""


def _health_pids(port: int, tries: int) -> set[int]:
    """The pids in `tries` CoAP GET /health answers, each from a new UDP socket (a new source port,
    so the kernel hashes it afresh: 40 tries all on one of two workers is 2^-39)."""
    import socket

    from aiocoap import CON, GET, Message

    seen: set[int] = set()
    for i in range(tries):
        request = Message(code=GET, uri_path=("health",))
        request.mtype, request.mid, request.token = CON, i, b""
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.settimeout(5)
            sock.sendto(bytes(request.encode()), ("127.0.0.1", port))
            answer = Message.decode(sock.recv(2048))
        text = answer.payload.decode()
        assert text.startswith("ok pid "), text
        seen.add(int(text.split()[2]))
    return seen


def test_a_dead_worker_stops_the_others(
    new_pg_database: Callable[[str], str], tmp_path: os.PathLike[str]
) -> None:
    """Both workers answer GET /health on the shared UDP port; SIGKILL one: the parent stops the
    other and exits 2 naming the dead one."""
    import signal
    import subprocess

    from teep_coap.bench.sessions import tam_pids

    cli, tam = _tam_folder(tmp_path)
    url = new_pg_database("dead")
    proc = subprocess.Popen(
        [*cli, "tam", "serve", "--profile", "coap", "--dir", tam, "--db", url, "--workers", "2", "-q"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        banner = proc.stdout.readline()
        assert banner.startswith("TAM serving coap://127.0.0.1:") and "2 workers" in banner
        workers = tam_pids(proc.pid)
        assert len(workers) == 2 and proc.pid not in workers
        port = int(banner.split()[2].rsplit(":", 1)[1].split("/", 1)[0])
        assert _health_pids(port, 40) == set(workers)  # both workers answer on the shared port
        os.kill(workers[0], signal.SIGKILL)
        assert proc.wait(30) == 2
        assert proc.stderr is not None
        assert f"TAM worker {workers[0]} exited with status -9" in proc.stderr.read()
        for pid in workers[1:]:  # the survivor was stopped (and reaped) by the parent
            assert not os.path.exists(f"/proc/{pid}")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def test_workers_refuse_otrp(tmp_path: os.PathLike[str]) -> None:
    """OTrP's TAM keeps its sessions in memory: N > 1 workers are refused before its folder is read."""
    import subprocess
    import sys

    cli = [sys.executable, "-c", "from teep_coap.cli import main; main()"]
    done = subprocess.run(
        [*cli, "tam", "serve", "--profile", "otrp-json-http", "--dir", str(tmp_path), "--workers", "2"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.strip() == (
        "teep-coap: error: --workers 2 is implemented for TEEP profiles, not the OTrP profile "
        "'otrp-json-http' (its TAM keeps sessions in memory): serve it with --workers 1"
    )
