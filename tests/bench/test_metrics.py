"""Metric computation against hand-computed values (``vllm bench serve``'s definitions)."""

from __future__ import annotations

import math

import pytest

from qlm.bench.metrics import compute_metrics, meets_slo, percentile_key, summarize
from qlm.bench.records import RequestRecord

SLO = {"interactive": 2.0, "batch": 60.0}  # TTFT targets, model seconds
SCALE = 10.0  # model seconds per wall second


def ok(i: int, cls: str, ttft: float, e2el: float, out: int, prompt: int, itl: tuple[float, ...]) -> RequestRecord:
    return RequestRecord(index=i, slo_class=cls, success=True, ttft_s=ttft, e2el_s=e2el, output_tokens=out,
                         prompt_tokens=prompt, itl_s=itl)


RECORDS = [
    ok(0, "interactive", 0.1, 0.5, 5, 10, (0.1,) * 4),  # TTFT 1 model s: met; TPOT (0.5-0.1)/4 = 0.1
    ok(1, "interactive", 0.3, 0.9, 4, 20, (0.2,) * 3),  # TTFT 3 model s > 2: missed; TPOT 0.6/3 = 0.2
    RequestRecord(index=2, slo_class="interactive", success=False, error="HTTP 429 (rate_limit_error)"),
    ok(3, "batch", 1.0, 2.0, 1, 30, ()),                # TTFT 10 model s: met; one token: no TPOT
    ok(4, "batch", 0.2, 1.2, 11, 40, (0.1,) * 10),      # met; TPOT 1.0/10 = 0.1
]
DURATION = 4.0  # wall seconds


def test_overall_counts_rates_and_latencies() -> None:
    m = compute_metrics(RECORDS, DURATION, SLO, time_scale=SCALE)
    assert (m["completed"], m["failed"], m["submitted"]) == (4, 1, 5)
    assert m["total_input_tokens"] == 100  # 10 + 20 + 30 + 40 (completed only)
    assert m["total_output_tokens"] == 21  # 5 + 4 + 1 + 11
    assert m["request_throughput"] == pytest.approx(1.0)  # 4 / 4 s
    assert m["output_throughput"] == pytest.approx(5.25)  # 21 / 4
    assert m["total_token_throughput"] == pytest.approx(30.25)  # 121 / 4
    assert m["request_goodput"] == pytest.approx(0.75)  # requests 0, 3, 4 met: 3 / 4 s
    assert m["slo_attainment"] == pytest.approx(0.6)  # 3 met / 5 sent
    assert m["failed_reasons"] == {"HTTP 429 (rate_limit_error)": 1}
    # TTFT ms [100, 300, 1000, 200]: mean 400, median (200+300)/2, population std
    # sqrt((300^2 + 100^2 + 600^2 + 200^2) / 4) = sqrt(125000); p99 at rank 0.99 x 3 = 2.97 of
    # [100, 200, 300, 1000]: 300 + 0.97 x 700 = 979
    assert m["mean_ttft_ms"] == pytest.approx(400)
    assert m["median_ttft_ms"] == pytest.approx(250)
    assert m["std_ttft_ms"] == pytest.approx(math.sqrt(125000))
    assert m["p99_ttft_ms"] == pytest.approx(979)
    assert m["p50_ttft_ms"] == pytest.approx(250)
    # TPOT ms [100, 200, 100] (request 3 has one token): mean 400/3, median 100
    assert m["mean_tpot_ms"] == pytest.approx(400 / 3)
    assert m["median_tpot_ms"] == pytest.approx(100)
    # ITL: 4 + 10 gaps of 100 ms and 3 of 200 ms: (1400 + 600) / 17
    assert m["mean_itl_ms"] == pytest.approx(2000 / 17)
    # E2EL ms [500, 900, 2000, 1200]: mean 1150, median (900 + 1200) / 2
    assert m["mean_e2el_ms"] == pytest.approx(1150)
    assert m["median_e2el_ms"] == pytest.approx(1050)
    assert m["duration"] == DURATION
    assert m["percentiles"] == [50.0, 90.0, 99.0]


def test_scaled_block_is_model_time() -> None:
    sc = compute_metrics(RECORDS, DURATION, SLO, time_scale=SCALE)["scaled"]
    assert sc["duration"] == pytest.approx(40)  # 4 wall s x 10
    assert sc["request_throughput"] == pytest.approx(0.1)  # 4 / 40
    assert sc["request_goodput"] == pytest.approx(0.075)  # 3 / 40
    assert sc["mean_ttft_ms"] == pytest.approx(4000)  # 400 ms x 10
    assert sc["p99_ttft_ms"] == pytest.approx(9790)
    assert sc["mean_tpot_ms"] == pytest.approx(4000 / 3)
    assert sc["completed"] == 4 and sc["total_output_tokens"] == 21


def test_per_class() -> None:
    per = compute_metrics(RECORDS, DURATION, SLO, time_scale=SCALE)["per_class"]
    assert list(per) == ["interactive", "batch"]
    i, b = per["interactive"], per["batch"]
    assert (i["submitted"], i["completed"], i["failed"]) == (3, 2, 1)
    assert i["slo_attainment"] == pytest.approx(1 / 3)  # request 0 only
    assert i["request_goodput"] == pytest.approx(0.25)  # 1 / 4 s
    assert i["failed_reasons"] == {"HTTP 429 (rate_limit_error)": 1}
    assert i["mean_ttft_ms"] == pytest.approx(200)  # (100 + 300) / 2
    assert (b["submitted"], b["completed"], b["failed"]) == (2, 2, 0)
    assert b["slo_attainment"] == 1.0 and b["request_goodput"] == pytest.approx(0.5)
    assert b["mean_tpot_ms"] == pytest.approx(100)  # request 4 only
    assert b["failed_reasons"] == {}
    # the classes add up to the whole
    for k in ("submitted", "completed", "failed", "total_input_tokens", "total_output_tokens"):
        assert i[k] + b[k] == compute_metrics(RECORDS, DURATION, SLO)[k]


def test_class_with_only_failures_has_no_latency() -> None:
    recs = [RequestRecord(index=0, slo_class="batch", success=False, error="ReadError")]
    m = summarize(recs, 1.0, SLO)
    assert m["completed"] == 0 and m["slo_attainment"] == 0.0 and m["request_goodput"] == 0.0
    assert m["mean_ttft_ms"] is None and m["p99_tpot_ms"] is None and m["std_itl_ms"] is None


def test_slo_edge_and_errors() -> None:
    # 0.02 x 100 = 2.0000000000000004 in floating point: still within a 2 s target
    assert meets_slo(ok(0, "interactive", 0.02, 0.1, 2, 8, (0.08,)), 2.0, 100.0)
    assert not meets_slo(ok(0, "interactive", 0.0201, 0.1, 2, 8, (0.08,)), 2.0, 100.0)
    assert percentile_key(99.9, "ttft") == "p99.9_ttft_ms" and percentile_key(50, "e2el") == "p50_e2el_ms"
    with pytest.raises(ValueError, match="no TTFT target"):
        summarize([ok(0, "gold", 0.1, 0.2, 2, 8, (0.1,))], 1.0, SLO)
    with pytest.raises(ValueError, match="time_scale"):
        summarize([], 1.0, SLO, time_scale=0)
    with pytest.raises(ValueError, match="needs an error"):
        RequestRecord(index=0, slo_class="batch", success=False)
    empty = compute_metrics([], 0.0, SLO)
    assert empty["submitted"] == 0 and empty["slo_attainment"] is None and empty["per_class"] == {}
    assert empty["request_throughput"] is None  # zero duration: no rate
