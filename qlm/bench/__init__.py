"""``qlm bench``: a load generator for OpenAI-compatible endpoints with SLO classes.

Data (:mod:`~qlm.bench.plan`: the timed request plan from a scenario or trace), model
(:mod:`~qlm.bench.runner`: the open-loop async runner), result (:mod:`~qlm.bench.metrics`:
``vllm bench serve``'s metrics per SLO class, a pure function of
:class:`~qlm.bench.records.RequestRecord` s). :mod:`~qlm.bench.local` starts local targets
(emulators, ``qlm serve``, ``vllm-router``) for experiments and tests. See ``docs/bench.md``.

The names below are imported on first use, so that ``qlm`` starts without loading them.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

__all__ = [
    "BenchError",
    "BenchPlan",
    "PlannedRequest",
    "RequestRecord",
    "RunResult",
    "Target",
    "build_plan",
    "compute_metrics",
    "parse_model_map",
    "probe",
    "result_document",
    "run_plan",
    "summarize",
]

_HOME = {
    "BenchError": "runner", "BenchPlan": "plan", "PlannedRequest": "plan", "RequestRecord": "records",
    "RunResult": "runner", "Target": "runner", "build_plan": "plan", "compute_metrics": "metrics",
    "parse_model_map": "plan", "probe": "runner", "result_document": "report", "run_plan": "runner",
    "summarize": "metrics",
}


def __getattr__(name: str) -> Any:
    if name in _HOME:
        return getattr(import_module(f"qlm.bench.{_HOME[name]}"), name)
    raise AttributeError(f"module 'qlm.bench' has no attribute {name!r}")
