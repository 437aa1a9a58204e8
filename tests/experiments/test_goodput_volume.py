"""The goodput search's volume axis (every stream's request count times X over the same span)
and the report's use of it as the primary goodput check."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from experiments.paper import common as c
from experiments.paper import goodput, report


def test_volume_job_runs_volume_times_the_requests() -> None:
    base = c.scenario("small")  # 150 + 50 + 300 requests
    row = c.run_job(c.Job("small", "base", base, "fcfs", volume=2.0))
    assert row["submitted"] == 1000
    assert row["volume"] == 2.0
    assert "volume" not in c.run_job(c.Job("small", "base", base, "fcfs"))


def test_volume_job_refuses_a_trace() -> None:
    with pytest.raises(ValueError, match="volume 2 applies to generated workloads"):
        c.Job("small", "trace", c.scenario("small"), "fcfs", volume=2.0, trace=Path("t.csv"))


def test_make_job_per_axis() -> None:
    base = c.scenario("small")
    vol = goodput.make_job("small", base, "fcfs", 3.0, "volume", 0)
    assert (vol.volume, vol.load, vol.scenario) == (3.0, 1.0, base)
    load = goodput.make_job("small", base, "fcfs", 3.0, "load", 0)
    assert (load.volume, load.load) == (1.0, 3.0)
    with pytest.raises(ValueError, match="unknown goodput axis 'rate'"):
        goodput.make_job("small", base, "fcfs", 3.0, "rate", 0)


def test_volume_search_steps_by_two() -> None:
    s = goodput.Search("x", "p", 0.9, 0.25, 8.0, 0.1, goodput.AXES["volume"].step)
    truth = 1.5  # attainment 1 up to the crossing, 0 above
    tried = []
    while (x := s.next_load()) is not None:
        tried.append(x)
        s.update(x, 1.0 if x <= truth else 0.0)
    assert tried[:3] == [1.0, 2.0, 1.414]  # 1 met, 2 missed: bisect, never 4
    assert s.ok is not None and s.bad is not None
    assert s.ok <= truth < s.bad <= s.ok * 1.1


def test_goodput_volume_quick(tmp_path: Path) -> None:
    goodput.main(["--axis", "volume", "--quick", "--workloads", "small", "--policies", "fcfs", "--hi", "2",
                  "--jobs", "1", "--out", str(tmp_path)])
    for ext in ("json", "csv", "md"):
        assert (tmp_path / f"goodput_volume.{ext}").stat().st_size > 0
    assert (tmp_path / "results_goodput_volume.png").stat().st_size > 0
    data = json.loads((tmp_path / "goodput_volume.json").read_text(encoding="utf-8"))
    assert (data["axis"], data["lo"], data["hi"], data["step"]) == ("volume", 0.25, 2.0, 2.0)
    assert all(r["points"] and r["points"][0]["load"] == 1.0 for r in data["results"])
    assert "request-volume multiplier" in (tmp_path / "goodput_volume.md").read_text(encoding="utf-8")


def _goodput_json(root: Path, stem: str, fcfs: float | None, qlm: float | None) -> None:
    results: list[dict[str, Any]] = [
        {"workload": wl, "policy": pol, "level": 0.9, "goodput": g, "censored": g is None,
         "text": "< 0.25" if g is None else f"{g:g}", "points": []}
        for wl in ("wa", "wb") for pol, g in (("qlm", qlm), ("fcfs", fcfs))
    ]
    payload = {"command": f"python -m experiments.paper.goodput --axis {stem}", "results": results,
               "ratios": goodput.ratios(results), "targets_vs_fcfs_at_90": {"wa": 1.4, "wb": 2.0}}
    (root / stem).mkdir(parents=True)
    (root / stem / f"{stem}.json").write_text(json.dumps(payload), encoding="utf-8")
    (root / stem / f"{stem}.md").write_text(f"## {stem} table\n", encoding="utf-8")


def test_report_checks_the_criterion_on_the_volume_axis_first(tmp_path: Path) -> None:
    _goodput_json(tmp_path, "goodput_volume", fcfs=1.0, qlm=1.5)  # 1.5x: holds on wa, not on wb
    _goodput_json(tmp_path, "goodput", fcfs=None, qlm=None)
    text = report.main(["--root", str(tmp_path), "--doc", str(tmp_path / "results.md")])
    summary = text[text.index("## Summary"):text.index("## 1.")]
    load = summary.index("the same goodput criterion on the load axis")
    assert "on wa (volume axis: request rate): 1.50x (qlm 1.5, fcfs 1): **HOLDS**" in summary[:load]
    assert "on wb (volume axis: request rate): 1.50x (qlm 1.5, fcfs 1): **DOES NOT HOLD**" in summary[:load]
    assert "on wb: **CANNOT BE CHECKED**" in summary[load:]
    assert "capacity axis" not in summary
    assert text.index("## 4. Goodput (volume axis: request rate)") < text.index("## 4b. Goodput (load axis)")
    assert "    python -m experiments.paper.goodput --axis goodput_volume\n" in text


def test_report_says_when_the_volume_axis_was_not_run(tmp_path: Path) -> None:
    text = report.main(["--root", str(tmp_path), "--doc", str(tmp_path / "results.md")])
    assert "fcfs's (volume axis: request rate): **NOT RUN**" in text
    missing = f"Not run (no `{tmp_path}/goodput_volume/goodput_volume.md`)."
    assert f"## 4. Goodput (volume axis: request rate)\n\n{missing}" in text
