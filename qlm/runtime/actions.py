"""LSO-shaped actions a policy returns; the control plane carries them out on backends."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True, slots=True)
class Dispatch:
    """Send a queued request to an instance whose active model is the request's model.

    ``priority`` is passed to engines running ``--scheduling-policy priority`` (lower = sooner).
    """

    request_id: str
    instance_id: str
    priority: int = 0
    reason: str = ""


@dataclass(frozen=True, slots=True)
class Abort:
    """Abort a dispatched request (request eviction). With ``requeue`` it returns to the global
    queue with its progress kept; otherwise it fails."""

    request_id: str
    requeue: bool = True
    reason: str = ""


@dataclass(frozen=True, slots=True)
class Swap:
    """Make ``model`` the active model of an instance: sleep the current one, wake the target
    (or cold-start it). ``mode="abort"`` evicts in-flight requests at once (they are requeued);
    ``mode="wait"`` lets them finish first, admitting nothing new meanwhile."""

    instance_id: str
    model: str
    mode: Literal["abort", "wait"] = "wait"
    reason: str = ""


@dataclass(frozen=True, slots=True)
class Reject:
    """Refuse a queued request (admission control). It counts as missing its SLO."""

    request_id: str
    reason: str = ""


Action = Dispatch | Abort | Swap | Reject
