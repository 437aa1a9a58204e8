"""Fixtures of the bench tests: one emulator subprocess (``qlm emulate --speed 50``) per module."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from qlm.bench.local import LocalProcesses
from qlm.cli import app

MIXED = str(Path(__file__).with_name("mixed.yaml"))
SPEED = 50.0


@pytest.fixture(scope="module")
def emulator_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with LocalProcesses(tmp_path_factory.mktemp("emu"), grace_s=5) as procs:
        (url,) = asyncio.run(procs.emulators(1, "m", gpu="A100-80G", speed=SPEED))
        yield url


def run_bench(args: list[str], json_out: Path) -> dict[str, Any]:
    """``qlm bench ARGS --json OUT --quiet`` in-process; the JSON document (exit code 0)."""
    res = CliRunner().invoke(app, ["bench", *args, "--json", str(json_out), "--quiet"])
    assert res.exit_code == 0, res.output
    doc: dict[str, Any] = json.loads(json_out.read_text(encoding="utf-8"))
    return doc


def check_consistent(doc: dict[str, Any], sent: dict[str, int], planned_out: int, planned_in: int) -> None:
    """Every request completed; the classes add up to the whole; goodput, attainment and
    the scaled block agree; tokens are exactly the planned ones."""
    assert doc["failed"] == 0 and doc["failed_reasons"] == {}, doc["failed_reasons"]
    assert doc["completed"] == doc["submitted"] == sum(sent.values()) == len(doc["requests"])
    per = doc["per_class"]
    assert {c: m["submitted"] for c, m in per.items()} == sent
    for key in ("completed", "total_input_tokens", "total_output_tokens"):
        assert sum(m[key] for m in per.values()) == doc[key]
    assert doc["total_output_tokens"] == planned_out  # max_tokens + ignore_eos: exact lengths
    assert doc["total_input_tokens"] == planned_in  # prompts sized to count as planned
    assert sum(m["request_goodput"] for m in per.values()) == pytest.approx(doc["request_goodput"])
    scale = doc["time_scale"]
    for m in (doc, *per.values()):  # met = goodput x duration = attainment x sent
        assert m["request_goodput"] * doc["duration"] == pytest.approx(m["slo_attainment"] * m["submitted"])
        assert m["scaled"]["mean_ttft_ms"] == pytest.approx(m["mean_ttft_ms"] * scale)
        assert m["scaled"]["request_goodput"] == pytest.approx(m["request_goodput"] / scale)
        assert 0 < m["mean_ttft_ms"] <= m["mean_e2el_ms"]
