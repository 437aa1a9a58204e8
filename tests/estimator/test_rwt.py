"""RWT estimator over a hand-built instance: running batch, queue, swap, baseline, groups."""

import numpy as np
import pytest

from qlm.domain.cluster import InstanceSpec, NodeSpec
from qlm.domain.request import Request, RequestState
from qlm.estimator import EstimatorConfig, GroupLoad, LengthPrior, RWTEstimator
from qlm.estimator.rwt import PoolMember
from qlm.perf.swap_model import Residency
from qlm.runtime.events import FirstToken
from qlm.runtime.view import ClusterView, InstanceView
from tests.factories import SWAP, flat_profile, make_engine


def make_view(max_seqs: int = 2) -> InstanceView:
    """Instance i0 serving m (active) and m2 (asleep in CPU RAM); flat 10 ms steps."""
    profiles = {m: flat_profile(step_ms=10.0, max_seqs=max_seqs, model=m) for m in ("m", "m2")}
    return InstanceView(
        spec=InstanceSpec(id="i0", node="n0", gpu="G", models=("m", "m2"), initial_model="m"),
        node=NodeSpec(name="n0", gpu="G", num_gpus=1, cpu_ram_gb=64),
        profiles=profiles, swap_costs={"m": SWAP, "m2": SWAP}, backend=make_engine()[0],
        residency={"m": Residency.ACTIVE, "m2": Residency.SLEEP_L1}, active_model="m",
    )


def make_estimator() -> RWTEstimator:
    # every output is exactly 100 tokens (std 0), prompts ~10 tokens
    return RWTEstimator(EstimatorConfig(samples=8, length_prior=LengthPrior(100, 0), prompt_prior=10))


def rq(rid: str, model: str = "m", **kw: object) -> Request:
    return Request(id=rid, model=model, slo_class="c", arrival_s=0.0, prompt_tokens=10, **kw)  # type: ignore[arg-type]


def running_view(now: float = 0.5) -> InstanceView:
    view = make_view()
    a = rq("a", state=RequestState.RUNNING, first_token_s=0.0, dispatched_s=0.0)
    b = rq("b", state=RequestState.DISPATCHED, dispatched_s=now)
    view.outstanding = {"a": a, "b": b}
    return view


def test_running_residuals() -> None:
    est = make_estimator()
    res = est.running_residuals(running_view(), now=0.5)
    # tau = 10 ms (flat steps, no prefill cost). a: 0.5 s since first token -> 50 tokens done,
    # 50 left -> 0.5 s. b: not started -> first token 10 ms + 100 tokens * 10 ms = 1.01 s
    assert res[:, 0] == pytest.approx(np.full(8, 0.5))
    assert res[:, 1] == pytest.approx(np.full(8, 1.01))


def test_queue_waits_few_ahead() -> None:
    est = make_estimator()
    ft, ahead = est.queue_waits(running_view(), [rq("q0"), rq("q1")], now=0.5)
    # 2 slots. q0 starts at the first departure (a, 0.5 s) and holds it 100 * 10 ms = 1 s;
    # q1 starts at the next departure, b at 1.01 s (before q0's 1.5 s). First token +10 ms.
    assert ft[0] == pytest.approx([0.51, 1.02])
    assert ahead.tolist() == [2, 3]
    ws = est.wait_at(running_view(), [rq("q0"), rq("q1")], 1, now=0.5)
    assert ws.mean == pytest.approx(1.02)
    assert ws.p_within(1.0) == 0.0 and ws.p_within(1.1) == 1.0


def test_swap_in_the_middle_of_the_queue() -> None:
    est = make_estimator()
    ft, _ = est.queue_waits(running_view(), [rq("q0"), rq("q1", model="m2")], now=0.5)
    # m drains at max(0.5, 1.01, q0 ends 0.5 + 1.0 = 1.5) = 1.5 s; swap = sleep m 0.5 s +
    # wake m2 from CPU RAM 1.0 s -> m2's slots free at 3.0 s; first token at 3.01 s
    assert ft[0, 1] == pytest.approx(3.01)


def test_eviction_frees_slots() -> None:
    est = make_estimator()
    ws = est.wait_at(running_view(), [rq("q0"), rq("q1")], 1, now=0.5, exclude={"b"})
    # without b: slot 2 is free now, so q0 starts at 0 (ft 0.01) and q1 at a's departure 0.5
    assert ws.mean == pytest.approx(0.51)


def test_baseline_is_mean_only() -> None:
    est = make_estimator()
    view = running_view()
    base = est.baseline_wait(view, [rq("q0"), rq("q1")], 1)
    # n = 2 running + 1 queued ahead = 3 requests * 100 tokens / (2 seqs / 10 ms = 200 tok/s)
    assert base == pytest.approx(1.5)


def test_group_service_matrix() -> None:
    est = make_estimator()
    mean, std = est.group_service([GroupLoad("m", "c", 10), GroupLoad("m2", "c", 4)], [make_view()])
    # 10 requests * 100 tokens * 10 ms / 2 slots = 5 s; std 0 (deterministic lengths)
    assert mean[:, 0] == pytest.approx([5.0, 2.0])
    assert std[:, 0] == pytest.approx([0.0, 0.0])


def test_learns_from_completions() -> None:
    est = make_estimator()
    for _ in range(30):
        est.lengths.observe("m", "c", 40)
    ft, _ = est.queue_waits(make_view(max_seqs=1), [rq("q0"), rq("q1")], now=0.0)
    # one slot: q1 waits for q0's 40 tokens * 10 ms = 0.4 s, + 10 ms first token
    assert ft[0, 1] == pytest.approx(0.41)


def test_engine_first_token_chunked_prefill() -> None:
    est = make_estimator()
    # running_view at 0.5 s: a decodes (n_dec = 1), b (10-token prompt) was dispatched now
    # and waits for prefill. Budget 2048 - 1 decode = 2047 prompt tokens per 10 ms step.
    # A 3000-token prompt behind b's 10: 3010 tokens -> one full step + the completing step,
    # plus half a step until the engine's next step boundary: 5 + 10 + 10 = 25 ms.
    assert est.engine_first_token(running_view(), "m", 3000, now=0.5) == pytest.approx(0.025)
    # idle engine: one 10 ms step carries the whole 10-token prompt, no boundary to wait for
    assert est.engine_first_token(make_view(), "m", 10, now=0.0) == pytest.approx(0.010)


def test_engine_first_token_replays_from_the_last_step_boundary() -> None:
    est = make_estimator()
    view = running_view(now=0.5)
    b = view.outstanding["b"]
    b.dispatched_s, b.prompt_tokens = 0.4, 20_000
    # the engine reported a first token at 0.45 s: a step started then, with b's prompt.
    # Steps of 10 ms carry 2047 prompt tokens next to a's decode: b needs 10 steps (the
    # 10th, 0.54 -> 0.55 s, has b's last 1,577 tokens and the first 470 of a 3,000-token
    # prompt dispatched at 0.5 s); then 2,046 per step (b decodes too): 2,530 left -> two
    # more steps, first token at 0.57 s, 70 ms after the dispatch.
    x = rq("x", state=RequestState.RUNNING, dispatched_s=0.3)
    cluster = ClusterView(lambda: 0.45, {"i0": view}, {}, {"x": x}, {})
    est.observe(FirstToken("x", "i0", 0.45), cluster)
    assert est.engine_first_token(view, "m", 3000, now=0.5) == pytest.approx(0.070)


def test_dispatch_replay_wait() -> None:
    est = make_estimator()
    view = running_view(now=0.5)  # 2 slots (max_num_seqs), both held: a leaves at 1.0 s
    r = rq("r")
    ws = est.replay_wait([PoolMember(view)], [("g", [r])], [0], r, now=0.5)
    # r is dispatched when a leaves (0.5 s from now, test_running_residuals); the engine
    # already planned the step after that completion (one 10 ms decode step for b), so r's
    # 10-token prompt is in the next: first token at 1.0 + 0.01 + 0.01 = 1.02 s, a wait of
    # 0.52 s (median of the model-error spread)
    assert float(np.median(ws.samples)) == pytest.approx(0.52, rel=1e-3)
    # a later arrival at the tail of the same group resumes the replay: the instance holds
    # b and r (2 = max_num_seqs), so r2 waits for b to leave, 1.01 s from now (first token
    # 10 ms, then 100 tokens of 10 ms), and goes in the step after the next: a wait of
    # 1.01 + 0.01 + 0.01 = 1.03 s
    r2 = rq("r2")
    ws2 = est.resume_wait(r2, "g", 0.5, None)
    assert ws2 is not None
    assert float(np.median(ws2.samples)) == pytest.approx(1.03, rel=1e-3)


def test_dispatch_wait_on_an_idle_engine() -> None:
    est = make_estimator()
    ws = est.dispatch_wait(make_view(), rq("r"), now=0.0)
    # one 10 ms step carries the 10-token prompt
    assert float(np.median(ws.samples)) == pytest.approx(0.010, rel=1e-3)


def test_can_serve_needs_the_prompt_inside_the_context() -> None:
    est = make_estimator()
    view = make_view()
    short = dict(view.profiles)
    short["m"] = flat_profile(max_seqs=2, max_model_len=50)
    view.profiles = short
    # a 10-token prompt fits a 50-token context; a 50-token one does not (the engine needs
    # at least one token of room to generate)
    assert est.can_serve(view, rq("a"))
    assert not est.can_serve(view, Request(id="b", model="m", slo_class="c", arrival_s=0.0, prompt_tokens=50))


def test_arrival_rate_over_the_time_seen() -> None:
    est = make_estimator()
    for t in (0.0, 0.5, 1.0):
        est.observe_arrival(Request(id=f"a{t}", model="m", slo_class="c", arrival_s=t, prompt_tokens=10))
    # 3 arrivals since the first one 2 s ago (less than the 10 s window): 1.5 per second
    assert est.arrival_rate("m", "c", now=2.0) == pytest.approx(1.5)
    # 20 s later: none within the last 10 s
    assert est.arrival_rate("m", "c", now=21.0) == 0.0


def test_rate_prior_stands_in_until_the_first_arrival() -> None:
    est = make_estimator()
    est.set_rate_prior("m", "c", 20.0)
    assert est.arrival_rate("m", "c", now=3.0) == 20.0  # nothing seen yet: the configured rate
    assert est.arrival_rate("m", "other", now=3.0) == 0.0  # no prior for that key
    est.observe_arrival(Request(id="a", model="m", slo_class="c", arrival_s=4.0, prompt_tokens=10))
    # one arrival, 1 s span (the minimum): the measured 1 per second replaces the prior
    assert est.arrival_rate("m", "c", now=4.5) == pytest.approx(1.0)
    # the window empties: measured, not the prior, once the key has been seen
    assert est.arrival_rate("m", "c", now=30.0) == 0.0
    with pytest.raises(ValueError, match="must be >= 0"):
        est.set_rate_prior("m", "c", -1.0)
