"""The instance-backend interface: one object per instance, simulated or a real vLLM engine."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Literal, Protocol

from qlm.domain.request import Request
from qlm.runtime.events import EngineEvent


@dataclass(frozen=True, slots=True)
class InstanceStats:
    """What an engine's ``/metrics`` tells a control plane (vLLM metric names in comments)."""

    num_running: int = 0  # vllm:num_requests_running
    num_waiting: int = 0  # vllm:num_requests_waiting
    kv_usage: float = 0.0  # vllm:kv_cache_usage_perc, 0..1
    preemptions_total: int = 0  # vllm:num_preemptions_total
    prompt_tokens_total: int = 0  # vllm:prompt_tokens_total
    generation_tokens_total: int = 0  # vllm:generation_tokens_total
    busy_s: float = 0.0  # seconds spent executing steps (simulator/emulator only)


class EventSink(Protocol):
    """Where backends report events; the control plane implements it."""

    def post(self, event: EngineEvent) -> None: ...


class InstanceBackend(ABC):
    """One serving instance. The control plane is its only caller.

    Contract:
    - Every method returns at once; outcomes arrive later as events posted to the sink given
      to :meth:`bind` (``FirstToken``, ``Finished``, ``Aborted``, ``SwapDone``, ``InstanceDown``).
    - ``dispatch`` is only called while the instance is ready and ``request.model`` is active;
      ``request.generated_tokens`` is progress from an earlier, evicted run to resume from.
    - Each dispatched request ends with exactly one ``Finished`` or ``Aborted`` event.
    - ``swap`` ends with ``SwapDone`` (or ``InstanceDown``); with ``mode="abort"`` in-flight
      requests are reported ``Aborted`` first.
    """

    instance_id: str

    @abstractmethod
    def bind(self, sink: EventSink) -> None:
        """Set where events go; called once before anything else."""

    @abstractmethod
    def dispatch(self, request: Request, priority: int) -> None:
        """Start serving ``request``."""

    @abstractmethod
    def abort(self, request_id: str) -> None:
        """Stop serving a dispatched request (it ends with ``Aborted``)."""

    @abstractmethod
    def swap(self, model: str, mode: Literal["abort", "wait"]) -> None:
        """Make ``model`` active (sleep/wake, or cold start)."""

    @abstractmethod
    def stats(self) -> InstanceStats:
        """Latest observation of the engine's metrics."""
