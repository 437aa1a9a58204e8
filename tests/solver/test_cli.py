from __future__ import annotations

import json
from pathlib import Path

import pytest
from rich.console import Console

from qlm.solver.cli import SnapshotError, solve_command
from qlm.solver.synthetic import random_problem


@pytest.fixture
def snapshot(tmp_path: Path) -> Path:
    path = tmp_path / "snapshot.json"
    path.write_text(random_problem(3, 4, 8, 2).model_dump_json())
    return path


def test_prints_and_writes_json(snapshot: Path, tmp_path: Path) -> None:
    out = tmp_path / "plan.json"
    console = Console(record=True, width=120)
    solve_command(snapshot, "cpsat", 0.5, out, console=console)
    text = console.export_text()
    assert "objective" in text and "decisions" in text
    data = json.loads(out.read_text())
    for key in ("status", "objective", "greedy_objective", "solve_s", "backend", "decisions"):
        assert key in data
    assert len(data["decisions"]) == 8


def _break(path: Path, dotted: str, value: object) -> None:
    data = json.loads(path.read_text())
    *head, last = dotted.split(".")
    node = data
    for part in head:
        node = node[int(part)] if part.isdigit() else node[part]
    node[last] = value
    path.write_text(json.dumps(data))


def test_validation_error_is_one_line(snapshot: Path) -> None:
    _break(snapshot, "groups.3.size", 0)
    with pytest.raises(SnapshotError) as info:
        solve_command(snapshot, "cpsat", 0.5, None)
    msg = str(info.value)
    assert msg == f"{snapshot}: groups.3.size: Input should be greater than or equal to 1"
    assert "\n" not in msg


def test_cross_field_error_names_field(snapshot: Path) -> None:
    _break(snapshot, "groups.1.pinned_instance", "ghost")
    with pytest.raises(SnapshotError, match=r"groups\.1\.pinned_instance: unknown instance"):
        solve_command(snapshot, "cpsat", 0.5, None)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(SnapshotError, match="nope.json: file not found"):
        solve_command(tmp_path / "nope.json", "cpsat", 0.5, None)


def test_bad_json(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text("{ nope")
    with pytest.raises(SnapshotError, match="bad.json: invalid JSON at line 1 column 3"):
        solve_command(path, "cpsat", 0.5, None)


def test_unknown_backend(snapshot: Path) -> None:
    with pytest.raises(ValueError, match="unknown solver backend 'gurobi'"):
        solve_command(snapshot, "gurobi", 0.5, None)
