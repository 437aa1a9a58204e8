"""Request groups and virtual queues.

A request group holds requests of one model and one SLO class, FCFS inside, up to a size cap;
the scheduler orders groups, not requests. Each instance has a virtual queue: the ordered
groups it will serve next.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field

from qlm.domain.request import Request


@dataclass(slots=True)
class RequestGroup:
    """Requests sharing ``(model, slo_class)``, in arrival order."""

    id: str
    model: str
    slo_class: str
    cap: int
    requests: deque[Request] = field(default_factory=deque)
    sealed: bool = False  # a sealed group takes no new requests

    def __len__(self) -> int:
        return len(self.requests)

    @property
    def full(self) -> bool:
        return self.sealed or len(self.requests) >= self.cap

    @property
    def head(self) -> Request | None:
        return self.requests[0] if self.requests else None

    @property
    def earliest_deadline_s(self) -> float:
        return self.requests[0].ttft_deadline_s if self.requests else float("inf")


class GroupTable:
    """Assigns arriving requests to open groups; a group is sealed when it reaches its cap.

    Group ids are ``"<model>/<class>/<n>"`` with ``n`` counting per key, so ids are stable
    for a given arrival order.
    """

    def __init__(self, cap: int = 64) -> None:
        if cap < 1:
            raise ValueError(f"group cap must be >= 1, got {cap}")
        self.cap = cap
        self._open: dict[tuple[str, str], RequestGroup] = {}
        self._counter: dict[tuple[str, str], int] = {}
        self.groups: dict[str, RequestGroup] = {}

    def add(self, request: Request) -> RequestGroup:
        key = (request.model, request.slo_class)
        group = self._open.get(key)
        if group is None or group.full:
            n = self._counter.get(key, 0)
            self._counter[key] = n + 1
            group = RequestGroup(f"{request.model}/{request.slo_class}/{n}", *key, cap=self.cap)
            self._open[key] = group
            self.groups[group.id] = group
        group.requests.append(request)
        return group

    def requeue(self, request: Request) -> RequestGroup:
        """Put an evicted request back at the head of a group of its key (it keeps its place)."""
        key = (request.model, request.slo_class)
        group = self._open.get(key)
        if group is None:
            group = self.add(request)
            return group
        group.requests.appendleft(request)
        return group

    def discard_empty(self) -> None:
        """Forget groups that have no requests left."""
        for gid in [g for g, grp in self.groups.items() if not grp.requests]:
            grp = self.groups.pop(gid)
            key = (grp.model, grp.slo_class)
            if self._open.get(key) is grp:
                del self._open[key]

    def __iter__(self) -> Iterator[RequestGroup]:
        return iter(self.groups.values())

    def __len__(self) -> int:
        return len(self.groups)


@dataclass(slots=True)
class VirtualQueue:
    """The ordered groups one instance serves next; the head is pulled first."""

    instance_id: str
    group_ids: list[str] = field(default_factory=list)
