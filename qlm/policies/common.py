"""Pieces the queueing policies share: per-model deadline queues and engine batch capacity."""

from __future__ import annotations

import heapq
from collections.abc import Iterator

from qlm.domain.request import Request, RequestState
from qlm.runtime.events import EngineEvent, Finished
from qlm.runtime.view import ClusterView, InstanceView


class DeadlineQueues:
    """Queued requests per model, earliest TTFT deadline first (ties: arrival, then id).

    Lazy deletion: entries whose request left the global queue are skipped on access.
    """

    def __init__(self) -> None:
        self._heaps: dict[str, list[tuple[float, float, str, Request]]] = {}

    def push(self, r: Request, key: float | None = None) -> None:
        k = r.ttft_deadline_s if key is None else key
        heapq.heappush(self._heaps.setdefault(r.model, []), (k, r.arrival_s, r.id, r))

    def _clean(self, model: str, view: ClusterView) -> list[tuple[float, float, str, Request]]:
        h = self._heaps.get(model, [])
        while h and h[0][2] not in view.queue:
            heapq.heappop(h)
        return h

    def head(self, model: str, view: ClusterView) -> Request | None:
        h = self._clean(model, view)
        return h[0][3] if h else None

    def pop(self, model: str, view: ClusterView) -> Request | None:
        h = self._clean(model, view)
        return heapq.heappop(h)[3] if h else None

    def models(self) -> list[str]:
        return sorted(self._heaps)

    def pending(self, model: str, view: ClusterView) -> int:
        """Upper bound on queued requests of ``model`` (lazy entries may still be counted)."""
        self._clean(model, view)
        return len(self._heaps.get(model, ()))

    def heads(self, view: ClusterView) -> Iterator[tuple[str, Request]]:
        for m in self.models():
            r = self.head(m, view)
            if r is not None:
                yield m, r


class BatchCapacity:
    """How many requests an engine should hold at once: its sequence limit, or what its KV
    cache holds at the typical request size (prompt + output, an EWMA over completions)."""

    def __init__(self, prior_tokens: float = 600.0, alpha: float = 0.2, queue_grace_s: float = 0.1) -> None:
        self.prior = prior_tokens
        self.queue_grace_s = queue_grace_s
        self.alpha = alpha
        self._typical: dict[str, float] = {}

    def observe(self, event: EngineEvent, view: ClusterView) -> None:
        if isinstance(event, Finished):
            r = view.requests.get(event.request_id)
            if r is not None:
                size = r.prompt_tokens + r.generated_tokens
                old = self._typical.get(r.model, self.prior)
                self._typical[r.model] = (1 - self.alpha) * old + self.alpha * size

    def typical_tokens(self, model: str) -> float:
        return self._typical.get(model, self.prior)

    def limit(self, inst: InstanceView) -> int:
        prof = inst.profile
        if prof is None:
            return 0
        kv_fit = int(prof.kv_capacity_tokens // max(1.0, self.typical_tokens(prof.model.name)))
        return max(1, min(prof.max_num_seqs, kv_fit))

    def free_slots(self, inst: InstanceView, now: float) -> int:
        """Requests the instance may still take: none while a request sent to it more than
        ``queue_grace_s`` ago still waits for its first token (the engine queues: the backlog
        belongs in the global queue), else its limit minus what it holds. The grace keeps
        the rule from reacting to prefills in progress and to event latency at run time."""
        if inst.outstanding and inst.waiting(now, self.queue_grace_s) > 0:
            return 0
        return self.limit(inst) - len(inst.outstanding)


def in_flight(inst: InstanceView) -> int:
    return sum(1 for r in inst.outstanding.values() if not r.state.terminal)


def least_loaded(candidates: list[InstanceView]) -> InstanceView | None:
    """Fewest outstanding requests relative to the instance's sequence limit; ties by id."""
    best: InstanceView | None = None
    best_key: tuple[float, str] | None = None
    for inst in candidates:
        prof = inst.profile
        cap = prof.max_num_seqs if prof else 1
        key = (len(inst.outstanding) / cap, inst.id)
        if best_key is None or key < best_key:
            best, best_key = inst, key
    return best


def is_queued(r: Request) -> bool:
    return r.state is RequestState.QUEUED
