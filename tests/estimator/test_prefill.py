"""Chunked-prefill replay: step by step, with hand-computed step boundaries."""

import pytest

from qlm.estimator.prefill import prefill_done
from tests.factories import flat_profile

# every step takes 10 ms whatever it carries; 2048 prompt tokens per step minus one per
# decoding sequence
PROF = flat_profile(step_ms=10.0, budget=2048)


def test_one_prompt_on_an_idle_engine() -> None:
    # 100 tokens fit one step: first token at the end of it
    assert prefill_done(PROF, [(0.0, 100)], 0.0, 0, 0.0) == pytest.approx([0.010])


def test_prompts_share_and_span_steps() -> None:
    # step 1 (0 -> 10 ms): 2048 of the 3000-token prompt; step 2 (-> 20 ms): its last 952
    # tokens and the whole 100-token prompt behind it (952 + 100 <= 2048): both done at 20 ms
    starts: list[float] = []
    done = prefill_done(PROF, [(0.0, 3000), (0.0, 100)], 0.0, 0, 0.0, starts=starts)
    assert done == pytest.approx([0.020, 0.020])
    assert starts == pytest.approx([0.0, 0.010])  # the second one's first chunk is in step 2


def test_decoding_sequences_take_budget() -> None:
    # 48 decoding sequences leave 2000 prompt tokens per step: the 2000-token prompt fills
    # step 1 exactly (done at 10 ms, then it decodes too: 49); the next waits for step 2
    assert prefill_done(PROF, [(0.0, 2000), (0.0, 10)], 0.0, 48, 0.0) == pytest.approx([0.010, 0.020])


def test_work_arriving_while_decoding_waits_for_a_step_boundary() -> None:
    # a prompt dispatched at 50 ms to an engine decoding one sequence starts at the next
    # boundary, half a 10 ms step later on average: 55 ms, first token at 65 ms
    assert prefill_done(PROF, [(0.05, 100)], 0.0, 1, 0.0) == pytest.approx([0.065])
    # an idle engine starts at once
    assert prefill_done(PROF, [(0.05, 100)], 0.0, 0, 0.0) == pytest.approx([0.060])


def test_work_arriving_mid_step_joins_the_next_step() -> None:
    # a step starts at 0 with the first prompt; the second (dispatched at 4 ms) cannot join
    # it: it goes in the step from 10 ms to 20 ms
    assert prefill_done(PROF, [(0.0, 100), (0.004, 100)], 0.0, 0, 0.0) == pytest.approx([0.010, 0.020])


def test_step_time_factor() -> None:
    # an engine 1.5x slower than its profile: 15 ms steps
    assert prefill_done(PROF, [(0.0, 3000)], 0.0, 0, 0.0, factor=1.5) == pytest.approx([0.030])
