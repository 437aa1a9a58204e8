"""Turn a scenario's workload into requests (seeded), with their true output lengths.

Two knobs scale a scenario's workload:

- ``load`` multiplies Poisson/gamma rates and divides burst spreads, keeping request counts
  (so a burst keeps its size and start time);
- ``volume`` multiplies every stream's request count over the same time span: Poisson/gamma
  streams arrive at ``volume`` times their rate, bursts bring ``volume`` times as many requests
  over the same spread. It is a true request-rate multiplier, bursts included.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from qlm.domain.request import Request
from qlm.workload.scenario import ArrivalSpec, LengthSpec, Scenario


@dataclass(frozen=True, slots=True)
class TimedRequest:
    """A request to submit at ``request.arrival_s`` and the output length it will really have."""

    request: Request
    output_tokens: int


def lognormal_params(mean: float, std: float) -> tuple[float, float]:
    """(mu, sigma) of a log-normal with the given mean and standard deviation."""
    if std <= 0:
        return float(np.log(mean)), 0.0
    sigma2 = float(np.log1p((std / mean) ** 2))
    return float(np.log(mean) - sigma2 / 2), float(np.sqrt(sigma2))


def sample_lengths(spec: LengthSpec, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Prompt and output token counts, clipped to the spec's bounds."""
    mu_i, s_i = lognormal_params(spec.input_mean, spec.input_std)
    mu_o, s_o = lognormal_params(spec.output_mean, spec.output_std)
    inp = np.clip(np.rint(rng.lognormal(mu_i, s_i, n)), spec.input_min, spec.input_max).astype(int)
    out = np.clip(np.rint(rng.lognormal(mu_o, s_o, n)), spec.output_min, spec.output_max).astype(int)
    if spec.total_max is not None:
        out = np.minimum(out, np.maximum(1, spec.total_max - inp))
    return inp, out


def sample_arrivals(
    spec: ArrivalSpec, n: int, load: float, rng: np.random.Generator, volume: float = 1.0
) -> np.ndarray:
    """Arrival times of ``n`` requests; ``load`` multiplies the rate (and compresses a burst's
    spread), ``volume`` multiplies the rate only (a burst's ``n`` carries the volume)."""
    if spec.kind == "burst":
        if spec.spread_s == 0 or n == 1:
            return np.full(n, spec.start_s)
        return spec.start_s + np.sort(rng.uniform(0, spec.spread_s / load, n))
    assert spec.rate is not None
    rate = spec.rate * load * volume
    if spec.kind == "poisson":
        gaps = rng.exponential(1.0 / rate, n)
    else:  # gamma with mean 1/rate and coefficient of variation cv
        shape = 1.0 / spec.cv**2
        gaps = rng.gamma(shape, 1.0 / (rate * shape), n)
    return spec.start_s + np.cumsum(gaps) - gaps[0]


def stream_counts(scenario: Scenario, volume: float = 1.0) -> list[int]:
    """Requests per stream: explicit counts, or the total split by share (largest remainder).

    With ``volume`` != 1 these counts are multiplied by ``volume`` and rounded so that the
    total is ``round(total x volume)`` (half to even) and every stream is within one request of
    its exact share: floors, then one more for the largest remainders (ties: earlier stream).
    Integer volumes multiply every count exactly; at small volumes a stream may get none.
    """
    counts = _base_counts(scenario)
    if volume == 1.0:
        return counts
    _check_positive("volume", volume)
    exact = [n * volume for n in counts]
    scaled = [math.floor(x) for x in exact]
    short = round(sum(exact)) - sum(scaled)
    order = sorted(range(len(exact)), key=lambda i: (-(exact[i] - scaled[i]), i))
    for i in order[:short]:
        scaled[i] += 1
    return scaled


def _base_counts(scenario: Scenario) -> list[int]:
    """The counts at volume 1."""
    streams = scenario.workload.streams
    total = scenario.workload.requests
    shares = [s.share for s in streams if s.share is not None]
    fixed = sum(s.count or 0 for s in streams)
    remaining = max(0, (total or 0) - fixed)
    share_sum = sum(shares) or 1.0
    raw = [(s.share or 0) / share_sum * remaining for s in streams]
    counts = [s.count if s.count is not None else int(r) for s, r in zip(streams, raw, strict=True)]
    short = remaining - sum(c for s, c in zip(streams, counts, strict=True) if s.share is not None)
    order = sorted(
        (i for i, s in enumerate(streams) if s.share is not None),
        key=lambda i: (-(raw[i] - int(raw[i])), i),
    )
    for i in order[:short]:
        counts[i] += 1
    return counts


def _check_positive(name: str, value: float) -> None:
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be a finite number > 0, got {value}")


def generate(scenario: Scenario, seed: int = 0, load: float = 1.0, volume: float = 1.0) -> list[TimedRequest]:
    """All requests of the scenario, sorted by arrival time (ties by stream, then index).

    ``load`` and ``volume`` scale the workload as the module docstring says; one seeded
    generator draws every stream in order, arrivals then lengths.
    """
    if load <= 0:
        raise ValueError(f"load must be > 0, got {load}")
    _check_positive("volume", volume)
    rng = np.random.default_rng(seed)
    out: list[tuple[float, int, int, TimedRequest]] = []
    counts = stream_counts(scenario, volume)
    for si, (stream, n) in enumerate(zip(scenario.workload.streams, counts, strict=True)):
        if n == 0:
            continue
        t = sample_arrivals(stream.arrival, n, load, rng, volume)
        inp, outp = sample_lengths(stream.length_spec, n, rng)
        for k in range(n):
            req = Request(
                id=f"s{si}-{k}",
                model=stream.model,
                slo_class=stream.slo_class,
                arrival_s=float(t[k]),
                prompt_tokens=int(inp[k]),
                max_tokens=int(outp[k]) if stream.declare_max_tokens else None,
            )
            out.append((float(t[k]), si, k, TimedRequest(req, int(outp[k]))))
    out.sort(key=lambda x: (x[0], x[1], x[2]))
    return [x[3] for x in out]
