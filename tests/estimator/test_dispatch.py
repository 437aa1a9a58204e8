"""Dispatch replay: the pulling rule over a hand-built pool, with hand-computed events."""

import pytest

from qlm.estimator.dispatch import DispatchReplay, Job, Member, Stream, Taken


def member(mid: str, held_tokens: float, releases: list[tuple[float, float]], own: list[int] | None = None,
           **kw: object) -> Member:
    """1,000 KV tokens, 10 sequences at most; taken work holds it 10 ms per output token."""
    return Member(mid, 1000.0, 10, len(releases), held_tokens, own or [], 0.01, 0.0, releases=releases,
                  **kw)  # type: ignore[arg-type]


def job(jid: str, tokens: float, prompt: float = 50.0, out: float = 100.0) -> Job:
    return Job(jid, tokens, prompt, out)


def test_stop_at_the_first_request_that_does_not_fit() -> None:
    # A holds 900 tokens (500 leaving at 1 s, 400 at 3 s); B holds 800, leaving at 2 s.
    # One group j0 (400), j1 (300), j2 (300).
    # 1 s: A frees 500 -> holds 400: takes j0 (800), j1 would make 1,100 > 1,000: A stops.
    # 2 s: B frees 800 -> empty: takes j1 (an empty instance takes anything) and j2
    #      (300 + 300 = 600): j2 is taken by B at 2 s behind j1's 50 prompt tokens.
    a = member("A", 900.0, [(1.0, 500.0), (3.0, 400.0)])
    b = member("B", 800.0, [(2.0, 800.0)])
    rep = DispatchReplay([a, b], [job("j0", 400), job("j1", 300), job("j2", 300)], [[0, 1, 2]], [0])
    assert rep.until(2) == Taken(t=2.0, member=1, before=50.0, n_before=1, held=2, woke=False)
    assert rep.taken[0].t == 1.0 and rep.taken[0].member == 0
    assert rep.taken[1].t == 2.0 and rep.taken[1].member == 1


def test_own_queue_first() -> None:
    # group 0 (earlier deadline: j0) and group 1 (j1), group 1 in A's own virtual queue.
    # At 1 s A frees 500 (holds 0 after): it takes its own j1 first, then j0 from the other
    # queue (300 + 300 <= 1,000).
    a = member("A", 500.0, [(1.0, 500.0)], own=[1])
    rep = DispatchReplay([a], [job("j0", 300), job("j1", 300)], [[0], [1]], [0, 1])
    assert rep.until(0) == Taken(t=1.0, member=0, before=50.0, n_before=1, held=2, woke=False)
    assert rep.taken[1].n_before == 0


def test_blocked_instance_pulls_again_when_the_head_moves() -> None:
    # A has 250 tokens free, B none: neither takes j0 (400), both wait at the head. At 1 s
    # B frees 800 (holds 200): j0 (600), j1 (900), j2 would make 1,100: B stops. The head
    # moved to j2 (200), which fits A's 250: A takes it at 1 s, without an event of its own
    # (in the policy, the next arrival or replan makes it pull).
    a = member("A", 750.0, [(5.0, 750.0)])
    b = member("B", 1000.0, [(1.0, 800.0), (6.0, 200.0)])
    rep = DispatchReplay([a, b], [job("j0", 400), job("j1", 300), job("j2", 200)], [[0, 1, 2]], [0])
    assert rep.until(2) == Taken(t=1.0, member=0, before=0.0, n_before=0, held=2, woke=False)
    assert rep.taken[1].member == 1


def test_waking_instance_starts_empty() -> None:
    # nothing leaves before 10 s; C wakes at 3 s with an empty cache and takes both
    a = member("A", 1000.0, [(10.0, 1000.0)])
    c = Member("C", 1000.0, 10, 0, 0.0, [], 0.01, ready_s=3.0)
    rep = DispatchReplay([a, c], [job("j0", 400), job("j1", 400)], [[0, 1]], [0])
    assert rep.until(1) == Taken(t=3.0, member=1, before=50.0, n_before=1, held=2, woke=True)


def test_more_urgent_arrivals_go_first() -> None:
    # a stream of urgent arrivals, one every 0.5 s from 0.5 s, each 600 tokens: at 1 s A
    # (empty after its release) takes the two that have arrived (0.5 s, 1.0 s) only up to
    # its KV: the first (600), the second would make 1,200 -> A stops; j0 waits for A's
    # next release. It holds nothing else: the urgent request leaves at 1 + 0.01 * 100 = 2 s,
    # A then has 1,000 free: the second urgent arrival (600) first, then j0 (300).
    a = member("A", 1000.0, [(1.0, 1000.0)])
    urgent = Stream(rate=2.0, until_s=1.2, job=job("u", 600), next_s=0.5)
    rep = DispatchReplay([a], [job("j0", 300)], [[0]], [0], [urgent])
    assert rep.until(0) == Taken(t=2.0, member=0, before=50.0, n_before=1, held=2, woke=False)


def test_resume_for_a_later_arrival() -> None:
    # the replay for j0 stops when A takes it at 1 s; j1 joins the tail of the same group
    # and is taken in the same pull (300 + 300 <= 1,000)
    a = member("A", 600.0, [(1.0, 600.0)])
    rep = DispatchReplay([a], [job("j0", 300)], [[0]], [0])
    assert rep.until(0).t == 1.0
    k = rep.append(0, job("j1", 300))
    assert rep.until(k) == Taken(t=1.0, member=0, before=50.0, n_before=1, held=2, woke=False)


def test_unreachable_target() -> None:
    rep = DispatchReplay([member("A", 1000.0, [])], [job("j0", 300)], [[0]], [0])
    assert rep.until(0) is None
    assert rep.until(0, horizon_s=5.0) is None


@pytest.mark.parametrize("leaves", [True, False])
def test_instance_leaving_for_another_model_takes_nothing_else(leaves: bool) -> None:
    a = member("A", 600.0, [(1.0, 600.0)], leaves=leaves)
    rep = DispatchReplay([a], [job("j0", 300)], [[0]], [0])
    assert (rep.until(0) is None) == leaves
