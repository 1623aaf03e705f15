"""`teep-coap bench compare`: two set-ups in turns and the ratio of their TAM CPU per session."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest

from teep_coap.bench.compare import (
    SAME_LOAD_SHARE,
    Comparison,
    Setup,
    format_comparison,
    parse_setup,
    run_compare,
)
from teep_coap.bench.sessions import BenchError, BenchResult

pytestmark = pytest.mark.timeout(180)


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    """`teep-coap bench compare ARGS` in a child process."""
    cmd = [sys.executable, "-c", "from teep_coap.cli import main; main()", "bench", "compare", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)


def test_setups_parse_and_bad_ones_say_what_is_wrong() -> None:
    assert parse_setup("profile=coap") == Setup("coap")
    assert parse_setup("profile=coaps-psk,tam-workers=2,db=postgres,image-size=300") == Setup(
        "coaps-psk", 2, "postgres", 300
    )
    assert parse_setup("tam-workers=2,db=postgres").profile == "coaps-psk"
    for bad, says in [
        ("profile", "KEY=VALUE"),
        ("workers=2", "KEY one of profile, tam-workers, db, image-size"),
        ("tam-workers=two", "whole numbers"),
        ("tam-workers=0", "tam-workers 1..64"),
    ]:
        with pytest.raises(BenchError, match=says):
            parse_setup(bad)


def test_runs_alternate_and_the_ratio_is_of_the_means() -> None:
    order: list[str] = []
    c = run_compare(
        Setup("teep-cbor-http", image_size=200),
        Setup("coap", image_size=200),
        rounds=2,
        devices=4,
        concurrency=2,
        on_run=lambda side, _r: order.append(side),
    )
    assert order == ["a", "b", "b", "a"]  # A B, then B A: a drift weighs on both sides
    j = c.to_json()
    assert j["a"]["failed"] == j["b"]["failed"] == 0
    a, b = j["a"]["tam_cpu_ms_per_session"], j["b"]["tam_cpu_ms_per_session"]
    assert len(a) == len(b) == 2 and all(x > 0 for x in a + b)
    assert j["ratio_b_over_a"] == pytest.approx(
        j["b"]["mean_tam_cpu_ms_per_session"] / j["a"]["mean_tam_cpu_ms_per_session"], abs=0.002
    )
    assert len(j["ratio_per_round"]) == 2
    assert j["a"]["mean_engine_cpu_ms_per_session"] > 0
    assert len(j["b"]["requests_per_engine_call"]) == 2 and all(
        x >= 1 for x in j["b"]["requests_per_engine_call"]
    )
    assert j["target_sessions_per_second"] is None
    assert "started at most" not in format_comparison(c)


def test_cli_refuses_a_bad_setup_in_one_line() -> None:
    done = cli("--a", "profile=coap", "--b", "workers=2", "--json")
    assert done.returncode != 0
    assert "KEY one of profile" in done.stderr and "Traceback" not in done.stderr
    assert not done.stdout.strip() or "error" in json.loads(done.stdout)


def http_then_coap(**options: Any) -> tuple[Comparison, list[tuple[str, BenchResult]]]:
    """One round of teep-cbor-http against coap with small images, and each run as it ended."""
    runs: list[tuple[str, BenchResult]] = []
    c = run_compare(
        Setup("teep-cbor-http", image_size=100),
        Setup("coap", image_size=100),
        rounds=1,
        devices=3,
        on_run=lambda side, r: runs.append((side, r)),
        **options,
    )
    return c, runs


def test_both_sides_get_the_same_rate() -> None:
    c, results = http_then_coap(concurrency=3, rate=4.0)
    runs = [(side, r.target_rate, r.seconds) for side, r in results]
    assert [(side, rate) for side, rate, _ in runs] == [("a", 4.0), ("b", 4.0)]
    assert all(seconds >= 0.5 for _, _, seconds in runs)  # the third session is due 0.5 s in
    assert c.to_json()["target_sessions_per_second"] == 4.0
    assert "both sides started at most 4 sessions per second" in format_comparison(c)


def test_cli_refuses_a_rate_of_zero_in_one_line() -> None:
    done = cli("--a", "profile=coap", "--b", "profile=coap", "--rate", "0")
    assert done.returncode == 2
    assert "--rate" in done.stderr and "Traceback" not in done.stderr


def test_same_load_runs_each_side_at_its_own_pace_then_both_at_the_slower_pace() -> None:
    c, results = http_then_coap(concurrency=2, sessions=6, same_load=True)
    runs = [(side, r.target_rate, r.rate) for side, r in results]
    assert [(side, rate) for side, rate, _ in runs[:2]] == [("a", None), ("b", None)]  # own pace
    shared = round(SAME_LOAD_SHARE * min(runs[0][2], runs[1][2]), 1)
    assert [(side, rate) for side, rate, _ in runs[2:]] == [("a", shared), ("b", shared)]
    j = c.to_json()
    assert j["target_sessions_per_second"] == shared
    assert j["same_load"]["own_pace_sessions_per_second"] == {
        "a": round(runs[0][2], 1),
        "b": round(runs[1][2], 1),
    }
    assert len(j["a"]["tam_cpu_ms_per_session"]) == len(j["b"]["tam_cpu_ms_per_session"]) == 1
    text = format_comparison(c)
    assert "own pace first (not in the means)" in text
    assert f"both sides started at most {shared:g} sessions per second" in text


def test_a_run_short_of_the_rate_is_named() -> None:
    c = run_compare(
        Setup("coap", image_size=100), Setup("coap", image_size=100), rounds=1, devices=2,
        concurrency=1, sessions=2, rate=100_000.0,
    )  # fmt: skip
    short = c.to_json()["runs_short_of_rate"]
    assert [s["side"] for s in short] == ["a", "b"]  # nobody starts 100,000 sessions a second here
    assert "it was offered less load than the other side" in format_comparison(c)


def test_same_load_and_a_rate_are_refused_together() -> None:
    with pytest.raises(BenchError, match="not both"):
        run_compare(Setup("coap"), Setup("coap"), rounds=1, devices=1, concurrency=1, rate=5.0,
                    same_load=True)  # fmt: skip
    done = cli("--a", "profile=coap", "--b", "profile=coap", "--rate", "5", "--same-load")
    assert done.returncode == 2
    assert "not both" in done.stderr and "Traceback" not in done.stderr


def test_both_sides_get_the_same_device_processes() -> None:
    seen: list[tuple[str, int, int]] = []
    run_compare(
        Setup("coap", image_size=100), Setup("teep-cbor-http", image_size=100), rounds=1, devices=3,
        concurrency=2, sessions=4, device_processes=2,
        on_run=lambda side, r: seen.append((side, r.device_processes, r.ok)),
    )  # fmt: skip
    assert seen == [("a", 2, 4), ("b", 2, 4)]
