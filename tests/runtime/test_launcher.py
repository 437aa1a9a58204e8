"""Runtime config validation, ``vllm serve`` command lines, and config -> control-plane views."""

from __future__ import annotations

from typing import Any

import pytest

from qlm.errors import ConfigError
from qlm.perf.swap_model import Residency
from qlm.runtime.config import load_runtime_config, parse_runtime_config
from qlm.runtime.launcher import LocalLauncher, build_instances, default_emulated_engines
from qlm.runtime.vllm.driver import VLLMInstance


def engine(**kw: Any) -> dict[str, Any]:
    e = {"id": "a", "gpu": "A100-80G",
         "models": [{"model": "mistral-7b", "url": "http://10.0.0.1:8000"},
                    {"model": "llama-3-8b", "url": "http://10.0.0.1:8001"}]}
    e.update(kw)
    return e


@pytest.mark.parametrize(("raw", "field"), [
    ({"engines": [engine(id="a b")]}, "engines.0.id"),
    ({"engines": [engine(tp=0)]}, "engines.0.tp"),
    ({"engines": [engine(initial_model="zz")]}, "engines.0.initial_model"),
    ({"engines": [engine(sleep_mode=False)]}, "engines.0.sleep_mode"),
    ({"engines": [engine(gpus=[0, 1])]}, "engines.0.gpus"),
    ({"engines": [engine(), engine()]}, "engines"),
    ({"engines": [engine(models=[{"model": "m"}])]}, "engines.0.models.0.url"),
    ({"engines": [engine(models=[{"model": "m", "url": "ftp://x"}])]}, "engines.0.models.0.url"),
    ({"launcher": "local", "engines": [engine()]}, "engines.0.models.0.port"),
])
def test_config_errors_name_the_field(raw: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError) as exc:
        parse_runtime_config(raw, "rt.yaml")
    assert exc.value.field == field, str(exc.value)
    assert str(exc.value).startswith(f"rt.yaml: {field}: ") and "\n" not in str(exc.value)


def test_load_yaml_and_build_views(tmp_path: Any) -> None:
    p = tmp_path / "rt.yaml"
    p.write_text("engines:\n  - id: a\n    gpu: A100-80G\n    node: n1\n    initial_model: llama-3-8b\n"
                 "    models:\n      - {model: mistral-7b, url: 'http://h:1'}\n"
                 "      - {model: llama-3-8b, url: 'http://h:2'}\nnodes: {n1: {cpu_ram_gb: 64}}\n")
    cfg = load_runtime_config(p)
    views = build_instances(cfg)
    v = views["a"]
    assert v.active_model == "llama-3-8b" and set(v.profiles) == {"mistral-7b", "llama-3-8b"}
    assert v.residency == {"llama-3-8b": Residency.ACTIVE, "mistral-7b": Residency.SLEEP_L1}
    assert v.node.cpu_ram_gb == 64 and v.profiles["mistral-7b"].model.name == "mistral-7b"
    assert isinstance(v.backend, VLLMInstance) and v.backend.priority_scheduling
    with pytest.raises(ConfigError, match="engines.0.gpu"):
        build_instances(parse_runtime_config({"engines": [engine(gpu="TPU")]}))
    with pytest.raises(ConfigError, match="cannot read"):
        load_runtime_config(tmp_path / "missing.yaml")


def test_vllm_serve_command_lines() -> None:
    cfg = parse_runtime_config({"launcher": "local", "engines": [engine(
        gpus=[2, 3], tp=2, initial_model="mistral-7b",
        models=[{"model": "mistral-7b", "port": 8000, "path": "mistralai/Mistral-7B-v0.1"},
                {"model": "llama-3-8b", "port": 8001, "extra_args": ["-O0"]}])]})
    cmds = LocalLauncher(cfg).commands()
    assert [c.model for c in cmds] == ["llama-3-8b", "mistral-7b"]  # the awake one last
    c = cmds[1]
    assert c.argv[:3] == ("vllm", "serve", "mistralai/Mistral-7B-v0.1")
    args = " ".join(c.argv)
    for flag in ("--served-model-name mistral-7b", "--port 8000", "--tensor-parallel-size 2",
                 "--scheduling-policy priority", "--enable-sleep-mode",
                 "--enable-request-id-headers", "--enable-server-load-tracking",
                 "--enable-prompt-tokens-details", "--enable-per-request-metrics"):
        assert flag in args
    assert c.env == {"VLLM_SERVER_DEV_MODE": "1", "CUDA_VISIBLE_DEVICES": "2,3"}
    assert cmds[0].argv[-1] == "-O0" and c.url == "http://127.0.0.1:8000"
    static = LocalLauncher(cfg).static_config()
    assert static.launcher == "static"
    assert [m.url for m in static.engines[0].models] == ["http://127.0.0.1:8000", "http://127.0.0.1:8001"]


def test_default_emulated_engines_are_valid() -> None:
    engines = default_emulated_engines()
    assert len({e.id for e in engines}) == len(engines)
    assert any(len(e.models) > 1 for e in engines)
