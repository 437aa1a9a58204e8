"""Waiting-time distribution in a virtual queue under continuous batching (pure numpy).

Model: an instance runs up to ``B`` sequences (slots). A queued request starts when a slot
frees, i.e. at a *departure* of a request ahead of it, not after "total work / throughput".
With identical slots and a FIFO queue, queued job ``k`` (0-based) starts at the ``(k+1)``-th
smallest of ``{free time of every slot} U {start_j + dur_j : j < k}`` (list scheduling).
:func:`list_schedule` solves that recursion exactly for ``S`` sampled scenarios at once by a
monotone fixed-point iteration (each pass is one sort; it converges after one pass per
"generation" of ``B`` jobs); past ``exact_jobs`` jobs the queue is in steady state and starts
advance by the sampled work divided by ``B`` (fluid continuation, so the sum is Normal by
the CLT).

A model change along the queue (``mode="wait"`` swap) drains the batch: the next segment
starts ``swap_s`` after the last departure of the previous one, with ``B`` free slots.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy.special import ndtr

__all__ = ["Segment", "WaitSamples", "list_schedule", "queue_starts"]


def list_schedule(free0: np.ndarray, dur: np.ndarray, exact_jobs: int | None = None) -> np.ndarray:
    """Start times of FIFO jobs on identical slots.

    Parameters
    ----------
    free0
        ``(S, B)`` times at which each slot frees (0 = free now), per sample.
    dur
        ``(S, n)`` job durations (> 0), per sample, in queue order.
    exact_jobs
        Solve the recursion exactly for this many jobs (default ``3 * B``); later jobs use the
        fluid continuation ``start_k = start_{k-1} + dur_{k-1} / B``.

    Returns
    -------
    ``(S, n)`` start times.
    """
    s, b = free0.shape
    n = dur.shape[1]
    if n == 0:
        return np.zeros((s, 0))
    m = min(n, exact_jobs if exact_jobs is not None else 3 * b)
    free_sorted = np.sort(free0, axis=1)
    d = dur[:, :m]
    # upper bound to start from: slots only, no recycling (inf past the B-th job)
    st = np.full((s, m), np.inf)
    st[:, : min(m, b)] = free_sorted[:, : min(m, b)]
    converged = False
    for _ in range(2 * (m // max(1, b)) + 6):
        dep = np.concatenate([free_sorted, st + d], axis=1)
        new = np.sort(dep, axis=1)[:, :m]
        if np.array_equal(new, st):
            converged = True
            break
        st = new
    if not converged:  # long recycling chains (very short jobs): finish one job at a time
        st = _heap_schedule(free_sorted, d)
    if m == n:
        return st
    rest = np.cumsum(dur[:, m - 1 : n - 1], axis=1) / b
    return np.concatenate([st, st[:, m - 1 : m] + rest], axis=1)


def _heap_schedule(free_sorted: np.ndarray, d: np.ndarray) -> np.ndarray:
    """Reference list scheduling, one job at a time (vectorised over samples)."""
    free = free_sorted.copy()
    rows = np.arange(free.shape[0])
    out = np.empty_like(d)
    for k in range(d.shape[1]):
        i = np.argmin(free, axis=1)
        out[:, k] = free[rows, i]
        free[rows, i] = out[:, k] + d[:, k]
    return out


@dataclass(frozen=True, slots=True)
class Segment:
    """Consecutive queued jobs of one model on one instance.

    ``slots`` is the batch capacity; ``swap_s`` the time to make the model active before the
    segment (0 for the active model); ``dur`` the ``(S, n)`` slot-occupancy seconds of the
    jobs and ``ft`` their ``(S, n)`` (or ``(n,)``) seconds from admission to first token.
    ``prefill_s`` (optional, ``(n,)``): seconds of prefill the engine runs before each job
    starts (the prompts of the jobs ahead in the segment plus any backlog). Steps are shared,
    so every prompt prefilled delays every sequence; durations are decode-only and this
    delay is added to the start times.
    """

    slots: int
    swap_s: float
    dur: np.ndarray
    ft: np.ndarray
    prefill_s: np.ndarray | None = None


def queue_starts(
    running: np.ndarray, segments: list[Segment], exact_jobs: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """First-token times of every queued job, from now, across model segments.

    ``running`` is ``(S, R)``: the remaining seconds of the sequences in the engine now (the
    first segment's slots; more than ``slots`` sequences means the first job waits for the
    surplus to leave too). Returns ``(first_token (S, n_total), jobs_ahead (n_total,))``.
    """
    s = running.shape[0]
    t0 = np.zeros(s)
    out: list[np.ndarray] = []
    free = running
    first = True
    for seg in segments:
        b = max(1, seg.slots)
        if first and seg.swap_s > 0:  # the running batch drains, then the swap
            drain = free.max(axis=1) if free.shape[1] else t0
            free = np.repeat((drain + seg.swap_s)[:, None], b, axis=1)
        elif first:
            if free.shape[1] > b:  # surplus: the B largest residuals act as the slots
                free = np.sort(free, axis=1)[:, -b:]
            elif free.shape[1] < b:
                free = np.concatenate([free, np.zeros((s, b - free.shape[1]))], axis=1)
        else:
            free = np.repeat((t0 + seg.swap_s)[:, None], b, axis=1)
        st = list_schedule(free, seg.dur, exact_jobs)
        if seg.prefill_s is not None:
            st = st + seg.prefill_s[None, :]
        out.append(st + seg.ft)
        ends = st + seg.dur
        t0 = np.maximum(free.max(axis=1), ends.max(axis=1)) if ends.size else free.max(axis=1)
        first = False
    starts = np.concatenate(out, axis=1) if out else np.zeros((s, 0))
    return starts, np.arange(starts.shape[1]) + running.shape[1]


@dataclass(frozen=True, slots=True)
class WaitSamples:
    """Sampled waiting times of one request (seconds from now).

    ``ahead`` is the number of requests in front of it (running + queued). With
    ``ahead >= n_clt`` the CLT holds and probabilities use a Normal fitted to the samples;
    with fewer, a kernel-smoothed empirical distribution (the exact small-n shape).
    """

    samples: np.ndarray
    ahead: int
    n_clt: int = 30
    _sorted: list[float] | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def mean(self) -> float:
        return float(self.samples.mean())

    @property
    def std(self) -> float:
        return float(self.samples.std())

    def quantile(self, q: float | list[float]) -> np.ndarray:
        """``np.quantile(samples, q)`` (linear interpolation), the same values."""
        if isinstance(q, list):
            return np.array(self.quantiles(q))
        return np.float64(self.quantiles([float(q)])[0])  # type: ignore[return-value]  # as np.quantile

    def quantiles(self, qs: Sequence[float]) -> list[float]:
        """Several quantiles at once, each equal to ``np.quantile(samples, q)`` (numpy's
        default "linear" method: order statistics ``floor((n-1) q)`` and the next, the same
        interpolation arithmetic), from one sort of the samples kept with them: a policy
        reads two per admission and ``np.quantile`` costs a partition and a ``np.unique``
        per call on 64 samples."""
        x = self._sorted
        if x is None:
            x = np.sort(self.samples.ravel()).tolist()
            object.__setattr__(self, "_sorted", x)
        n = len(x)
        if n == 0 or not np.isfinite(x[0]) or not np.isfinite(x[-1]):
            return [float(v) for v in np.quantile(self.samples, list(qs))]  # nan, inf: numpy's rules
        out = []
        for q in qs:
            v = (n - 1) * q
            if not 0.0 <= v < n - 1:
                out.append(float(np.quantile(self.samples, q)))
                continue
            lo = int(v)  # floor: v >= 0
            g = v - lo
            a, b = x[lo], x[lo + 1]
            d = b - a
            out.append(b - d * (1 - g) if g >= 0.5 else a + d * g)  # numpy's _lerp
        return out

    def p_within(self, t: float) -> float:
        """P(wait <= t)."""
        x = self.samples
        sd = float(x.std())
        if sd <= 1e-12:
            return float(x.mean() <= t)
        if self.ahead >= self.n_clt:
            return float(ndtr((t - x.mean()) / sd))
        h = 1.06 * sd * len(x) ** -0.2  # Silverman bandwidth
        return float(ndtr((t - x) / h).mean())
