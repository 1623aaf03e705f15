"""The TAM handler runs engine calls off the event loop: while one peer's call is stuck in a slow store
call, another peer's request is answered. Real sockets on loopback, real SQLite file, real engines."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import make_url

from teep_coap.encoding.cbor_codec import decode
from teep_coap.profiles import load_profile
from teep_coap.profiles.scenario import teep_world
from teep_coap.profiles.session import TamHandler
from teep_coap.profiles.stack import make_client, make_server
from teep_coap.security import cose
from teep_coap.store.tam_tx import same_host_url

pytestmark = pytest.mark.timeout(60)

SLOW = 1.5  # seconds the first session start takes in the store


class SlowFirstSessionStore:
    """The TAM's real store, whose first transaction waits SLOW seconds before it begins (say, for a
    connection to a remote database): every other call goes straight through."""

    def __init__(self, store: Any) -> None:
        self._store = store
        self._first = threading.Lock()
        self.slow_started = threading.Event()

    def atomic(self) -> Any:
        if self._first.acquire(blocking=False):
            self.slow_started.set()
            time.sleep(SLOW)
        return self._store.atomic()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


def _message(signed: bytes) -> object:
    return decode(bytes(cose.inspect(signed).payload or b""))


@pytest.mark.parametrize("name", ["coap", "teep-cbor-http"])
async def test_a_slow_store_call_does_not_hold_other_peers(name: str, tmp_path: Path) -> None:
    profile = load_profile(name)
    profile = dataclasses.replace(profile, limits=dataclasses.replace(profile.limits, request_timeout=10.0))
    world = teep_world(profile, tmp_path, 200)
    slow = SlowFirstSessionStore(world.tam.store)
    world.tam.store = slow
    handler = TamHandler(world.tam, threads=4)
    done: dict[str, float] = {}
    async with make_server(profile, handler, tam_dir=world.tam_dir) as server:
        first = make_client(profile, server.uri, state_dir=world.agent_dir)
        second = make_client(profile, server.uri, state_dir=world.agent_dir)

        async def connect(label: str, client: Any) -> bytes | None:
            answer: bytes | None = await client.post(b"")
            done[label] = time.monotonic()
            return answer

        try:
            t0 = time.monotonic()
            stuck = asyncio.create_task(connect("first", first))
            await asyncio.wait_for(asyncio.to_thread(slow.slow_started.wait, 10.0), 11.0)
            quick = await asyncio.wait_for(connect("second", second), 10.0)
            slow_answer = await asyncio.wait_for(stuck, 10.0)
        finally:
            await first.close()
            await second.close()
            handler.close()
    # both got a QueryRequest; the second peer's came while the first call was still in the store
    assert quick and slow_answer
    assert done["second"] < done["first"], (done, t0)
    assert done["second"] - t0 < SLOW
    assert done["first"] - t0 >= SLOW
    # two QueryRequests, each with its own fresh token or challenge
    assert {type(m).__name__ for m in (_message(quick), _message(slow_answer))} == {"QueryRequest"}
    assert quick != slow_answer


def test_engine_threads_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from teep_coap.profiles.session import ENGINE_THREADS, EngineThreadsError, engine_threads

    monkeypatch.delenv("TEEP_COAP_ENGINE_THREADS", raising=False)
    assert engine_threads() == ENGINE_THREADS
    assert engine_threads(same_host_store=True) == 0
    monkeypatch.setenv("TEEP_COAP_ENGINE_THREADS", "0")
    assert engine_threads() == 0
    for bad in ("-1", "four", "65"):
        monkeypatch.setenv("TEEP_COAP_ENGINE_THREADS", bad)
        with pytest.raises(EngineThreadsError, match="whole number from 0"):
            engine_threads()


def test_the_store_chooses_where_engine_calls_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """SQLite or a server on this host: on the event loop; a server on another host: on
    ENGINE_THREADS threads."""
    from teep_coap.profiles.session import ENGINE_THREADS

    monkeypatch.delenv("TEEP_COAP_ENGINE_THREADS", raising=False)
    world = teep_world(load_profile("coap"), tmp_path, 200)
    assert world.tam.store.same_host is True
    assert TamHandler(world.tam).threads == 0

    class Networked:
        same_host = False

    world.tam.store = Networked()
    assert TamHandler(world.tam).threads == ENGINE_THREADS
    monkeypatch.setenv("TEEP_COAP_ENGINE_THREADS", "2")
    assert TamHandler(world.tam).threads == 2


@pytest.mark.parametrize(
    ("url", "same_host"),
    [
        ("sqlite:///tam.db", True),
        ("postgresql+psycopg://tam@/tam", True),  # libpq's default: the Unix socket
        ("postgresql+psycopg://tam@/tam?host=/tmp/teep-pg", True),
        ("postgresql+psycopg://tam@127.0.0.1:5432/tam", True),
        ("postgresql+psycopg://tam@localhost/tam", True),
        ("postgresql+psycopg://tam@dbhost.example/tam", False),
        ("postgresql+psycopg://tam@10.0.0.7/tam", False),
    ],
)
def test_a_database_on_another_host_gets_the_pool(url: str, same_host: bool) -> None:
    assert same_host_url(make_url(url)) is same_host
