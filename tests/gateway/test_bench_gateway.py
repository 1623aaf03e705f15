"""`bench gateway` with a handful of devices: real TAM and gateway processes, real figures."""

from __future__ import annotations

import pytest

from teep_coap.bench.gateway import format_gateway_result, run_gateway_bench

pytestmark = pytest.mark.timeout(120)


def test_bench_gateway_runs_every_device_through_the_gateway() -> None:
    # 12 sessions at ~2 ms of gateway CPU each: several of /proc's 10 ms ticks (3 could round to 0)
    result = run_gateway_bench("coaps-psk", devices=12, concurrency=4, image_size=256)
    j = result.to_json()
    assert (j["ok"], j["failed"]) == (12, 0), j["failures"]
    assert (
        j["gateway_cpu_seconds"] is not None and j["gateway_cpu_seconds"] > 0
    )  # the gateway did the relaying
    assert j["gateway_rss_start_kib"] and j["gateway_rss_end_kib"]
    assert j["tam_cpu_ms_per_session"] is not None
    assert "12 devices (coaps-psk) -> one gateway" in format_gateway_result(result)


def test_bench_gateway_cache_counts_upstream_bytes() -> None:
    from teep_coap.bench.gateway import format_cache_points, run_cache_bench

    points = run_cache_bench((2,), image_size=2048, concurrency=2)
    by_cache = {p.cache: p for p in points}
    assert by_cache[True].ok == by_cache[False].ok == 2
    assert (by_cache[True].upstream_fetches, by_cache[True].upstream_bytes) == (1, 2048)
    assert (by_cache[False].upstream_fetches, by_cache[False].upstream_bytes) == (2, 4096)
    assert "upstream bytes" in format_cache_points(points)
