"""TamStore against a real SQLite file (and PostgreSQL when a throwaway server can be started)."""

from __future__ import annotations

import multiprocessing
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from teep_coap.store.agentdir import init_agent_state
from teep_coap.store.tam_db import (
    ANSWERED,
    OPEN,
    SUPERSEDED,
    DuplicateDevice,
    Outstanding,
    StoreError,
    TamStore,
    component_from_key,
    component_key,
)

CID_A = (b"TEEP-Device", b"SecureFS", b"\x01" * 16, b"ta")
CID_B = (b"TEEP-Device", b"SecureFS", b"\x02" * 16, b"ta")


@pytest.fixture
def store(tmp_path: Path) -> TamStore:
    s = TamStore(f"sqlite:///{tmp_path / 'tam.sqlite'}")
    yield s
    s.close()


def _device(store: TamStore, kid: bytes = b"k" * 32, **kw: object) -> int:
    return store.add_device(kid=kid, alg=-9, public_key=b"PEM", now=1.0, **kw).id  # type: ignore[arg-type]


def _query(
    store: TamStore,
    session_id: int,
    device_id: int | None,
    *,
    token: bytes | None = None,
    challenge: bytes | None = None,
    now: float = 1.0,
    lifetime: int = 9,
    cap: int = 4,
) -> Outstanding:
    """One outstanding QueryRequest, with the values most tests do not care about."""
    return store.add_outstanding(
        session_id=session_id,
        device_id=device_id,
        kind="query",
        token=token,
        challenge=challenge,
        now=now,
        lifetime=lifetime,
        cap=cap,
    )


def test_component_key_round_trip() -> None:
    assert component_from_key(component_key(CID_A)) == CID_A
    assert component_key(CID_A) != component_key(CID_B)


def test_devices_unique_kid_and_transport_ids(store: TamStore) -> None:
    _device(store, psk_identity="dev1", oscore_id="01")
    with pytest.raises(DuplicateDevice):
        _device(store)
    with pytest.raises(DuplicateDevice):
        _device(store, kid=b"x" * 32, psk_identity="dev1")
    with pytest.raises(DuplicateDevice):
        _device(store, kid=b"y" * 32, oscore_id="01")
    _device(store, kid=b"z" * 32)  # no transport ids: fine, NULLs do not clash
    _device(store, kid=b"w" * 32)
    assert store.device_by_transport_identity("dev1").kid == b"k" * 32  # type: ignore[union-attr]
    assert store.device_by_transport_identity("01").kid == b"k" * 32  # type: ignore[union-attr]
    assert store.device_by_transport_identity("nope") is None
    assert len(store.devices()) == 3


def test_outstanding_cap_supersedes_oldest(store: TamStore) -> None:
    dev = _device(store)
    sid = store.start_session(1.0, device_id=dev, transport_identity=None)
    for i in range(5):
        _query(store, sid, dev, token=bytes([i]) * 16, now=10.0 + i, lifetime=100, cap=3)
    states = [o.state for o in store.outstanding(dev)]
    assert states == [SUPERSEDED, SUPERSEDED, OPEN, OPEN, OPEN]


def test_duplicate_open_token_refused(store: TamStore) -> None:
    dev = _device(store)
    sid = store.start_session(1.0, device_id=dev, transport_identity=None)
    _query(store, sid, dev, token=b"t" * 16)
    with pytest.raises(StoreError, match="already outstanding"):
        _query(store, sid, dev, token=b"t" * 16)


def test_claim_only_once(store: TamStore) -> None:
    dev = _device(store)
    sid = store.start_session(1.0, device_id=None, transport_identity=None)
    o = _query(store, sid, None, challenge=b"c" * 16)
    assert store.find_outstanding(challenge=b"c" * 16, device_id=dev)[0].id == o.id
    assert store.claim(o.id, dev) is True
    assert store.claim(o.id, dev) is False
    row = store.find_outstanding(challenge=b"c" * 16)[0]
    assert (row.state, row.device_id) == (ANSWERED, dev)


def _claim_in_process(url: str, oid: int, dev: int, q: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    s = TamStore(url)
    q.put(s.claim(oid, dev))
    s.close()


def test_claim_race_between_processes(tmp_path: Path) -> None:
    """Two TAM processes sharing one database: exactly one wins the same answer."""
    url = f"sqlite:///{tmp_path / 'shared.sqlite'}"
    s = TamStore(url)
    dev = _device(s)
    sid = s.start_session(1.0, device_id=dev, transport_identity=None)
    o = _query(s, sid, dev, token=b"r" * 16)
    ctx = multiprocessing.get_context("spawn")
    q = ctx.Queue()
    procs = [ctx.Process(target=_claim_in_process, args=(url, o.id, dev, q)) for _ in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    results = sorted(q.get(timeout=5) for _ in procs)
    assert results == [False, False, False, True]
    s.close()


def test_expire(store: TamStore) -> None:
    sid = store.start_session(1.0, device_id=None, transport_identity=None)
    _query(store, sid, None, token=b"a" * 8, now=0.0, lifetime=10, cap=9)
    _query(store, sid, None, token=b"b" * 8, now=0.0, lifetime=100, cap=9)
    assert store.expire_outstanding(50.0) == 1
    assert [o.token for o in store.outstanding()] == [b"b" * 8]


def test_catalog_latest_and_audience(store: TamStore) -> None:
    store.add_component(component_id=CID_A, sequence_number=1, envelope=b"e1", now=1.0, name="a")
    store.add_component(
        component_id=CID_A, sequence_number=3, envelope=b"e3", now=2.0, name="a", audience="all"
    )
    store.add_component(component_id=CID_B, sequence_number=7, envelope=b"b7", now=2.0, name="b")
    latest = {e.component_id: e for e in store.latest_components()}
    assert latest[CID_A].sequence_number == 3 and latest[CID_A].envelope == b"e3"
    assert latest[CID_A].audience == "all"
    assert latest[CID_B].sequence_number == 7
    # same seq, same bytes: idempotent; same seq, other bytes: refused
    store.add_component(component_id=CID_A, sequence_number=3, envelope=b"e3", now=3.0, audience="all")
    with pytest.raises(StoreError, match="different envelope"):
        store.add_component(component_id=CID_A, sequence_number=3, envelope=b"other", now=3.0)
    with pytest.raises(StoreError, match="audience"):
        store.add_component(component_id=CID_A, sequence_number=4, envelope=b"x", now=3.0, audience="some")


def test_device_components(store: TamStore) -> None:
    dev = _device(store)
    store.set_device_components(dev, 1.0, installed={CID_A: None}, wanted={CID_B: 2}, unneeded=[])
    comps = {c.component_id: c for c in store.device_components(dev)}
    assert comps[CID_A].installed_seq == -1  # unknown version
    assert comps[CID_B].wanted and comps[CID_B].wanted_min_seq == 2 and comps[CID_B].installed_seq is None
    store.record_changes(dev, 2.0, installed={CID_B: 5}, removed=[CID_A])
    comps = {c.component_id: c for c in store.device_components(dev)}
    assert comps[CID_B].installed_seq == 5 and not comps[CID_B].wanted
    assert comps[CID_A].installed_seq is None
    # a later tc-list without sequence numbers keeps the recorded one
    store.set_device_components(dev, 3.0, installed={CID_B: None})
    assert {c.component_id: c.installed_seq for c in store.device_components(dev)}[CID_B] == 5


def test_sessions_and_audit(store: TamStore) -> None:
    sid = store.start_session(1.0, device_id=None, transport_identity="psk1")
    store.audit(sid, 2.0, "x", "y")
    store.end_session(sid, 3.0, "success")
    store.end_session(sid, 4.0, "again")  # the first outcome stays
    assert store.sessions()[0][3:] == (3.0, "success")
    events = [e for _, _, e, _ in store.audit_log(sid)]
    assert events == ["session-start", "x", "session-end", "session-end"]


def test_persists_across_instances(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'p.sqlite'}"
    a = TamStore(url)
    _device(a)
    a.close()
    b = TamStore(url)
    assert b.device_by_kid(b"k" * 32) is not None
    b.close()


def test_bad_url_is_typed_error() -> None:
    with pytest.raises(StoreError, match="cannot open"):
        TamStore("nosuchdialect://x")


def _find_pg_bin() -> Path | None:
    for base in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (base / "initdb").exists() and (base / "pg_ctl").exists():
            return base
    found = shutil.which("initdb")
    return Path(found).parent if found else None


@pytest.fixture(scope="module")
def postgres_server() -> Iterator[str]:
    """A throwaway PostgreSQL server on a unix socket in a temp folder (skipped when unavailable)."""
    pg = _find_pg_bin()
    if pg is None:
        pytest.skip("PostgreSQL server binaries (initdb/pg_ctl) are not installed")
    try:
        import psycopg  # noqa: F401
    except ImportError:
        pytest.skip("psycopg (the PostgreSQL driver, extra 'postgres') is not installed")
    prefix: list[str] = []
    if os.geteuid() == 0:  # initdb refuses root: run the server as the postgres account if there is one
        # runuser lives in /usr/sbin, which a non-login PATH may lack
        runuser = shutil.which("runuser", path=f"{os.environ.get('PATH', '')}:/usr/sbin:/sbin")
        if runuser is None:
            pytest.skip("running as root and runuser (util-linux) is not installed")
        if subprocess.run(["id", "postgres"], capture_output=True).returncode:
            pytest.skip("running as root and no 'postgres' account to run initdb as")
        prefix = [runuser, "-u", "postgres", "--"]
    base = Path(tempfile.mkdtemp(prefix="teep-pg-"))
    data, sock = base / "data", base / "sock"
    sock.mkdir()
    if prefix:
        shutil.chown(base, "postgres")
        shutil.chown(sock, "postgres")

    def run(*args: object) -> None:
        subprocess.run([*prefix, *map(str, args)], check=True, capture_output=True, timeout=60)

    try:
        run(pg / "initdb", "-D", data, "-A", "trust", "-U", "tam")
        run(
            pg / "pg_ctl", "-D", data, "-l", base / "log", "-w", "-t", "30", "-o", f"-k {sock} -h ''", "start"
        )
        yield str(sock)
    finally:
        subprocess.run(
            [*prefix, str(pg / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"], capture_output=True
        )
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def postgres_url(postgres_server: str, request: pytest.FixtureRequest) -> str:
    """A fresh database on the throwaway server for each test."""
    import psycopg

    name = "t_" + request.node.name.replace("test_", "")[:40]
    with psycopg.connect(f"host={postgres_server} user=tam dbname=postgres", autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return f"postgresql+psycopg://tam@/{name}?host={postgres_server}"


def test_postgresql_same_code(postgres_url: str) -> None:
    """The same TamStore code against a real PostgreSQL server."""
    s = TamStore(postgres_url)
    dev = _device(s, kid=b"p" * 32)
    sid = s.start_session(1.0, device_id=dev, transport_identity=None)
    o = _query(s, sid, dev, token=b"t" * 16)
    assert s.claim(o.id, dev) and not s.claim(o.id, dev)
    s.add_component(component_id=CID_A, sequence_number=2, envelope=b"e", now=1.0, audience="all")
    assert s.latest_components()[0].sequence_number == 2
    with pytest.raises(DuplicateDevice):
        _device(s, kid=b"p" * 32)
    s.close()


def test_postgresql_full_session(postgres_url: str, tmp_path: Path) -> None:
    """A whole install session through both engines with the TAM state in PostgreSQL."""
    from teep_coap.protocol.agent import AgentEngine
    from teep_coap.protocol.broker import in_memory_post, run_in_memory
    from teep_coap.protocol.tam import TamConfig, TamEngine
    from teep_coap.security.keys import generate_key
    from teep_coap.security.suit import build_envelope

    store = TamStore(postgres_url)
    tam_key = generate_key("esp256")
    state = init_agent_state(tmp_path / "agent", tam_key.public, "esp256")
    k = state.key
    store.add_device(kid=k.kid, alg=k.alg, public_key=k.public.to_pem(), now=1.0)
    env = build_envelope(
        b"pg",
        key=tam_key,
        component_id=CID_B,
        sequence_number=1,
        vendor_id=state.config.vendor_id,
        class_id=state.config.class_id,
    )
    store.add_component(component_id=CID_B, sequence_number=1, envelope=env, now=1.0, audience="all")
    tam = TamEngine(TamConfig(keys=(tam_key,)), store)
    s = run_in_memory(AgentEngine(state), "coap://tam", in_memory_post(tam))
    assert s.result is not None and s.result.ok and s.rounds == 3
    assert state.components.image(CID_B) == b"pg"
    assert store.sessions()[-1][4] == "success"
    store.close()


def test_atomic_rolls_back_everything(store: TamStore) -> None:
    """The engine wraps each message in `atomic()`: an exception undoes every write of that message."""
    dev = _device(store)
    before = store.snapshot()
    with pytest.raises(RuntimeError), store.atomic():
        sid = store.start_session(1.0, device_id=dev, transport_identity=None)
        _query(store, sid, dev, token=b"z" * 16)
        store.touch_device(dev, 5.0, negotiated={"versions": [0]})
        assert len(store.outstanding()) == 1  # visible inside the transaction
        raise RuntimeError("crash in the middle of a message")
    assert store.snapshot() == before
    with store.atomic():  # and a normal block commits
        store.start_session(2.0, device_id=dev, transport_identity=None)
    assert len(store.sessions()) == 1
