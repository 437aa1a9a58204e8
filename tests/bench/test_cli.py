"""``qlm bench`` end to end against an emulator subprocess, and its one-line errors."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from qlm.bench.local import free_port
from qlm.bench.plan import build_plan
from qlm.cli import app
from qlm.workload.scenario import load_scenario
from tests.bench.conftest import MIXED, SPEED, check_consistent, run_bench


def _planned() -> tuple[dict[str, int], int, int]:
    plan = build_plan(load_scenario(MIXED))
    sent = {c: sum(r.slo_class == c for r in plan.requests) for c in plan.classes_used}
    return sent, sum(r.output_tokens for r in plan.requests), sum(r.prompt_tokens for r in plan.requests)


def test_bench_chat_against_emulator(emulator_url: str, tmp_path: Path) -> None:
    doc = run_bench(["--base-url", emulator_url, "--scenario", MIXED, "--time-scale", str(SPEED),
                     "--model-map", "mistral-7b=m"], tmp_path / "chat.json")
    check_consistent(doc, *_planned())
    assert doc["slo_classes"] == {"interactive": {"ttft_s": 2.0, "requests": 12},
                                  "batch": {"ttft_s": 60.0, "requests": 12}}
    assert "TTFT x 50" in doc["slo_definition"]
    assert {r["finish_reason"] for r in doc["requests"]} == {"length"}


def test_bench_completions_capped_against_emulator(emulator_url: str, tmp_path: Path) -> None:
    doc = run_bench(["--base-url", f"{emulator_url}/v1", "--endpoint", "/v1/completions", "--scenario", MIXED,
                     "--time-scale", str(SPEED), "--model-map", "mistral-7b=m", "--max-concurrency", "2",
                     "--no-class-field", "--no-class-header", "--limit", "10"], tmp_path / "comp.json")
    assert doc["completed"] == 10 and doc["max_concurrency"] == 2 and doc["endpoint"] == "/v1/completions"
    assert doc["class_field"] is False and doc["class_header"] is False


def _one_line_error(args: list[str]) -> str:
    res = CliRunner().invoke(app, ["bench", *args])
    assert res.exit_code == 2, res.output
    assert "Traceback" not in res.output
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(lines) == 1, res.output
    return lines[0]


def test_bad_input_is_one_line(emulator_url: str, tmp_path: Path) -> None:
    url = ["--base-url", emulator_url]
    assert "no such scenario file" in _one_line_error([*url, "--scenario", str(tmp_path / "none.yaml")])
    assert "--model-map: expected NAME=VALUE" in _one_line_error([*url, "--model-map", "mistral-7b"])
    assert "is no model of the workload" in _one_line_error([*url, "--scenario", MIXED, "--model-map", "x=m"])
    assert "cannot reach" in _one_line_error(["--base-url", f"http://127.0.0.1:{free_port()}"])
    assert "must be an http" in _one_line_error(["--base-url", "localhost:8000"])
    assert "--endpoint must be one of" in _one_line_error([*url, "--endpoint", "/v1/embeddings"])
    assert "--time-scale must be > 0" in _one_line_error([*url, "--time-scale", "0"])
    assert "serves m, not mistral-7b; use --model-map" in _one_line_error([*url, "--scenario", MIXED])
    assert "no such trace file" in _one_line_error([*url, "--trace", str(tmp_path / "t.csv")])
