"""The paper's mean-only estimator: n * mean_tokens / token_throughput, degenerate waits."""

import numpy as np
import pytest

from qlm.domain.request import Request
from qlm.estimator import EstimatorConfig, GroupLoad, LengthPrior, MeanOnlyEstimator, WaitSamples
from qlm.estimator.rwt import PoolMember
from tests.estimator.test_rwt import make_view, rq, running_view
from tests.factories import flat_profile


def make_estimator() -> MeanOnlyEstimator:
    # model-level prior: mean 100 tokens, std 50 (the variance must not show anywhere)
    return MeanOnlyEstimator(EstimatorConfig(samples=8, length_prior=LengthPrior(100, 50), prompt_prior=10))


def test_group_service_is_mean_over_throughput_with_no_spread() -> None:
    est = make_estimator()
    # i0: flat 10 ms steps, 2 seqs -> 2 / 0.010 = 200 tok/s for m and m2.
    # i1: 20 ms steps, 4 seqs -> 4 / 0.020 = 200 tok/s for m; cannot host m2.
    i0 = make_view(max_seqs=2)
    i1 = make_view(max_seqs=4)
    i1.profiles = {"m": flat_profile(step_ms=20.0, max_seqs=4, model="m")}
    mean, std = est.group_service([GroupLoad("m", "c", 10), GroupLoad("m2", "c", 4)], [i0, i1])
    # m: 10 requests * 100 tokens / 200 tok/s = 5 s on both; m2: 4 * 100 / 200 = 2 s on i0
    assert mean[0] == pytest.approx([5.0, 5.0])
    assert mean[1, 0] == pytest.approx(2.0) and mean[1, 1] == np.inf
    assert (std == 0.0).all()


def test_group_service_uses_the_model_level_mean_not_the_class() -> None:
    est = make_estimator()
    est.lengths.set_prior(("m", "long"), LengthPrior(1000, 10))  # ours would use this class prior
    mean, _ = est.group_service([GroupLoad("m", "long", 2)], [make_view()])
    # the paper's workload_tokens is per model: 2 * 100 / 200 tok/s = 1 s (ours: 2 * 1000 / 200)
    assert mean[0, 0] == pytest.approx(1.0)


def test_wait_at_is_the_baseline_and_degenerate() -> None:
    est = make_estimator()
    view = running_view()  # 2 running (a decoding, b dispatched)
    ws = est.wait_at(view, [rq("q0"), rq("q1")], 1, now=0.5)
    # n = 2 running + 1 queued ahead = 3 -> 3 * 100 / 200 tok/s = 1.5 s, every sample
    assert ws.ahead == 3
    assert ws.samples == pytest.approx(np.full(8, 1.5))
    assert ws.mean == pytest.approx(est.baseline_wait(view, [rq("q0"), rq("q1")], 1))
    assert ws.p_within(1.49) == 0.0 and ws.p_within(1.5) == 1.0
    # evicting b: n = 1 + 1 = 2 -> 1.0 s
    assert est.wait_at(view, [rq("q0"), rq("q1")], 1, now=0.5, exclude={"b"}).mean == pytest.approx(1.0)


def test_dispatch_wait_counts_the_running_batch_and_ignores_prefill() -> None:
    est = make_estimator()
    big = Request(id="r", model="m", slo_class="c", arrival_s=0.0, prompt_tokens=50_000)
    # 2 running * 100 / 200 tok/s = 1 s, whatever the prompt (the prototype ignores prefill)
    ws = est.dispatch_wait(running_view(), big, now=0.5)
    assert ws.mean == pytest.approx(1.0) and ws.ahead == 2 and ws.std == 0.0
    assert est.dispatch_wait(make_view(), rq("r"), now=0.0).mean == 0.0  # idle engine


def test_replay_wait_pools_the_members() -> None:
    est = make_estimator()
    busy = running_view()  # 2 in flight, 200 tok/s
    idle = make_view()  # none in flight, 200 tok/s
    waking = make_view()
    waking.active_model = "m2"  # wakes with m in 3 s: adds throughput, not in-flight work
    g1 = [rq("x0"), rq("x1"), rq("x2")]  # earlier deadline
    r = rq("r")
    g2 = [rq("y0"), r]
    members = [PoolMember(busy), PoolMember(idle), PoolMember(waking, ready_s=3.0)]
    ws = est.replay_wait(members, [("g2", g2), ("g1", g1)], [1, 0], r, now=0.5)
    # n = 2 in flight + 3 of g1 (before in deadline order) + 1 of g2 ahead of r = 6;
    # 6 * 100 tokens / (3 * 200 tok/s) = 1 s
    assert ws.ahead == 6 and ws.mean == pytest.approx(1.0)
    assert est.resume_wait(rq("r2"), "g2", 0.5, None) is None
    # only the waking member: its 3 s plus (3 + 1) * 100 / 200 = 2 s
    ws = est.replay_wait([PoolMember(waking, ready_s=3.0)], [("g2", g2), ("g1", g1)], [1, 0], r, now=0.5)
    assert ws.mean == pytest.approx(5.0)
    with pytest.raises(ValueError):
        est.replay_wait(members, [("g1", g1)], [0], r, now=0.5)


def test_degenerate_wait_samples() -> None:
    ws = WaitSamples(np.full(64, 12.0), ahead=5)
    # every sample 12 s: P(wait <= t) is a step at 12 s; quantiles are 12 s
    assert ws.p_within(11.9) == 0.0 and ws.p_within(12.0) == 1.0 and ws.p_within(12.1) == 1.0
    assert ws.quantile([0.5, 0.9]) == pytest.approx([12.0, 12.0])


def test_learning_moves_the_mean() -> None:
    est = make_estimator()
    for _ in range(30):
        est.lengths.observe("m", "c", 40)
    # the model-level window (30 completions of 40 tokens) replaces the prior:
    # 3 ahead * 40 / 200 tok/s = 0.6 s
    view = running_view()
    assert est.wait_at(view, [rq("q0"), rq("q1")], 1, now=0.5).mean == pytest.approx(0.6)
