"""Queueing arithmetic: list scheduling on slots, swaps between segments, WaitSamples."""

import numpy as np
import pytest

from qlm.estimator.waiting import Segment, WaitSamples, _heap_schedule, list_schedule, queue_starts


def test_list_schedule_by_hand() -> None:
    # slots free at 1 and 3; jobs of 2 s. job0 -> slot A at 1 (free again at 3);
    # job1 -> a slot free at 3; job2 -> the other slot free at 3.
    st = list_schedule(np.array([[1.0, 3.0]]), np.array([[2.0, 2.0, 2.0]]))
    assert st.tolist() == [[1.0, 3.0, 3.0]]


def test_few_requests_ahead_single_slot() -> None:
    # one slot busy for 4 s: job0 starts at 4, job1 after job0's 1 s, at 5
    st = list_schedule(np.array([[4.0]]), np.array([[1.0, 1.0]]))
    assert st.tolist() == [[4.0, 5.0]]


def test_departures_not_work_over_throughput() -> None:
    # 4 slots, one frees at 0.1 s, three at 100 s. Work/throughput says (0.1 + 300) / 4 = 75 s;
    # the first queued job really starts at the first departure, 0.1 s.
    st = list_schedule(np.array([[0.1, 100.0, 100.0, 100.0]]), np.array([[1.0]]))
    assert st[0, 0] == pytest.approx(0.1)


def test_fixed_point_matches_reference() -> None:
    rng = np.random.default_rng(1)
    free = rng.uniform(0, 5, (8, 6))
    dur = rng.uniform(0.01, 10, (8, 50))
    exact = list_schedule(free, dur, exact_jobs=50)
    assert np.allclose(exact, _heap_schedule(np.sort(free, axis=1), dur))


def test_fluid_continuation_is_exact_for_one_slot() -> None:
    # B = 1: start_k = sum of earlier durations; the fluid tail adds dur / B exactly
    st = list_schedule(np.zeros((1, 1)), np.array([[1.0, 2.0, 3.0, 4.0]]), exact_jobs=2)
    assert st.tolist() == [[0.0, 1.0, 3.0, 6.0]]


def test_swap_in_the_middle_of_a_queue() -> None:
    running = np.array([[2.0, 6.0]])  # two in flight, leaving at 2 and 6
    a = Segment(slots=2, swap_s=0.0, dur=np.array([[1.0]]), ft=np.array([0.1]))
    b = Segment(slots=2, swap_s=1.5, dur=np.array([[1.0, 1.0, 1.0]]), ft=np.array([0.1] * 3))
    ft, ahead = queue_starts(running, [a, b])
    # A's job starts at 2 (first departure), ends 3; the batch drains at max(6, 3) = 6;
    # swap 1.5 s -> B's two slots free at 7.5: jobs start 7.5, 7.5, 8.5; + 0.1 s first token
    assert ft[0].tolist() == pytest.approx([2.1, 7.6, 7.6, 8.6])
    assert ahead.tolist() == [2, 3, 4, 5]


def test_swap_at_head_waits_for_drain() -> None:
    running = np.array([[3.0]])
    seg = Segment(slots=4, swap_s=2.0, dur=np.array([[5.0]]), ft=np.array([0.0]))
    ft, _ = queue_starts(running, [seg])
    assert ft[0, 0] == pytest.approx(5.0)  # drain at 3 + swap 2


def test_surplus_running_requests_delay_the_first_job() -> None:
    # 3 in flight but only 2 slots: job0 waits for the 2nd departure (the B largest act as slots)
    ft, _ = queue_starts(np.array([[1.0, 2.0, 3.0]]), [Segment(2, 0.0, np.ones((1, 1)), np.zeros(1))])
    assert ft[0, 0] == pytest.approx(2.0)


def test_wait_samples_normal_and_smoothed() -> None:
    w = WaitSamples(np.array([1.0, 2.0, 3.0]), ahead=50)
    assert w.mean == pytest.approx(2.0)
    assert w.p_within(2.0) == pytest.approx(0.5)  # Normal, centred
    few = WaitSamples(np.array([1.0, 2.0, 3.0]), ahead=2)
    assert few.p_within(2.0) == pytest.approx(0.5)  # symmetric kernel estimate
    assert few.p_within(100.0) == pytest.approx(1.0)
    assert WaitSamples(np.array([4.0, 4.0]), ahead=1).p_within(3.0) == 0.0
