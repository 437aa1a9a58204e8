"""Smoke test of experiments/peer_compare.py: one engine, a dozen requests, every target
available here (vllm-router is skipped, and says so, when it is not installed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from experiments import peer_compare
from qlm.bench.local import router_path
from tests.bench.conftest import MIXED


@pytest.mark.slow
def test_peer_compare_writes_json_and_table(tmp_path: Path) -> None:
    doc = peer_compare.main(["--scenario", MIXED, "--engines", "1", "--gpu", "A100-80G", "--speed", "50",
                             "--limit", "12", "--quiet", "--out", str(tmp_path)])
    expected = ["qlm serve"] + (["vllm-router"] if router_path() is not None else [])
    assert list(doc["results"]) == expected
    assert bool(doc["skipped"]) == (router_path() is None)
    for res in doc["results"].values():
        assert res["completed"] == res["submitted"] == 12
        assert set(res["per_class"]) <= {"interactive", "batch"}
    md = (tmp_path / "peer_compare.md").read_text(encoding="utf-8")
    assert "| target | class |" in md and "| qlm serve | all |" in md
    assert [r["policy"] for r in doc["simulated"]] == ["qlm", "fcfs"] and "| fcfs |" in md
    assert (tmp_path / "peer_compare.json").stat().st_size > 0
