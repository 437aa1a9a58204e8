"""``serve`` (registered as ``qlm serve``): bad configs and ports fail in one line."""

from __future__ import annotations

from pathlib import Path

import typer
from typer.testing import CliRunner

from qlm.api.cli import serve

app = typer.Typer()
app.command()(serve)
app.command("noop")(lambda: None)  # two commands: ``serve`` stays a subcommand


def test_bad_config_fails_in_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "gw.yaml"
    bad.write_text("default_class: gold\n", encoding="utf-8")
    res = CliRunner().invoke(app, ["serve", "--config", str(bad)])
    assert res.exit_code == 2
    assert "default_class" in res.output and "Traceback" not in res.output


def test_bad_port() -> None:
    res = CliRunner().invoke(app, ["serve", "--port", "70000"])
    assert res.exit_code == 2 and "--port" in res.output


def test_unreachable_engine_fails_in_one_line(tmp_path: Path) -> None:
    # port 1 refuses connections: the static engine never answers /health within 0.5 s
    cfg = tmp_path / "gw.yaml"
    cfg.write_text("runtime:\n  launcher: static\n  ready_timeout_s: 0.5\n  engines:\n"
                   "    - {id: e0, gpu: A100-80G,\n"
                   "       models: [{model: m, url: 'http://127.0.0.1:1', profile: mistral-7b}]}\n",
                   encoding="utf-8")
    res = CliRunner().invoke(app, ["serve", "--config", str(cfg), "--port", "18999"])
    assert res.exit_code == 1, res.output
    assert "cannot start the gateway" in res.output and "e0" in res.output and "Traceback" not in res.output
