"""When a queued request leaves the control-plane queue: a replay of the pulling rule.

Under load balancing a queued request is not served by "the pool" as a fluid: it is dispatched
at one instance's event, by that instance's rule, and the rule has edges a fluid does not see:

- an instance pulls only at its own events (a completion frees KV, a swap ends);
- it takes its *own* virtual queue first, in order, while the pulling rule admits the head
  (``held < max_num_seqs`` and the projected KV of what it holds plus the head's fits its
  cache; an empty instance takes anything) and stops at the first head that does not fit;
- only with its own queue exhausted does it take other queues' requests, in
  earliest-deadline order, again stopping at the first that does not fit;
- an instance whose queue goes on with another model stops there (it will swap away).

:class:`DispatchReplay` replays exactly that rule over the pool, event by event, with the
in-flight requests' release times drawn once (stratified) from the length model, and the
requests it dispatches on the way holding their instance for their own drawn service time.
It stops when the request asked about is taken, and can be *resumed* for a later arrival at
the tail of the same group (it comes after everything the replay already decided, in both
the own-queue and the deadline order), so a burst of arrivals costs one replay, not one each.
Pure Python over small lists; no numpy in the loop.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from dataclasses import dataclass, field

__all__ = ["DispatchReplay", "Job", "Member", "Stream", "Taken"]


@dataclass(slots=True)
class Job:
    """A queued request: projected KV ``tokens`` (the pulling rule's charge), ``prompt``
    tokens and its drawn output tokens ``out`` (it holds an instance for the instance's
    ``first_s + out * decode_s``)."""

    id: str
    tokens: float
    prompt: float
    out: float


@dataclass(slots=True)
class Member:
    """An instance of the pool. ``own``: group indices of its virtual queue, in order;
    ``leaves``: its queue continues with another model (it takes nothing after ``own``);
    ``ready_s``: when it starts taking work (0: now; a waking instance later, empty);
    ``releases``: ``(seconds from now, tokens)`` of its in-flight requests; ``decode_s``
    seconds per output token and ``first_s`` seconds to a first token for the work it takes;
    ``pinned``: the groups of ``own`` it keeps after a replan (None: all)."""

    id: str
    kv_tokens: float
    max_seqs: int
    held: int
    held_tokens: float
    own: list[int]
    decode_s: float
    first_s: float = 0.0
    leaves: bool = False
    ready_s: float = 0.0
    releases: list[tuple[float, float]] = field(default_factory=list)
    pinned: list[int] | None = None


@dataclass(slots=True)
class Stream:
    """Requests still to arrive that will be due before the one asked about (a more urgent
    class): one every ``1 / rate`` seconds from ``next_s`` until ``until_s``, each like
    ``job``. Other queues' requests are taken after them (earliest deadline first)."""

    rate: float
    until_s: float
    job: Job
    next_s: float


@dataclass(frozen=True, slots=True)
class Taken:
    """Where and when the replay dispatches a job: ``t`` (seconds from the replay's start),
    ``member`` index, ``before``: prompt tokens the same pull dispatched there ahead of it,
    ``n_before``: how many those are, ``held``: requests the member holds once it is
    taken, ``woke``: the pull is the member's wake (its engine starts empty)."""

    t: float
    member: int
    before: float
    n_before: int
    held: int
    woke: bool


class DispatchReplay:
    """Replays the pulling rule over ``members`` for the queued ``jobs``.

    ``groups``: job indices per group, FIFO; ``order``: group indices in earliest-deadline
    order (the order other queues are taken in). :meth:`until` runs events until a job is
    taken; :meth:`append` adds an arrival to the tail of a group before resuming.
    """

    def __init__(
        self, members: list[Member], jobs: list[Job], groups: list[list[int]], order: list[int],
        streams: Sequence[Stream] = (),
        replan_s: float | None = None,
    ) -> None:
        self.members = members
        self.streams = [s for s in streams if s.rate > 0]
        self.jobs = jobs
        self.groups = groups
        self.order = order
        self.taken: dict[int, Taken] = {}
        self._own_pos = [[0, 0] for _ in members]  # (index into own, index into that group)
        self._steal_pos = [0, 0]
        self._heap: list[tuple[float, int, int, float]] = []  # (t, seq, member, tokens; -1: wake)
        self._seq = 0
        for i, m in enumerate(members):
            if m.ready_s > 0:
                self._heap.append((m.ready_s, self._seq, i, -1.0))
                self._seq += 1
            else:
                for t, tok in m.releases:
                    self._heap.append((t, self._seq, i, tok))
                    self._seq += 1
        heapq.heapify(self._heap)
        self._pulling: tuple[int, float, bool, float, int, bool] | None = None  # interrupted pull
        # member -> steal position it stopped at; members with nothing of their own start
        # there (the queue head did not fit them, or they would have taken it)
        self._blocked: dict[int, tuple[int, int]] = {
            i: (0, 0) for i, m in enumerate(members) if m.ready_s <= 0 and not m.own and not m.leaves
        }
        self._retried: tuple[int, int] | None = None  # steal position blocked members last tried
        self.events = 0
        if replan_s is not None:
            self._push(replan_s, -1, 0.0)

    def _push(self, t: float, i: int, tokens: float) -> None:
        heapq.heappush(self._heap, (t, self._seq, i, tokens))
        self._seq += 1

    def append(self, group: int, job: Job) -> int:
        """Add an arrival at the tail of ``group``; returns its job index."""
        self.jobs.append(job)
        k = len(self.jobs) - 1
        self.groups[group].append(k)
        return k

    def until(self, target: int, horizon_s: float = float("inf")) -> Taken | None:
        """Run the replay until job ``target`` is taken (or no event is left before
        ``horizon_s``); returns where and when."""
        if target in self.taken:
            return self.taken[target]
        if self._pulling is not None:
            i, t, own_done, before, n_before, woke = self._pulling
            self._pulling = None
            if self._pull(i, t, target, own_done, before, n_before, woke) or self._retry(t, target):
                return self.taken[target]
        while self._heap and self._heap[0][0] <= horizon_s:
            t, _, i, tok = heapq.heappop(self._heap)
            self.events += 1
            if i < 0:
                if self._replan(t, target):
                    return self.taken[target]
                continue
            m = self.members[i]
            woke = tok < 0
            if not woke:
                m.held -= 1
                m.held_tokens -= tok
            if self._pull(i, t, target, False, 0.0, 0, woke) or self._retry(t, target):
                return self.taken[target]
        return None

    def _replan(self, t: float, target: int) -> bool:
        """The policy's next replan: groups that have not started may move, so each member
        keeps only its pinned groups; then every member pulls (the replan's pull of every
        instance). Returns True when ``target`` was taken."""
        for i, m in enumerate(self.members):
            if m.pinned is not None and m.pinned != m.own:
                m.own = list(m.pinned)
                self._own_pos[i] = [0, 0]
                if not m.own and not m.leaves:
                    self._blocked.setdefault(i, (0, 0))
        for i, m in enumerate(self.members):
            if m.ready_s <= t and self._pull(i, t, target, False, 0.0, 0, False):
                return True
        return self._retry(t, target)

    def _retry(self, t: float, target: int) -> bool:
        """Members with nothing of their own left that stopped at a head that did not fit
        pull again once the head has moved (in the policy, the next arrival makes such an
        instance pull: a smaller head may fit), in member order, while the head moves.
        Returns True when ``target`` was taken."""
        while self._blocked:
            pos = (self._steal_pos[0], self._steal_pos[1])
            if pos == self._retried:
                return False
            head = self._head()
            if head is None:
                self._retried = pos
                return False
            for b in sorted(self._blocked):
                if self._blocked[b] == pos:
                    continue
                if not self._admits(self.members[b], self.jobs[head]):
                    self._blocked[b] = pos  # the new head does not fit it either
                    continue
                del self._blocked[b]
                if self._pull(b, t, target, True, 0.0, 0, False):
                    return True
                if (self._steal_pos[0], self._steal_pos[1]) != pos:
                    break  # the head moved again: start over with the new one
            else:
                self._retried = pos
        return False

    def _head(self) -> int | None:
        """The first job not taken yet in deadline order (at or after the steal position)."""
        g, j = self._steal_pos
        while g < len(self.order):
            grp = self.groups[self.order[g]]
            while j < len(grp):
                if grp[j] not in self.taken:
                    return grp[j]
                j += 1
            g += 1
            j = 0
        return None

    def _admits(self, m: Member, job: Job) -> bool:
        if m.held >= m.max_seqs:
            return False
        return m.held == 0 or m.held_tokens + job.tokens <= m.kv_tokens

    def _take(self, i: int, k: int, t: float, before: float, n_before: int, woke: bool) -> None:
        m = self.members[i]
        job = self.jobs[k]
        m.held += 1
        m.held_tokens += job.tokens
        self.taken[k] = Taken(t, i, before, n_before, m.held, woke)
        self._push(t + m.first_s + job.out * m.decode_s, i, job.tokens)

    def _pull(
        self, i: int, t: float, target: int, own_done: bool, before: float, n_before: int, woke: bool
    ) -> bool:
        """Member ``i`` pulls at ``t``: own queue, then (unless it leaves) other queues in
        deadline order, each until the first request that does not fit. Returns True when
        ``target`` was taken (the pull is kept to resume from)."""
        m = self.members[i]
        if not own_done:
            pos = self._own_pos[i]
            while pos[0] < len(m.own):
                grp = self.groups[m.own[pos[0]]]
                while pos[1] < len(grp):
                    k = grp[pos[1]]
                    if k in self.taken:
                        pos[1] += 1
                        continue
                    if not self._admits(m, self.jobs[k]):
                        return False
                    self._take(i, k, t, before, n_before, woke)
                    before += self.jobs[k].prompt
                    n_before += 1
                    pos[1] += 1
                    if k == target:
                        self._pulling = (i, t, False, before, n_before, woke)
                        return True
                pos[0] += 1
                pos[1] = 0
            if m.leaves:
                return False
        pos = self._steal_pos
        g, j = pos
        for st in self.streams:  # more urgent arrivals come first
            while st.next_s <= t and st.next_s < st.until_s:
                if not self._admits(m, st.job):
                    self._blocked[i] = (g, j)
                    return False
                m.held += 1
                m.held_tokens += st.job.tokens
                self._push(t + m.first_s + st.job.out * m.decode_s, i, st.job.tokens)
                before += st.job.prompt
                n_before += 1
                st.next_s += 1.0 / st.rate
        while g < len(self.order):
            grp = self.groups[self.order[g]]
            while j < len(grp):
                k = grp[j]
                if k in self.taken:
                    j += 1
                    continue
                if not self._admits(m, self.jobs[k]):
                    pos[0], pos[1] = g, j
                    self._blocked[i] = (g, j)
                    return False
                self._take(i, k, t, before, n_before, woke)
                before += self.jobs[k].prompt
                n_before += 1
                j += 1
                if k == target:
                    pos[0], pos[1] = g, j
                    self._pulling = (i, t, True, before, n_before, woke)
                    return True
            g += 1
            j = 0
        pos[0], pos[1] = g, j
        return False
