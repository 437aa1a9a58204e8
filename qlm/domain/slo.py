"""SLO classes."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class SLOClass(BaseModel):
    """A service-level class: a TTFT target, optional TPOT target and completion deadline.

    ``priority`` orders classes for engines that run ``--scheduling-policy priority``:
    lower is more urgent, as in vLLM.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1)
    ttft_s: float = Field(gt=0, description="time-to-first-token target, seconds")
    tpot_s: float | None = Field(default=None, gt=0, description="time per output token target")
    deadline_s: float | None = Field(default=None, gt=0, description="completion deadline")
    priority: int = Field(default=0, description="engine priority, lower = sooner")
    can_reject: bool = Field(default=False, description="the scheduler may reject under overload")
    weight: float = Field(default=1.0, gt=0, description="importance of one request of this class")


DEFAULT_SLO_CLASSES: tuple[SLOClass, ...] = (
    SLOClass(name="interactive", ttft_s=20.0, priority=0, weight=1.0),
    SLOClass(name="batch-1", ttft_s=60.0, priority=1, weight=1.0),
    SLOClass(name="batch-2", ttft_s=3600.0, priority=2, weight=1.0),
)
