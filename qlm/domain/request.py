"""Requests as the control plane sees them, and their lifecycle."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


class RequestState(enum.IntEnum):
    """Ordered lifecycle: everything >= FINISHED is terminal."""

    QUEUED = 0  # in the global queue
    DISPATCHED = 1  # sent to an engine, no token yet
    RUNNING = 2  # first token produced
    FINISHED = 3
    REJECTED = 4
    FAILED = 5

    @property
    def terminal(self) -> bool:
        return self >= RequestState.FINISHED


@dataclass(slots=True)
class Request:
    """One inference request. Everything here is known to a real control plane.

    The true output length is *not* here: the simulator keeps it aside, as a real
    engine's output length is unknown until it finishes.
    """

    id: str
    model: str
    slo_class: str
    arrival_s: float
    prompt_tokens: int
    max_tokens: int | None = None
    ttft_deadline_s: float = float("inf")  # absolute time by which the first token is due
    # control-plane bookkeeping, updated as events arrive
    state: RequestState = RequestState.QUEUED
    instance: str | None = None
    dispatched_s: float | None = None
    first_token_s: float | None = None
    finish_s: float | None = None
    generated_tokens: int = 0  # progress carried over evictions
    evictions: int = 0
    finish_reason: str | None = None
    meta: dict[str, object] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.prompt_tokens < 0:
            raise ValueError(f"request {self.id}: prompt_tokens must be >= 0, got {self.prompt_tokens}")
        if self.max_tokens is not None and self.max_tokens < 1:
            raise ValueError(f"request {self.id}: max_tokens must be >= 1, got {self.max_tokens}")

    @property
    def ttft_s(self) -> float | None:
        return None if self.first_token_s is None else self.first_token_s - self.arrival_s
