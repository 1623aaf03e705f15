"""The simulated fleet of `bench sessions` (`bench/fleet.py`): devices derived from a seed, built in
memory, that complete real TEEP sessions against a real `tam serve` over loopback."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from teep_coap.bench.fleet import (
    COMPONENT_ID,
    KEY_CACHE,
    Fleet,
    MemoryComponents,
    derive_key,
    drive_fleet,
    make_fleet_world,
    needs_device_files,
)
from teep_coap.bench.sessions import run_bench, tam_process
from teep_coap.security.keys import generate_key
from teep_coap.security.suit.store_api import StagedInstall
from teep_coap.store.components import ComponentNotFound
from teep_coap.store.tam_db import TamStore
from teep_coap.store.tamdir import load_tam_dir

pytestmark = pytest.mark.timeout(180)


def test_devices_are_a_function_of_seed_and_index() -> None:
    tam = generate_key("esp256").public
    a, b = Fleet(10, tam, b"seed"), Fleet(10, tam, b"seed")
    assert a.registration(3) == b.registration(3)  # same kid, same public key, same name
    assert a.device_key(3).sign(b"x") != b""  # a usable private key
    kids = {a.registration(i).kid for i in range(10)}
    assert len(kids) == 10
    assert Fleet(10, tam, b"other").registration(3).kid != a.registration(3).kid
    assert a.device_key(3).kid != a.report_key(3).kid  # the SUIT report key differs from the TEEP key
    state = a.state(3)
    assert state.key.kid == a.registration(3).kid and state.config.ueid == b"\x01" + state.key.kid[:16]
    with pytest.raises(ValueError):
        Fleet(0, tam)


def test_a_device_used_again_soon_keeps_its_keys_and_the_cache_is_bounded() -> None:
    fleet = Fleet(KEY_CACHE + 10, generate_key("esp256").public, b"cache")
    assert fleet.device_key(5) is fleet.device_key(5)  # not derived again
    first = fleet.report_key(0)
    for i in range(1, KEY_CACHE + 1):
        fleet.report_key(i)
    assert derive_key.cache_info().currsize <= KEY_CACHE
    again = fleet.report_key(0)  # pushed out by KEY_CACHE newer keys: derived again, the same key
    assert again is not first and again.kid == first.kid


def test_memory_components_commit_is_all_or_nothing() -> None:
    store = MemoryComponents()
    store.commit([StagedInstall((b"a",), b"img", b"env", 1)])
    entry = store.get([b"a"])
    assert entry is not None and entry.sequence_number == 1 and store.image([b"a"]) == b"img"
    with pytest.raises(ComponentNotFound):  # removing a missing one fails the whole commit
        store.commit([StagedInstall((b"b",), b"i2", b"e2", 1)], [(b"missing",)])
    assert [e.component_id for e in store.list()] == [(b"a",)]
    store.commit([], [(b"a",)])
    assert store.list() == [] and store.get([b"a"]) is None
    with pytest.raises(ComponentNotFound):
        store.manifest([b"a"])


def test_in_memory_devices_complete_sessions_against_a_real_tam(tmp_path: Path) -> None:
    """Plain CoAP: no device folder and no credentials file anywhere; the TAM records each device's
    install under the key the fleet derived for it."""
    creds = tmp_path / "creds"
    world = make_fleet_world(tmp_path / "tam", creds, 5, 400, "coap")
    assert world.cred_root is None and not creds.exists()
    assert not (tmp_path / "tam" / "credentials.toml").exists()
    with tam_process("coap", world.tam_dir, devices=5) as (uri, _pid):
        result = asyncio.run(drive_fleet("coap", uri, world, 7, 3))
    assert result.failures == [] and len(result.latencies) == 7
    assert 1 <= result.peak_agents <= 3
    _config, store = load_tam_dir(world.tam_dir)
    try:
        assert isinstance(store, TamStore)
        for i in range(5):
            device = store.device_by_kid(world.fleet.registration(i).kid)
            assert device is not None and device.name == f"dev-{i:05d}"
            installed = {c.component_id: c.installed_seq for c in store.device_components(device.id)}
            assert installed.get(COMPONENT_ID) == 1, installed
    finally:
        store.close()


def test_secure_profiles_get_device_credentials(tmp_path: Path) -> None:
    assert not needs_device_files("coap") and not needs_device_files("teep-cbor-http")
    assert needs_device_files("coaps-psk") and needs_device_files("coap-oscore")
    world = make_fleet_world(tmp_path / "tam", tmp_path / "creds", 2, 100, "coaps-psk")
    assert world.cred_root == tmp_path / "creds"
    assert (tmp_path / "creds" / "dev-00001" / "transport.toml").is_file()
    assert "dev-00001" in (tmp_path / "tam" / "credentials.toml").read_text()


@pytest.mark.parametrize("profile", ["coap", "coaps-psk", "teep-cbor-http"])
def test_small_bench_run(profile: str) -> None:
    r = run_bench(profile, devices=8, concurrency=4, sessions=10, image_size=300)
    assert (r.ok, r.failed) == (10, 0), r.failures
    j = r.to_json()
    assert j["fleet_build_seconds"] > 0 and 1 <= j["peak_agents_alive"] <= 4
    assert j["tam_rss_mib_samples"] and all(m > 10 for _, m in j["tam_rss_mib_samples"])
    assert j["client_peak_rss_mib"] and j["tam_cpu_ms_per_session"]


def test_p99_by_tenth_finds_where_the_tail_is() -> None:
    from teep_coap.bench.sessions import BenchResult

    latencies = [0.1] * 2000
    latencies[1400:1420] = [2.0] * 20  # a pause in the eighth tenth: 20 slow sessions of its 200
    r = BenchResult("coap", 2000, 32, 2000, 2000, 0, 10.0, latencies=latencies)
    assert r.p99_by_tenth() == [0.1] * 7 + [2.0] + [0.1] * 2
    assert r.to_json()["p99_ms_by_tenth_of_run"][7] == 2000.0
    assert BenchResult("coap", 10, 1, 10, 10, 0, 1.0, latencies=[0.1] * 10).p99_by_tenth() == []


def test_a_device_reads_its_transport_file_once(tmp_path: Path) -> None:
    world = make_fleet_world(tmp_path / "tam", tmp_path / "creds", 2, 100, "coaps-psk")
    first = world.credentials(1)
    assert first is not None and first.psk_identity == "dev-00001"
    (tmp_path / "creds" / "dev-00001" / "transport.toml").unlink()
    assert world.credentials(1) is first  # kept in memory, as a device keeps its keys between sessions
    other = world.credentials(0)
    assert other is not None and other.psk_identity == "dev-00000" and other.psk != first.psk
    plain = make_fleet_world(tmp_path / "tam2", tmp_path / "creds2", 2, 100, "coap")
    assert plain.credentials(0) is None  # plain CoAP: no device files
