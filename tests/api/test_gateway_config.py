"""Gateway config: defaults, the example file, one-line errors naming the field."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from qlm.api.config import GatewayConfig, load_gateway_config, parse_gateway_config
from qlm.api.gateway import Gateway
from qlm.errors import ConfigError
from qlm.runtime.launcher import EmulatedEngineSpec

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "gateway.yaml"


def test_defaults() -> None:
    cfg = GatewayConfig()
    assert [(c.name, c.ttft_s) for c in cfg.slo_classes] == [("interactive", 20), ("batch-1", 60),
                                                              ("batch-2", 3600)]
    assert cfg.default == "interactive" and cfg.policy == "qlm" and cfg.runtime is None
    assert cfg.tiers() == {"priority": "interactive", "default": "interactive", "auto": "interactive",
                           "flex": "batch-2"}
    assert cfg.rule("batch-1").kind == "accept"


def test_example_file_validates() -> None:
    cfg = load_gateway_config(EXAMPLE)
    assert cfg.rule("interactive").target == "batch-1" and cfg.rule("batch-1").kind == "reject"
    assert cfg.runtime is not None and cfg.runtime.launcher == "emulated"


@pytest.mark.parametrize(("raw", "field"), [
    ({"default_class": "gold"}, "default_class"),
    ({"service_tiers": {"flex": "gold"}}, "service_tiers.flex"),
    ({"admission": {"gold": {"action": "reject"}}}, "admission.gold"),
    ({"admission": {"batch-1": {"action": "downgrade:gold"}}}, "admission.batch-1.action"),
    ({"admission": {"batch-1": {"action": "drop"}}}, "admission.batch-1.action"),
    ({"admission": {"batch-1": {"min_probability": 2}}}, "admission.batch-1.min_probability"),
    ({"policy": "nope"}, "policy"),
    ({"limits": {"max_body_bytes": 1}}, "limits.max_body_bytes"),
    ({"colour": "red"}, "colour"),
    ({"expected_traffic": {"m": {"gold": {"rate": 1}}}}, "expected_traffic.m.gold"),
    ({"expected_traffic": {"m": {"interactive": {"rate": -1}}}}, "expected_traffic.m.interactive.rate"),
    ({"expected_traffic": {"m": {"interactive": {"output_mean": 10}}}}, "expected_traffic.m.interactive"),
    ({"runtime": {"engines": [{"id": "e", "gpu": "H100", "models": [{"model": "m"}]}]}},
     "runtime.engines.0.models.0.url"),
])
def test_errors_name_the_field(raw: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_gateway_config(raw, "gw.yaml")
    assert info.value.field == field
    assert "\n" not in str(info.value) and str(info.value).startswith(f"gw.yaml: {field}: ")


def test_unreadable_and_invalid_yaml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_gateway_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [1,\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_gateway_config(bad)


async def test_expected_traffic_reaches_the_estimator() -> None:
    # 4 requests per wall second with emulators at 20x: 4 / 20 = 0.2 per control-plane second;
    # outputs of mean 1500 and std 0: every quantile is 1500
    engines = [EmulatedEngineSpec("e0", "A100-80G", ("mistral-7b",))]
    prior = {"rate": 4, "output_mean": 1500, "output_std": 0, "prompt_mean": 900}
    cfg = parse_gateway_config({"emulated": {"speed": 20.0},
                                "expected_traffic": {"mistral-7b": {"interactive": prior}}})
    gw = Gateway(cfg, emulated_engines=engines)
    await gw.start()
    try:
        assert gw.rt is not None
        est = gw.rt.control.policy.estimator  # type: ignore[attr-defined]
        assert est.arrival_rate("mistral-7b", "interactive", 0.0) == pytest.approx(0.2)
        assert est.arrival_rate("mistral-7b", "batch-1", 0.0) == 0.0
        assert est.lengths.tail("mistral-7b", "interactive", 0.8) == pytest.approx(1500)
        assert est.mean_prompt("mistral-7b", "interactive") == pytest.approx(900)
    finally:
        await gw.stop()
    # a model no engine serves, or a policy without an estimator: start-up fails, naming the field
    for raw in ({"expected_traffic": {"nope": {"interactive": {"rate": 1}}}},
                {"policy": "fcfs", "expected_traffic": {"mistral-7b": {"interactive": {"rate": 1}}}}):
        gw = Gateway(parse_gateway_config(raw), emulated_engines=engines)
        with pytest.raises(ValueError, match="expected_traffic"):
            await gw.start()
        await gw.stop()
