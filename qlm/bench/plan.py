"""The request plan of a benchmark: which requests to send, when (wall seconds), with what
model, SLO class, prompt length and output length. Built from a scenario's seeded workload
or a trace mapped onto a scenario (:mod:`qlm.workload`); no I/O beyond reading those.

Time: a request's ``send_s`` is its arrival time (model seconds, the first arrival at 0)
divided by ``time_scale``; pair ``time_scale`` S with emulators running ``--speed S``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from qlm.domain.slo import SLOClass
from qlm.workload.generator import TimedRequest, generate
from qlm.workload.scenario import Scenario
from qlm.workload.traces import trace_requests

__all__ = ["CHAT_OVERHEAD_TOKENS", "BenchPlan", "PlannedRequest", "build_plan", "parse_model_map",
           "parse_pairs", "prompt_text"]

# Three-letter words: "word " is 4 characters, one token for the 4-characters-per-token
# count of the gateway and the emulator, and about one token for BPE tokenizers.
_WORDS = ("the", "and", "for", "you", "not", "are", "but", "was", "all", "can", "had", "her", "one",
          "our", "out", "day", "get", "has", "him", "his", "how", "man", "new", "now", "old", "see",
          "two", "way", "who", "boy", "did", "its", "let", "put", "say", "she", "too", "use")
CHAT_OVERHEAD_TOKENS = 6
"""Prompt tokens a one-message chat adds to its text (2 + 4 per message, as the gateway and
the emulator count; vLLM's chat templates add a similar handful)."""


@dataclass(frozen=True, slots=True)
class PlannedRequest:
    """One request to send ``send_s`` wall seconds after the run starts."""

    index: int
    send_s: float
    arrival_s: float
    model: str
    slo_class: str
    prompt_tokens: int
    output_tokens: int


@dataclass(frozen=True)
class BenchPlan:
    """Requests sorted by ``send_s`` (ties by index), the scenario's SLO classes, the time
    scale and the seed that also draws prompt words; ``source`` says where it came from."""

    requests: tuple[PlannedRequest, ...]
    slo_classes: Mapping[str, SLOClass]
    time_scale: float = 1.0
    seed: int = 0
    source: Mapping[str, Any] = field(default_factory=dict)

    @property
    def slo_ttft_s(self) -> dict[str, float]:
        """Class -> TTFT target (model seconds), in the scenario's order."""
        return {n: c.ttft_s for n, c in self.slo_classes.items()}

    @property
    def classes_used(self) -> list[str]:
        used = {r.slo_class for r in self.requests}
        return [c for c in self.slo_classes if c in used]

    def prompt(self, req: PlannedRequest, chat: bool) -> str:
        """The prompt text of ``req`` (drawn from ``seed`` and the request's index)."""
        n = req.prompt_tokens - CHAT_OVERHEAD_TOKENS if chat else req.prompt_tokens
        return prompt_text(max(1, n), np.random.default_rng([self.seed, req.index]))


def prompt_text(tokens: int, rng: np.random.Generator) -> str:
    """``tokens`` placeholder words drawn by ``rng`` (4 characters each with the spaces)."""
    if tokens < 1:
        raise ValueError(f"tokens must be >= 1, got {tokens}")
    picks = rng.integers(0, len(_WORDS), tokens)
    return " ".join(_WORDS[i] for i in picks)


def parse_pairs(text: str, option: str) -> dict[str, str]:
    """``"a=b,c=d"`` -> ``{"a": "b", "c": "d"}``; ``ValueError`` naming ``option`` for an
    item without ``=``, an empty side or a key given twice."""
    out: dict[str, str] = {}
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        key, sep, value = item.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not key or not value:
            raise ValueError(f"{option}: expected NAME=VALUE, got {item!r}")
        if key in out:
            raise ValueError(f"{option}: {key!r} is given twice")
        out[key] = value
    if not out:
        raise ValueError(f"{option}: no NAME=VALUE pair in {text!r}")
    return out


def parse_model_map(text: str) -> dict[str, str]:
    """``--model-map`` (scenario model -> model name the endpoint serves)."""
    return parse_pairs(text, "--model-map")


def build_plan(scenario: Scenario, *, seed: int = 0, load: float = 1.0, trace: Path | None = None,
               limit: int | None = None, time_scale: float = 1.0,
               model_map: Mapping[str, str] | None = None) -> BenchPlan:
    """The plan of a scenario's workload (or of ``trace`` mapped onto the scenario), with
    ``load`` as in ``qlm simulate``, the first ``limit`` requests by arrival, arrival times
    shifted so the first is at 0 and divided by ``time_scale``, and model names renamed by
    ``model_map``. Output lengths are the workload's true lengths (sent as ``max_tokens``).

    Raises ``ValueError`` for a bad number or a ``model_map`` key that is no model of the
    workload, :class:`qlm.errors.ConfigError` for a bad trace.
    """
    if load <= 0:
        raise ValueError(f"--load must be > 0 (got {load})")
    if time_scale <= 0:
        raise ValueError(f"--time-scale must be > 0 (got {time_scale})")
    if limit is not None and limit < 1:
        raise ValueError(f"--limit must be >= 1 (got {limit})")
    workload: list[TimedRequest]
    if trace is not None:
        workload = trace_requests(trace, scenario, seed=seed, load=load, limit=limit)
    else:
        workload = generate(scenario, seed=seed, load=load)[:limit]
    mapping = dict(model_map or {})
    models = sorted({tr.request.model for tr in workload})
    stray = [m for m in mapping if m not in models]
    if stray:
        raise ValueError(f"--model-map: {stray[0]!r} is no model of the workload (models: {', '.join(models)})")
    t0 = workload[0].request.arrival_s if workload else 0.0
    reqs = tuple(
        PlannedRequest(
            index=i, send_s=(tr.request.arrival_s - t0) / time_scale, arrival_s=tr.request.arrival_s,
            model=mapping.get(tr.request.model, tr.request.model), slo_class=tr.request.slo_class,
            prompt_tokens=max(1, tr.request.prompt_tokens), output_tokens=max(1, tr.output_tokens),
        )
        for i, tr in enumerate(workload)
    )
    source = {"scenario": scenario.name, "trace": None if trace is None else str(trace), "load": load,
              "limit": limit, "model_map": mapping}
    return BenchPlan(reqs, scenario.slo, time_scale=time_scale, seed=seed, source=source)
