"""The simulated engine against hand-computed timelines (flat 10 ms steps unless stated)."""

from functools import partial

import pytest

from qlm.perf.swap_model import Residency
from qlm.runtime.events import Aborted, Finished, FirstToken, SwapDone
from tests.factories import flat_profile, make_engine, run_heap
from tests.factories import req as _req

req = partial(_req, model="m")


def test_single_request_prefill_then_decode() -> None:
    eng, heap, sink = make_engine(truth={"a": 5})
    eng.dispatch(req("a", prompt=100), 0)
    run_heap(heap)
    # step 1 (10 ms): prefill 100 tokens, samples token 1 -> first token at 0.010
    # steps 2-5: one macro-step of 4 decode iterations -> finished at 0.050
    (ft,) = sink.of(FirstToken)
    (fin,) = sink.of(Finished)
    assert ft.t == pytest.approx(0.010)
    assert fin.t == pytest.approx(0.050)
    assert fin.output_tokens == 5
    assert eng.kv_used == 0


def test_chunked_prefill_splits_long_prompt() -> None:
    eng, heap, sink = make_engine(truth={"a": 1})
    eng.dispatch(req("a", prompt=3000), 0)
    run_heap(heap)
    # budget 2048: chunk 2048 in step 1, 952 in step 2 -> first token at 0.020, done then too
    assert sink.of(FirstToken)[0].t == pytest.approx(0.020)
    assert sink.of(Finished)[0].t == pytest.approx(0.020)
    assert eng.c.prompt_tokens == 3000


def test_max_num_seqs_holds_third_request_back() -> None:
    eng, heap, sink = make_engine(profiles={"m": flat_profile(max_seqs=2)}, truth={"a": 3, "b": 3, "c": 3})
    for rid in "abc":
        eng.dispatch(req(rid, prompt=10), 0)
    run_heap(heap)
    ft = {e.request_id: e.t for e in sink.of(FirstToken)}
    # a, b prefill together in step 1 (0.010); decode 2 steps -> both finish at 0.030;
    # c is admitted at 0.030 and gets its first token at 0.040
    assert ft["a"] == ft["b"] == pytest.approx(0.010)
    assert ft["c"] == pytest.approx(0.040)


def test_kv_exhaustion_preempts_last_admitted_and_recomputes() -> None:
    # KV holds 100 tokens; two requests of 40-token prompts and 40 output tokens each
    eng, heap, sink = make_engine(profiles={"m": flat_profile(kv_tokens=100)}, truth={"a": 40, "b": 40})
    eng.dispatch(req("a", prompt=40), 0)
    eng.dispatch(req("b", prompt=40), 0)
    run_heap(heap)
    # after the prefill step KV = 80; each decode step adds 2: after 10 steps KV = 100 and
    # the 11th needs 2 more -> b (last admitted) is preempted and recomputed later
    assert eng.c.preemptions >= 1
    assert {e.request_id for e in sink.of(Finished)} == {"a", "b"}
    assert all(e.output_tokens == 40 for e in sink.of(Finished))
    assert len(sink.of(FirstToken)) == 2  # a preemption does not produce a second first token


def test_priority_engine_admits_urgent_first() -> None:
    eng, heap, sink = make_engine(
        profiles={"m": flat_profile(max_seqs=1)}, truth={"a": 2, "b": 2, "c": 2}, engine_policy="priority"
    )
    eng.dispatch(req("a", prompt=10), 5)
    eng.dispatch(req("b", prompt=10, t=1.0), 5)
    eng.dispatch(req("c", prompt=10, t=2.0), 0)  # lower value = sooner
    run_heap(heap)
    order = [e.request_id for e in sink.of(Finished)]
    # all three wait for the first iteration; priority 0 first, then arrival order
    assert order == ["c", "a", "b"]


def test_abort_mid_decode_ends_at_next_boundary() -> None:
    eng, heap, sink = make_engine(truth={"a": 100})
    eng.dispatch(req("a", prompt=10), 0)
    # run until 25 ms: prefill ended at 10 ms, then a 99-step decode macro-step began
    run_heap(heap, until=0.025)
    heap.clock.advance_to(0.025)
    eng.abort("a")
    run_heap(heap)
    (ab,) = sink.of(Aborted)
    # the iteration in flight at 25 ms (20-30 ms) completes; 1 (prefill) + 2 decode tokens
    assert ab.t == pytest.approx(0.030)
    assert ab.generated_tokens == 3
    assert not sink.of(Finished)
    assert eng.kv_used == 0


def test_arrival_cuts_macro_step_at_iteration_boundary() -> None:
    eng, heap, sink = make_engine(truth={"a": 100, "b": 1})
    eng.dispatch(req("a", prompt=10), 0)
    run_heap(heap, until=0.015)
    heap.clock.advance_to(0.015)
    eng.dispatch(req("b", prompt=10, t=0.015), 0)
    run_heap(heap)
    ft = {e.request_id: e.t for e in sink.of(FirstToken)}
    # b joins at the boundary at 20 ms, its prefill step ends at 30 ms
    assert ft["b"] == pytest.approx(0.030)
    fin = {e.request_id: e.t for e in sink.of(Finished)}
    # a: 100 tokens = 1 at prefill + 99 decode steps, one of which it shared with b's prefill
    assert fin["a"] == pytest.approx(0.010 * 100)


def test_swap_wakes_from_cpu_ram() -> None:
    profiles = {"m": flat_profile(model="m"), "n": flat_profile(model="n")}
    eng, heap, sink = make_engine(profiles=profiles, truth={"x": 2})
    eng.swap("n", "wait")
    run_heap(heap)
    (done,) = sink.of(SwapDone)
    # sleep the active model (0.5 s) then wake n from level 1 (1.0 s)
    assert done.t == pytest.approx(1.5)
    assert not done.cold
    assert eng.active_model == "n"
    assert eng.residency_of("m") in (Residency.SLEEP_L1, Residency.SLEEP_L2)


def test_swap_abort_mode_evicts_in_flight_work() -> None:
    profiles = {"m": flat_profile(model="m"), "n": flat_profile(model="n")}
    eng, heap, sink = make_engine(profiles=profiles, truth={"a": 50})
    eng.dispatch(req("a", prompt=10), 0)
    run_heap(heap, until=0.005)  # a's prefill step runs from 0 to 10 ms
    heap.clock.advance_to(0.005)
    eng.swap("n", "abort")
    run_heap(heap)
    (ab,) = sink.of(Aborted)
    assert ab.reason == "swap"
    assert ab.generated_tokens == 1  # the step in flight completes, sampling one token
    # then sleep 0.5 s + wake 1.0 s
    assert sink.of(SwapDone)[0].t == pytest.approx(0.010 + 1.5)


def test_request_larger_than_kv_is_refused_not_stuck() -> None:
    eng, heap, sink = make_engine(profiles={"m": flat_profile(kv_tokens=50)}, truth={"a": 10})
    eng.dispatch(req("a", prompt=100), 0)
    run_heap(heap)
    (ab,) = sink.of(Aborted)
    assert not ab.retryable
