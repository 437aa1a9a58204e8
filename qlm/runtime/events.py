"""Events that instance backends report to the control plane."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class FirstToken:
    """The request's engine produced a token for the first time in this run."""

    request_id: str
    instance_id: str
    t: float


@dataclass(frozen=True, slots=True)
class Finished:
    """The request completed; ``output_tokens`` counts this run's generated tokens."""

    request_id: str
    instance_id: str
    t: float
    output_tokens: int
    reason: str = "stop"


@dataclass(frozen=True, slots=True)
class Aborted:
    """The request stopped before completion (eviction, swap, engine death).

    ``generated_tokens`` is this run's progress; ``retryable`` is False when the request can
    not be replayed (a stream already partly delivered to its client).
    """

    request_id: str
    instance_id: str
    t: float
    generated_tokens: int
    reason: str = "abort"
    retryable: bool = True


@dataclass(frozen=True, slots=True)
class SwapDone:
    """The instance's active model is now ``model`` and it accepts requests again."""

    instance_id: str
    model: str
    t: float
    duration_s: float
    cold: bool = False


@dataclass(frozen=True, slots=True)
class InstanceDown:
    """The instance stopped answering; its in-flight requests are reported as Aborted first."""

    instance_id: str
    t: float
    reason: str = ""


@dataclass(frozen=True, slots=True)
class InstanceUp:
    """A down instance is healthy again, serving ``model``."""

    instance_id: str
    model: str | None
    t: float


EngineEvent = FirstToken | Finished | Aborted | SwapDone | InstanceDown | InstanceUp
