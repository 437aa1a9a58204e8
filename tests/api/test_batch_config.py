"""The gateway's batch settings: completion window -> SLO class, validation, ``--data-dir``."""

from __future__ import annotations

from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from qlm.api.cli import serve
from qlm.api.config import GatewayConfig, parse_gateway_config
from qlm.errors import ConfigError


@pytest.mark.parametrize(("window_s", "speed", "expected"), [
    (1, 1.0, "batch-1"),          # nothing fits: the tightest non-default class
    (60, 1.0, "batch-1"),
    (3599, 1.0, "batch-1"),
    (3600, 1.0, "batch-2"),       # 1 h or more: batch-2
    (86_400, 1.0, "batch-2"),     # OpenAI's "24h"
    (36, 100.0, "batch-2"),       # 36 wall s at 100x = 3600 control-plane s
])
def test_default_window_rule(window_s: float, speed: float, expected: str) -> None:
    assert GatewayConfig().batch_class(window_s, speed) == expected


def test_configured_window_rules() -> None:
    cfg = parse_gateway_config({"batch": {"window_classes": [
        {"max_window_s": 600, "slo_class": "batch-1"}, {"max_window_s": 7200, "slo_class": "batch-2"}]}})
    assert [cfg.batch_class(w) for w in (10, 600, 601, 7200)] == ["batch-1", "batch-1", "batch-2", "batch-2"]
    with pytest.raises(ValueError, match="no batch.window_classes rule"):
        cfg.batch_class(7201)


def test_unknown_window_class_fails_in_one_line() -> None:
    with pytest.raises(ConfigError, match="batch.window_classes.0.slo_class"):
        parse_gateway_config({"batch": {"window_classes": [{"max_window_s": 60, "slo_class": "gold"}]}})


def test_batch_off_by_default_and_store_config(tmp_path: Path) -> None:
    assert not GatewayConfig().batch.enabled
    cfg = parse_gateway_config({"batch": {"data_dir": str(tmp_path), "max_file_bytes": 1000}})
    assert cfg.batch.enabled
    store = cfg.batch.store_config()
    assert store.sqlite_path == tmp_path / "batch.sqlite3" and store.max_file_bytes == 1000


def test_bad_database_url_fails_in_one_line() -> None:
    app = typer.Typer()
    app.command()(serve)
    app.command("noop")(lambda: None)
    res = CliRunner().invoke(app, ["serve", "--database-url", "not-a-url"])
    assert res.exit_code == 2 and "database_url" in res.output and "Traceback" not in res.output
