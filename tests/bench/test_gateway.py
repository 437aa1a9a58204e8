"""``qlm bench`` end to end against an embedded ``qlm serve`` gateway (emulated engine at 50x):
every request completes, and the gateway counted each in the class the bench sent."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from qlm.api.config import parse_gateway_config
from qlm.bench.plan import build_plan
from qlm.runtime.launcher import EmulatedEngineSpec
from qlm.workload.scenario import load_scenario
from tests.api.gateway_helpers import ServedGateway
from tests.bench.conftest import MIXED, SPEED, check_consistent, run_bench


@pytest.fixture(scope="module")
def gateway() -> Iterator[ServedGateway]:
    sc = load_scenario(MIXED)
    cfg = parse_gateway_config({"slo_classes": [c.model_dump() for c in sc.slo_classes],
                                "emulated": {"speed": SPEED}})
    with ServedGateway(cfg, [EmulatedEngineSpec("e0", "A100-80G", ("m",), sleep_mode=False)]) as s:
        yield s


def _requests_by_class(base: str) -> dict[str, float]:
    text = httpx.get(f"{base}/metrics", timeout=10).text
    out: dict[str, float] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name == "qlm_requests_total":
                out[s.labels["slo_class"]] = out.get(s.labels["slo_class"], 0.0) + s.value
    return out


@pytest.mark.parametrize("class_field", [True, False])
def test_bench_against_gateway(gateway: ServedGateway, tmp_path: Path, class_field: bool) -> None:
    before = _requests_by_class(gateway.base)
    flag = "--class-field" if class_field else "--no-class-field"  # without it, the header carries the class
    doc = run_bench(["--base-url", gateway.base, "--scenario", MIXED, "--time-scale", str(SPEED),
                     "--model-map", "mistral-7b=m", flag], tmp_path / "gw.json")
    plan = build_plan(load_scenario(MIXED))
    sent = {c: sum(r.slo_class == c for r in plan.requests) for c in plan.classes_used}
    check_consistent(doc, sent, sum(r.output_tokens for r in plan.requests),
                     sum(r.prompt_tokens for r in plan.requests))
    after = _requests_by_class(gateway.base)
    assert {c: after.get(c, 0.0) - before.get(c, 0.0) for c in sent} == {c: float(n) for c, n in sent.items()}
