"""Service-rate model per (model, instance): the profile's step times, corrected online.

Continuous batching serves a full batch of ``B`` sequences one token per step. The seconds
per step seen by every sequence, ``tau``, is the decode step time at ``B`` sequences with a
typical context, plus the prefill of the requests that replace finished ones, amortised per
step (``B / mean_out`` admissions per step, each adding ``T_lin(B + p) - T_lin(B)``)::

    tau(B) = step_time(0, B, B * (p + o/2)) + (B / o) * (T_lin(B + p) - T_lin(B))

with ``p``, ``o`` the mean prompt and output tokens. An online factor per (model, instance),
an EWMA of ``log(observed TPOT / predicted TPOT)`` over completions, corrects the profile
for drift, heterogeneous GPUs or a slower real server.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from qlm.perf.engine_model import EngineProfile

__all__ = ["ServiceRateModel", "StepTimes"]


@dataclass(frozen=True, slots=True)
class StepTimes:
    """Per-step timing of one (model, instance) at batch ``batch``, seconds."""

    batch: int
    tau_s: float  # seconds per decode step, prefill of replacements amortised in
    decode_s: float  # decode-only step time (no prefill)
    prefill_s_per_token: float  # marginal prefill seconds per prompt token at this batch

    def first_token_s(self, prompt_tokens: float) -> float:
        """Seconds from admission to first token: one step carrying the prompt's prefill."""
        return self.decode_s + self.prefill_s_per_token * prompt_tokens


class ServiceRateModel:
    """Step times per (model, instance) from ``EngineProfile``, times an online correction.

    Contract: ``step_times(instance_id, profile, batch, prompt, out)`` is pure arithmetic on
    the profile, scaled by ``factor(instance_id, model)`` (1.0 until observations arrive);
    ``observe_tpot`` feeds one completion's observed and predicted time per output token.
    """

    def __init__(self, alpha: float = 0.1, clip: tuple[float, float] = (0.25, 4.0)) -> None:
        if not 0 < alpha <= 1:
            raise ValueError(f"alpha must be in (0, 1], got {alpha}")
        self.alpha = alpha
        self.clip = clip
        self._log_factor: dict[tuple[str, str], float] = {}
        self.observations = 0

    def factor(self, instance_id: str, model: str) -> float:
        return math.exp(self._log_factor.get((instance_id, model), 0.0))

    def observe_tpot(self, instance_id: str, model: str, observed_s: float, predicted_s: float) -> None:
        """Record one completion: its measured seconds per output token vs the prediction."""
        if observed_s <= 0 or predicted_s <= 0:
            return
        key = (instance_id, model)
        lo, hi = math.log(self.clip[0]), math.log(self.clip[1])
        x = min(hi, max(lo, math.log(observed_s / predicted_s)))
        old = self._log_factor.get(key, 0.0)
        self._log_factor[key] = (1 - self.alpha) * old + self.alpha * x
        self.observations += 1

    def step_times(
        self,
        instance_id: str,
        profile: EngineProfile,
        batch: int,
        prompt_tokens: float,
        output_tokens: float,
        *,
        corrected: bool = True,
    ) -> StepTimes:
        """Step times at ``batch`` running sequences with mean prompt/output lengths."""
        b = max(1, batch)
        ctx = b * (prompt_tokens + output_tokens / 2)
        decode = profile.step_time(0, b, int(ctx))
        p = max(1.0, prompt_tokens)
        marginal = (profile.t_lin(b + p) - profile.t_lin(b)) / p
        tau = decode + (b / max(1.0, output_tokens)) * marginal * p
        f = self.factor(instance_id, profile.model.name) if corrected else 1.0
        return StepTimes(b, tau * f, decode * f, marginal * f)

    @staticmethod
    def capacity(profile: EngineProfile, typical_tokens: float) -> int:
        """Sequences an engine should hold: ``max_num_seqs``, or what its KV cache holds at
        the typical request size (prompt + output)."""
        kv_fit = int(profile.kv_capacity_tokens // max(1.0, typical_tokens))
        return max(1, min(profile.max_num_seqs, kv_fit))
