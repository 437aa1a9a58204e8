"""When an engine's first tokens come out: a replay of chunked prefill, step by step.

A vLLM engine with chunked prefill runs back-to-back iterations. Each carries one token for
every decoding sequence and up to ``max_num_batched_tokens - n_decoding`` prompt tokens of
the prefilling requests, FCFS (a request's prompt may span several steps; several short ones
share a step). A request's first token comes at the end of the step that completes its
prompt, and it decodes from the next step on. Work dispatched during a step joins at the next
step boundary. On a large GPU a full 8,192-token chunk takes about a second (13B model), so
*which* step a prompt lands in matters as much as the token count: a fluid "tokens / rate"
estimate is off by up to a step either way.

:func:`prefill_done` replays those steps from a known step boundary with the engine's own
step-time model (:meth:`~qlm.perf.engine_model.EngineProfile.step_time`). Pure arithmetic.
"""

from __future__ import annotations

from collections.abc import Sequence

from qlm.perf.engine_model import EngineProfile

__all__ = ["prefill_done"]


def prefill_done(
    profile: EngineProfile,
    jobs: Sequence[tuple[float, float]],
    start: float,
    n_dec: int,
    context: float,
    *,
    factor: float = 1.0,
    phase: float = 0.5,
    starts: list[float] | None = None,
) -> list[float]:
    """First-token times of ``jobs`` prefilled FCFS by one engine.

    Parameters
    ----------
    profile
        The engine (step times, ``max_num_batched_tokens``).
    jobs
        ``(available_s, prompt_tokens)`` in dispatch order: a job may enter a step that starts
        at or after ``available_s``.
    start
        A step boundary: the engine starts a step here with the jobs available by then.
    n_dec, context
        Decoding sequences and their KV context tokens at ``start``; each finished prompt
        joins them (its prompt adds to the context).
    factor
        Online correction of the step time (:class:`~qlm.estimator.service.ServiceRateModel`).
    phase
        When the next job arrives while the engine only decodes, it waits ``phase`` of a
        decode step for the next boundary (0.5: the expectation over the arrival instant);
        an idle engine (``n_dec == 0``) starts at once.

    starts
        If given, filled with the start of the step that takes each job's first chunk.

    Returns
    -------
    The time each job's first token comes out (same clock as ``start``).
    """
    done = [float("nan")] * len(jobs)
    first = [float("nan")] * len(jobs)
    left = [max(1.0, float(p)) for _, p in jobs]
    t = float(start)
    n = n_dec
    ctx = float(context)
    head = 0
    budget0 = profile.max_num_batched_tokens
    step_time = profile.step_time  # bound once: the loop runs a step per iteration
    njobs = len(jobs)
    while head < njobs:
        if jobs[head][0] > t:  # nothing to prefill before it arrives: decode steps (or idle)
            t = jobs[head][0]
            if n > 0:
                t += phase * step_time(0, n, int(ctx)) * factor
        budget = max(1.0, float(budget0 - n))
        tokens = 0.0
        stored = 0.0  # KV the step reads for its prompts: their tokens computed so far
        finished = []
        k = head
        while k < njobs and jobs[k][0] <= t and budget > 0:
            if first[k] != first[k]:  # nan: its first chunk
                first[k] = t
            c = min(left[k], budget)
            left[k] -= c
            budget -= c
            tokens += c
            stored += jobs[k][1] - left[k]
            if left[k] > 0:
                break
            finished.append(k)
            k += 1
        t += step_time(int(round(tokens)), n, int(ctx + stored)) * factor
        ctx += n  # one token per decoding sequence
        for k in finished:
            done[k] = t
            n += 1
            ctx += jobs[k][1]
        while head < njobs and left[head] <= 0:
            head += 1
    if starts is not None:
        starts[:] = first
    return done
