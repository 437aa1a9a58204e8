"""The ``volume`` option of the workload generator: request counts (and so rates) times X
over the same time span, bursts included."""

from __future__ import annotations

import math

import numpy as np
import pytest

from qlm.workload.generator import generate, sample_arrivals, stream_counts
from qlm.workload.scenario import ArrivalSpec, Scenario, load_scenario, parse_scenario


def _scenario(streams: list[dict], requests: int | None = None) -> Scenario:
    workload: dict = {"streams": streams}
    if requests is not None:
        workload["requests"] = requests
    raw = {
        "name": "t",
        "cluster": {"pools": [{"name": "p", "gpu": "A100-80G", "nodes": 1, "models": ["mistral-7b"]}]},
        "workload": workload,
    }
    return parse_scenario(raw, "t")


POISSON_AND_BURST = _scenario([
    {"model": "mistral-7b", "slo_class": "interactive", "count": 40, "arrival": {"kind": "poisson", "rate": 4.0}},
    {"model": "mistral-7b", "slo_class": "batch-2", "count": 100,
     "arrival": {"kind": "burst", "start_s": 10, "spread_s": 5}},
])


def _by_stream(scenario: Scenario, **kw: float) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {}
    for tr in generate(scenario, seed=3, **kw):
        out.setdefault(tr.request.id.split("-")[0], []).append(tr.request.arrival_s)
    return out


def test_volume_one_is_todays_workload() -> None:
    sc = load_scenario("wa")
    a, b = generate(sc, seed=1), generate(sc, seed=1, volume=1.0)
    assert [(t.request, t.output_tokens) for t in a] == [(t.request, t.output_tokens) for t in b]


def test_burst_gets_volume_times_the_requests_in_the_same_spread() -> None:
    assert stream_counts(POISSON_AND_BURST, 2.5) == [100, 250]  # 40 x 2.5, 100 x 2.5
    arrivals = _by_stream(POISSON_AND_BURST, volume=2.5)
    burst = arrivals["s1"]
    assert len(burst) == 250
    assert min(burst) >= 10.0 and max(burst) <= 15.0  # start 10 s, spread 5 s, unchanged


def test_poisson_stream_keeps_its_span_at_volume_times_the_rate() -> None:
    # 40 requests at 4/s span about 10 s; 160 at 16/s span about the same
    assert stream_counts(POISSON_AND_BURST, 4) == [160, 400]
    base, big = _by_stream(POISSON_AND_BURST)["s0"], _by_stream(POISSON_AND_BURST, volume=4)["s0"]
    assert len(big) == 4 * len(base) == 160
    rate = (len(big) - 1) / (max(big) - min(big))
    assert 16 * 0.7 < rate < 16 * 1.3
    rng = np.random.default_rng(0)
    gaps = np.diff(sample_arrivals(ArrivalSpec(kind="poisson", rate=4.0), 20_000, 1.0, rng, volume=4))
    assert math.isclose(float(gaps.mean()), 1 / 16, rel_tol=0.03)


def test_load_and_volume_compose() -> None:
    # load 2 halves the burst's spread; volume 3 triples its size
    burst = _by_stream(POISSON_AND_BURST, load=2.0, volume=3.0)["s1"]
    assert len(burst) == 300
    assert min(burst) >= 10.0 and max(burst) <= 12.5


def test_shares_round_to_the_scaled_total_largest_remainder_first() -> None:
    sc = _scenario([
        {"model": "mistral-7b", "slo_class": "interactive", "share": 1},
        {"model": "mistral-7b", "slo_class": "batch-1", "share": 1},
        {"model": "mistral-7b", "slo_class": "batch-2", "share": 1},
    ], requests=10)
    assert stream_counts(sc) == [4, 3, 3]  # 10 / 3 each, the extra one to the first stream
    # x 0.5: exact 2, 1.5, 1.5 -> floors 2, 1, 1; total round(5) = 5, the extra one to stream 1 (tie)
    assert stream_counts(sc, 0.5) == [2, 2, 1]
    # x 1.25: exact 5, 3.75, 3.75 -> floors 5, 3, 3; total round(12.5) = 12 (half to even): one extra
    assert stream_counts(sc, 1.25) == [5, 4, 3]
    assert stream_counts(sc, 3) == [12, 9, 9]  # integer volumes multiply exactly


@pytest.mark.parametrize("name", ["wa", "wb"])
def test_paper_workloads_scale_their_total(name: str) -> None:
    sc = load_scenario(name)
    base = stream_counts(sc)
    assert stream_counts(sc, 2) == [2 * n for n in base]
    assert sum(stream_counts(sc, 1.5)) == 5250
    assert len(generate(sc, seed=0, volume=0.25)) == 875


@pytest.mark.parametrize("bad", [0.0, -1.0, math.nan, math.inf])
def test_bad_volume_is_rejected_naming_the_value(bad: float) -> None:
    with pytest.raises(ValueError, match=rf"volume must be a finite number > 0, got {bad}"):
        generate(POISSON_AND_BURST, volume=bad)
    with pytest.raises(ValueError, match="volume"):
        stream_counts(POISSON_AND_BURST, bad)
