"""`teep-coap bench engine`: complete TEEP sessions per second through both engines, in memory.

Each session is an install: QueryRequest (COSE_Sign, two signatures) → QueryResponse (with EAT
evidence) → Update (one SUIT envelope) → Success, with real signatures, a SQLite TAM store in a temp
folder and each Agent's on-disk component store. The set-up (keys, Agent folders, envelopes) is not
timed. A second pass under cProfile splits the time into crypto (functions of the `cryptography`
package, where every signature and hash ends up), the TAM database (sqlite3 calls) and fsync (the
component store's atomic writes and SQLite's WAL), and the rest (CBOR, COSE structure, engine logic,
SQLAlchemy).
"""

from __future__ import annotations

import cProfile
import pstats
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from teep_coap.protocol.agent import AgentEngine
from teep_coap.protocol.broker import in_memory_post, run_in_memory
from teep_coap.protocol.tam import TamConfig, TamEngine
from teep_coap.security.keys import generate_key
from teep_coap.security.suit import build_envelope
from teep_coap.store.agentdir import init_agent_state
from teep_coap.store.tam_db import TamStore

CID = (b"TEEP-Device", b"SecureFS", b"\x5a" * 16, b"ta")


@dataclass
class EngineBench:
    sessions: int
    seconds: float
    sessions_per_s: float
    messages_per_session: float
    message_sizes: dict[str, int]
    profiled_seconds: float
    crypto_share: float
    database_share: float
    fsync_share: float
    other_share: float
    signatures_per_session: float
    verifications_per_session: float
    tam_share: float
    agent_share: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _setup(root: Path, n: int, image_size: int) -> tuple[Any, list[Any]]:

    root.mkdir(parents=True, exist_ok=True)
    tam_es, tam_ed = generate_key("esp256"), generate_key("ed25519")
    store = TamStore(f"sqlite:///{root / 'tam.sqlite'}")
    tam = TamEngine(TamConfig(keys=(tam_es, tam_ed)), store)
    agents = []
    for i in range(n):
        st = init_agent_state(root / f"agent{i}", tam_es.public, "esp256")
        store.add_device(kid=st.key.kid, alg=st.key.alg, public_key=st.key.public.to_pem(), now=time.time())
        agents.append(AgentEngine(st))
    cfg = agents[0].state.config
    env = build_envelope(
        b"\xa5" * image_size,
        key=tam_es,
        component_id=CID,
        sequence_number=1,
        vendor_id=cfg.vendor_id,
        class_id=cfg.class_id,
    )
    store.add_component(component_id=CID, sequence_number=1, envelope=env, now=time.time(), audience="all")
    return tam, agents


def _run(tam: Any, agents: list[Any]) -> list[Any]:

    out = []
    for agent in agents:
        s = run_in_memory(agent, "bench://tam", in_memory_post(tam))
        if s.result is None or not s.result.ok or s.rounds != 3:
            raise RuntimeError(f"benchmark session failed: {s.result}")
        out.append(s)
    return out


def _role_times(stats: pstats.Stats) -> tuple[float, float]:
    """Inclusive time in the TAM engine's and the Agent engine's entry points."""
    raw: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    tam = agent = 0.0
    for (filename, _line, name), (_cc, _nc, _tt, cumtime, _callers) in raw.items():
        if filename.endswith("protocol/tam.py") and name in ("connect", "receive"):
            tam += cumtime
        elif filename.endswith("protocol/agent.py") and name == "receive":
            agent += cumtime
    return tam, agent


def _shares(stats: pstats.Stats) -> tuple[float, float, float, float, float, int, int]:
    raw: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    total = crypto = db = fsync = 0.0
    signs = verifies = 0
    for (filename, _line, name), (_cc, nc, tottime, _ct, _callers) in raw.items():
        total += tottime
        where = f"{filename} {name}"
        if "fsync" in name:
            fsync += tottime
        elif "cryptography" in where or "_hashlib" in where or "openssl" in where.lower():
            crypto += tottime
        elif "sqlite3" in where:
            db += tottime
        if "cryptography" in name and name.startswith("<method 'sign' "):
            signs += nc
        if "cryptography" in name and name.startswith("<method 'verify' "):
            verifies += nc
    return total, crypto, db, fsync, total - crypto - db - fsync, signs, verifies


def measure_engine(
    sessions: int = 50, *, image_size: int = 1024, progress: Callable[[str], None] | None = None
) -> EngineBench:
    """Time `sessions` install sessions (each with its own device), then profile as many again."""
    say = progress or (lambda _m: None)
    with tempfile.TemporaryDirectory(prefix="teep-bench-engine-") as tmp:
        say("setting up devices")
        tam, agents = _setup(Path(tmp) / "timed", sessions, image_size)
        say("timed run")
        t0 = time.perf_counter()
        done = _run(tam, agents)
        seconds = time.perf_counter() - t0
        first = done[0]
        names = ["QueryRequest", "QueryResponse", "Update", "Success"]
        sizes = dict(zip(names, [len(first.received[0]), len(first.sent[1]), len(first.received[1]),
                                 len(first.sent[2])], strict=True))  # fmt: skip
        tam.store.close()
        say("profiled run")
        tam2, agents2 = _setup(Path(tmp) / "profiled", sessions, image_size)
        prof = cProfile.Profile()
        prof.enable()
        _run(tam2, agents2)
        prof.disable()
        tam2.store.close()
    stats = pstats.Stats(prof)
    total, crypto, db, fsync, other, signs, verifies = _shares(stats)
    tam_t, agent_t = _role_times(stats)
    return EngineBench(
        sessions=sessions,
        seconds=seconds,
        sessions_per_s=sessions / seconds,
        messages_per_session=sum(len(s.sent) - 1 + len(s.received) for s in done) / len(done),
        message_sizes=sizes,
        profiled_seconds=total,
        crypto_share=crypto / total,
        database_share=db / total,
        fsync_share=fsync / total,
        other_share=other / total,
        signatures_per_session=signs / sessions,
        verifications_per_session=verifies / sessions,
        tam_share=tam_t / total,
        agent_share=agent_t / total,
    )
