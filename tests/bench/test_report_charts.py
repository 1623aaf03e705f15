"""Report files name version, date and command; charts tell every profile apart, draw no lone points."""

from __future__ import annotations

import json
from pathlib import Path

from PIL import Image

from teep_coap.bench import sizes as bs
from teep_coap.profiles import list_profiles


def synthetic_report(sizes: list[int]) -> bs.SizesReport:
    """Made-up byte counts (the charts are under test, not the measurement): every profile, each size."""
    report = bs.SizesReport()
    for i, profile in enumerate(p.name for p in list_profiles()):
        for size in sizes:
            total = 1000 + 100 * i + size
            report.sessions.append(bs.SessionSummary(profile, size, total, 10, "datagrams", 0, 3, 3, 0.01, 0))
            for layer in bs.LAYERS:
                report.records.append(bs.SizeRecord(profile, size, bs.SESSION, layer, total // 5))
    return report


def test_every_profile_has_a_distinct_style() -> None:
    names = [p.name for p in list_profiles()]
    assert len(names) >= 13
    styles = bs.profile_styles(names)
    assert len({s[0] for s in styles.values()}) == len(names)  # colours
    assert len({s[1] for s in styles.values()}) == len(names)  # markers


def test_every_file_carries_provenance(tmp_path: Path) -> None:
    prov = bs.Provenance("9.9.9", "2026-12-05T00:00:00+00:00", "teep-coap bench sizes --out x")
    paths = bs.write_outputs(synthetic_report([20, 65536]), tmp_path, prov)
    assert {p.name for p in paths} >= {"sizes.md", "sizes.csv", "sizes.json", "sizes-vs-payload.png"}
    line = "teep-coap 9.9.9, 2026-12-05T00:00:00+00:00, command: teep-coap bench sizes --out x"
    assert line in (tmp_path / "sizes.md").read_text()
    assert (tmp_path / "sizes.csv").read_text().splitlines()[0] == f"# {line}"
    assert json.loads((tmp_path / "sizes.json").read_text())["generated"]["command"] == prov.command
    for png in tmp_path.glob("*.png"):
        info = Image.open(png).info
        assert info["Software"] == "teep-coap 9.9.9" and info["Description"] == prov.command, png


def test_no_line_chart_from_one_point(tmp_path: Path) -> None:
    names = {p.name for p in bs.write_outputs(synthetic_report([1024]), tmp_path)}
    assert "sizes-vs-payload.png" not in names and "sizes-layers.png" in names


def test_default_provenance_is_this_process() -> None:
    prov = bs.Provenance.now(["/x/bin/teep-coap", "bench", "sizes", "--out", "a b"])
    assert prov.command == "teep-coap bench sizes --out 'a b'"
    assert prov.date.endswith("+00:00")
