"""`bench idle-cost` (`bench/idle.py`): the same unit of work timed back to back and after idle gaps.
What idling costs is the machine's, so no test here asserts a ratio; they check the measurement's
mechanics: which gap sleeps how often, in which order, and what is reported."""

from __future__ import annotations

import json
import math

import pytest
from click.testing import CliRunner

from teep_coap.bench.idle import (
    IdleCost,
    IdleCostError,
    format_idle_cost,
    measure_idle_cost,
    parse_gaps,
    tam_like_unit,
)
from teep_coap.cli import root


def test_each_unit_of_a_gap_sleeps_first_and_gaps_take_turns() -> None:
    slept: list[float] = []
    ran: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)

    def unit() -> None:
        ran.append(slept[-1] if slept else -1.0)

    result = measure_idle_cost((0, 2, 5), units=12, rounds=2, unit=unit, sleep=sleep)
    # per round and gap 12 units; the gap-0 units sleep not at all
    assert slept.count(0.002) == 24 and slept.count(0.005) == 24 and len(slept) == 48
    timed = ran[10:]  # after the ten warm-up units
    assert len(timed) == 3 * 12 * 2
    # round 1 in the given order, 10 units at a time then the 2 left; round 2 reversed
    assert timed[10:20] == [0.002] * 10 and timed[20:30] == [0.005] * 10
    assert timed[36:46] == [0.005] * 10 and timed[46:56] == [0.002] * 10
    assert result.gaps_ms == (0.0, 2.0, 5.0) and result.units == 12 and result.rounds == 2
    assert all(len(per_round) == 2 and all(x >= 0 for x in per_round) for per_round in result.cpu_us)


def test_the_tam_like_unit_costs_cpu_and_ratios_are_to_the_first_gap() -> None:
    result = measure_idle_cost((0, 1), units=15, rounds=1, unit=tam_like_unit())
    assert all(result.mean_us(g) > 20 for g in range(2))  # a P-256 verify alone is tens of µs
    assert result.ratio(0) == 1.0 and result.ratio(1) > 0
    j = result.to_json()
    assert [g["gap_ms"] for g in j["gaps"]] == [0.0, 1.0]
    assert j["gaps"][1]["ratio_to_first_gap"] == round(result.ratio(1), 3)
    assert "gap before each unit" in format_idle_cost(result)


def test_ratios_and_report_from_known_figures() -> None:
    result = IdleCost((0.0, 7.0), 100, 2, ((200.0, 210.0), (250.0, 270.0)))
    assert result.mean_us(1) == 260.0 and math.isclose(result.ratio(1), 260 / 205)
    text = format_idle_cost(result)
    assert "205.0 µs" in text and "1.268×" in text


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("0,x", "gap 'x' is not a number"),
        ("-1", "from 0 to 100"),
        ("0,101", "from 0 to 100"),
        ("nan", "from 0"),
    ],
)
def test_bad_gaps_are_named(text: str, message: str) -> None:
    with pytest.raises(IdleCostError, match=message):
        parse_gaps(text)


def test_units_and_rounds_must_be_positive() -> None:
    with pytest.raises(IdleCostError, match="at least 1"):
        measure_idle_cost((0,), units=0, unit=lambda: None)


def test_cli_json_and_a_bad_gap() -> None:
    out = CliRunner().invoke(
        root, ["bench", "idle-cost", "--gaps", "0,1", "--units", "5", "--rounds", "1", "--json"]
    )
    assert out.exit_code == 0, out.output
    data = json.loads(out.output)
    assert [g["gap_ms"] for g in data["gaps"]] == [0.0, 1.0] and data["units_per_gap_and_round"] == 5
    bad = CliRunner().invoke(root, ["bench", "idle-cost", "--gaps", "0,500"])
    assert bad.exit_code == 2 and "give milliseconds from 0 to 100" in bad.output
