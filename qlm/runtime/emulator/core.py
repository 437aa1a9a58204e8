"""The emulator's engine: the simulator's :class:`~qlm.sim.engine.SimEngine` run on a
real-time scheduler, plus what a vLLM server adds around it (sleep mode, per-request
streams, Prometheus counters).

Timings come from the same engine model as the simulator: the scheduling logic is
``SimEngine``'s, unchanged; only its time source differs (``RealTimeScheduler`` maps virtual
seconds to ``loop.call_at`` with ``speed`` compressing time). Sleep and wake durations come
from :func:`qlm.perf.swap_model.swap_costs`.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Literal

from qlm.domain.cluster import InstanceSpec, NodeSpec
from qlm.domain.request import Request
from qlm.perf.catalog import Catalog, default_catalog
from qlm.perf.engine_model import EngineProfile, build_profile, fits
from qlm.perf.swap_model import Residency, SwapCosts, swap_costs
from qlm.runtime.events import Aborted, EngineEvent, Finished, FirstToken
from qlm.sim.engine import NodeMemory, SimEngine

VLLM_VERSION = "0.33.0"
SLEEP_STATES = ("awake", "weights_offloaded", "discard_all")


class RealTimeScheduler:
    """The ``Scheduler`` protocol of ``SimEngine`` over an asyncio loop: virtual time is wall
    time since construction times ``speed``. Must be built inside the running loop."""

    def __init__(self, speed: float = 1.0) -> None:
        if speed <= 0:
            raise ValueError(f"speed must be > 0, got {speed}")
        self.speed = speed
        self.loop = asyncio.get_running_loop()
        self._t0 = self.loop.time()

    def now(self) -> float:
        return (self.loop.time() - self._t0) * self.speed

    def at(self, t: float, fn: Callable[[], None]) -> None:
        self.loop.call_at(self._t0 + t / self.speed, fn)

    def wall(self, virtual_s: float) -> float:
        """Wall seconds corresponding to ``virtual_s`` virtual seconds."""
        return virtual_s / self.speed


class EmulatedEngine(SimEngine):
    """``SimEngine`` with a pause switch (sleep mode), a one-off warm-up penalty on the first
    iteration after a wake, and a progress snapshot for streaming. Scheduling is unchanged."""

    paused: bool = False
    warmup_penalty_s: float = 0.0

    def _next(self, now: float) -> None:
        if self.paused:
            self.plan = None
            return
        super()._next(now)
        p = self.plan
        if p is not None and self.warmup_penalty_s > 0 and not p.swap:
            pen, self.warmup_penalty_s = self.warmup_penalty_s, 0.0
            p.start += pen
            p.end += pen
            self.version += 1
            p.version = self.version
            self._schedule_end(p)

    def resume(self) -> None:
        self.paused = False
        if self.plan is None:
            self._next(self.sched.now())

    def progress(self, now: float) -> dict[str, int]:
        """Tokens generated so far per running request (engine id), including the steps of a
        decode macro-step already completed at ``now``."""
        out = {s.req.id: s.generated for s in self.running}
        p = self.plan
        if p is not None and p.macro and p.decode and now > p.start:
            done = min(p.steps, self.profile.decode_steps_within(len(p.decode), p.context0, now - p.start))
            for s in p.decode:
                if s.req.id in out:
                    out[s.req.id] = s.generated + done
        return out

    @property
    def idle(self) -> bool:
        return not self.running and not self._waiting_list()

    def all_ids(self) -> list[str]:
        return [s.req.id for s in self.running] + [s.req.id for s in self._waiting_list()]


@dataclass
class EmulatorConfig:
    """One emulated ``vllm serve`` process.

    ``served_model`` is the name clients use (``--served-model-name``); ``profile_model`` is
    the catalogue model whose performance profile sets the timings. ``speed`` compresses
    time (2.0: everything twice as fast). ``stream_interval_s`` is the wall-time period at
    which a streamed request's new tokens are sent (several tokens per chunk when the engine
    is faster than that). ``cold_start``: the server starts like a fresh ``vllm serve``
    loading its weights from disk (``disk_gbps``): it accepts connections only after
    :meth:`startup_s` virtual seconds, and its first iteration pays the warm-up.
    """

    served_model: str
    gpu: str = "A100-80G"
    tp: int = 1
    profile_model: str = "mistral-7b"
    sleep_mode: bool = False
    scheduling_policy: Literal["fcfs", "priority"] = "fcfs"
    speed: float = 1.0
    seed: int = 0
    stream_interval_s: float = 0.01
    output_mean: float = 256.0
    output_std: float = 200.0
    cpu_ram_gb: float = 1024.0
    disk_gbps: float = 2.0
    cold_start: bool = False
    catalog: Catalog | None = None

    def __post_init__(self) -> None:
        if not self.served_model:
            raise ValueError("model: the served model name must not be empty")
        if self.speed <= 0:
            raise ValueError(f"speed: must be > 0, got {self.speed}")
        if self.tp < 1:
            raise ValueError(f"tp: must be >= 1, got {self.tp}")
        if self.scheduling_policy not in ("fcfs", "priority"):
            raise ValueError(
                f"scheduling_policy: must be fcfs or priority, got {self.scheduling_policy!r}"
            )
        if self.stream_interval_s <= 0:
            raise ValueError(f"stream_interval_s: must be > 0, got {self.stream_interval_s}")
        cat = self.catalog or default_catalog()
        if self.gpu not in cat.gpus:
            raise ValueError(f"gpu: unknown GPU type {self.gpu!r}; known: {', '.join(sorted(cat.gpus))}")
        if self.profile_model not in cat.models:
            raise ValueError(
                f"profile: unknown model {self.profile_model!r}; known: {', '.join(sorted(cat.models))}"
            )
        if not fits(cat.models[self.profile_model], cat.gpus[self.gpu], self.tp, cat):
            raise ValueError(f"profile: {self.profile_model} does not fit {self.tp} x {self.gpu}")
        if self.disk_gbps <= 0:
            raise ValueError(f"disk_gbps: must be > 0, got {self.disk_gbps}")

    def startup_s(self) -> float:
        """Virtual seconds before a cold-started server accepts connections: the model's cold
        start cost (``swap_costs(...).cold_s``) less the warm-up its first iteration pays."""
        if not self.cold_start:
            return 0.0
        cat = self.catalog or default_catalog()
        node = NodeSpec(name="local", gpu=self.gpu, num_gpus=self.tp, cpu_ram_gb=self.cpu_ram_gb,
                        disk_gbps=self.disk_gbps)
        costs = swap_costs(cat.model(self.profile_model), cat.gpu(self.gpu), self.tp, node, cat)
        return max(0.0, costs.cold_s - cat.swap.warmup_s)


@dataclass
class Job:
    """One generation request inside the emulator."""

    rid: str  # external id (X-Request-Id or body request_id or uuid)
    eid: str  # engine id: rid + "-" + 8 chars, as vLLM does
    prompt_tokens: int
    target: int  # tokens this request will generate
    natural_stop: bool  # ends with finish_reason "stop" (an EOS draw) rather than "length"
    priority: int
    arrival_s: float
    visible: int = 0  # tokens generated and visible to the client
    first_token_s: float | None = None
    finish_s: float | None = None
    finish_reason: str | None = None  # set when the job ended
    error: str | None = None
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def done(self) -> bool:
        return self.finish_reason is not None


class Histogram:
    """A cumulative Prometheus histogram (fixed buckets)."""

    def __init__(self, buckets: tuple[float, ...]) -> None:
        self.buckets = buckets
        self.counts = [0] * len(buckets)
        self.total = 0
        self.sum = 0.0

    def observe(self, v: float) -> None:
        self.total += 1
        self.sum += v
        for i, b in enumerate(self.buckets):
            if v <= b:
                self.counts[i] += 1


TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0,
                7.5, 10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0)
E2E_BUCKETS = (0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0,
               120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0)
TPOT_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0,
                7.5, 10.0, 20.0, 40.0, 80.0)


@dataclass
class Counters:
    success: dict[str, int] = field(
        default_factory=lambda: {r: 0 for r in ("stop", "length", "abort", "error")}
    )
    ttft: Histogram = field(default_factory=lambda: Histogram(TTFT_BUCKETS))
    e2e: Histogram = field(default_factory=lambda: Histogram(E2E_BUCKETS))
    queue: Histogram = field(default_factory=lambda: Histogram(E2E_BUCKETS))
    tpot: Histogram = field(default_factory=lambda: Histogram(TPOT_BUCKETS))


class EmulatorCore:
    """Engine state of one emulated server; every method runs on the server's event loop.

    Times in ``Job`` and the histograms are virtual seconds (wall seconds times ``speed``).
    """

    def __init__(self, cfg: EmulatorConfig) -> None:
        self.cfg = cfg
        cat = cfg.catalog or default_catalog()
        base = build_profile(cfg.profile_model, cfg.gpu, cfg.tp, cat)
        self.profile: EngineProfile = replace(
            base, model=base.model.model_copy(update={"name": cfg.served_model})
        )
        self.node = NodeSpec(name="local", gpu=cfg.gpu, num_gpus=cfg.tp, cpu_ram_gb=cfg.cpu_ram_gb,
                             disk_gbps=cfg.disk_gbps)
        self.costs: SwapCosts = swap_costs(cat.model(cfg.profile_model), cat.gpu(cfg.gpu), cfg.tp,
                                           self.node, cat)
        self.swap_consts = cat.swap
        self.max_model_len = self.profile.model.max_model_len
        self.jobs: dict[str, Job] = {}  # by engine id
        self.counters = Counters()
        self.sleep_level = 0
        self.asleep_tags: set[str] = set()
        self.weights_reloaded = True
        self.server_load = 0
        self._suffix = itertools.count()
        self._rng = random.Random(cfg.seed)
        self._engine: EmulatedEngine | None = None
        self._sched: RealTimeScheduler | None = None
        self._ticker: asyncio.Task[None] | None = None
        self._tick_event: asyncio.Event | None = None
        self._sleep_lock: asyncio.Lock | None = None

    # ---- lifecycle ----------------------------------------------------------------------
    async def start(self) -> None:
        cfg = self.cfg
        self._sched = RealTimeScheduler(cfg.speed)
        spec = InstanceSpec(
            id="emulator", node="local", gpu=cfg.gpu, tp=cfg.tp, models=(cfg.served_model,),
            initial_model=cfg.served_model, sleep_mode=cfg.sleep_mode,
        )
        self._engine = EmulatedEngine(
            spec, NodeMemory(self.node), {cfg.served_model: self.profile},
            {cfg.served_model: self.costs}, {cfg.served_model: Residency.ACTIVE}, self._sched,
            self._true_output, cfg.scheduling_policy,
        )
        self._engine.bind(self)
        if cfg.cold_start:  # a fresh process: its first iteration is the slow one
            self._engine.warmup_penalty_s = self.swap_consts.warmup_s
        self._tick_event = asyncio.Event()
        self._sleep_lock = asyncio.Lock()
        self._ticker = asyncio.create_task(self._tick_loop())

    async def stop(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
            self._ticker = None

    @property
    def engine(self) -> EmulatedEngine:
        assert self._engine is not None, "emulator core not started"
        return self._engine

    @property
    def sched(self) -> RealTimeScheduler:
        assert self._sched is not None, "emulator core not started"
        return self._sched

    def now(self) -> float:
        return self.sched.now()

    # ---- requests -----------------------------------------------------------------------
    def _true_output(self, r: Request) -> int:
        return self.jobs[r.id].target

    def draw_output_len(self, rid: str, limit: int) -> int:
        """Output length of a request without max_tokens (an EOS draw), seeded by the
        emulator seed and the request id."""
        rng = random.Random(f"{self.cfg.seed}:{rid}")
        m, s = self.cfg.output_mean, self.cfg.output_std
        sigma2 = math.log1p((s / m) ** 2) if s > 0 else 0.0
        v = rng.lognormvariate(math.log(m) - sigma2 / 2, math.sqrt(sigma2)) if s > 0 else m
        return max(1, min(limit, int(round(v))))

    def new_job(self, rid: str, prompt_tokens: int, max_tokens: int | None, ignore_eos: bool,
                priority: int) -> Job:
        """Create and submit a job. ``max_tokens`` must already be validated against
        ``max_model_len``."""
        limit = self.max_model_len - prompt_tokens
        if max_tokens is not None:
            target, natural = max_tokens, False
        else:
            drawn = self.draw_output_len(rid, limit)
            target, natural = (limit, False) if ignore_eos else (drawn, drawn < limit)
        eid = f"{rid}-{next(self._suffix):08x}"
        prio = priority if self.cfg.scheduling_policy == "priority" else 0
        job = Job(rid, eid, prompt_tokens, target, natural, prio, self.now())
        self.jobs[eid] = job
        assert self._tick_event is not None
        self._tick_event.set()
        req = Request(id=eid, model=self.cfg.served_model, slo_class="", arrival_s=job.arrival_s,
                      prompt_tokens=prompt_tokens, max_tokens=target)
        self.engine.dispatch(req, job.priority)
        return job

    def abort(self, job: Job, reason: str = "abort") -> None:
        """Abort a job (client disconnect or server-side abort); frees its KV blocks."""
        if job.done:
            return
        job.error = None if reason == "abort" else reason
        self.engine.abort(job.eid)
        # a request in no engine queue (already dropped) is ended here
        if not job.done and job.eid not in self.engine.all_ids():
            self._end(job, "abort")

    # ---- engine events (EventSink) ------------------------------------------------------
    def post(self, event: EngineEvent) -> None:
        job = self.jobs.get(getattr(event, "request_id", ""))
        if job is None:
            return
        if isinstance(event, FirstToken):
            job.first_token_s = event.t
            job.visible = max(job.visible, 1)
            ttft = event.t - job.arrival_s
            self.counters.ttft.observe(ttft)
            prefill = self.profile.step_time(job.prompt_tokens, 0, job.prompt_tokens)
            self.counters.queue.observe(max(0.0, ttft - prefill))
            job.changed.set()
        elif isinstance(event, Finished):
            job.visible = event.output_tokens
            reason = "stop" if job.natural_stop else "length"
            self._end(job, reason, event.t)
        elif isinstance(event, Aborted):
            if event.retryable:
                self._end(job, "abort", event.t)
            else:
                job.error = event.reason
                self._end(job, "error", event.t)

    def _end(self, job: Job, reason: str, t: float | None = None) -> None:
        if job.done:
            return
        job.finish_reason = reason
        job.finish_s = self.now() if t is None else t
        self.counters.success[reason] = self.counters.success.get(reason, 0) + 1
        e2e = job.finish_s - job.arrival_s
        self.counters.e2e.observe(e2e)
        if reason in ("stop", "length") and job.first_token_s is not None and job.visible > 1:
            self.counters.tpot.observe((job.finish_s - job.first_token_s) / (job.visible - 1))
        self.jobs.pop(job.eid, None)
        job.changed.set()

    # ---- streaming progress -------------------------------------------------------------
    async def _tick_loop(self) -> None:
        """Every ``stream_interval_s`` (wall) while jobs run, publish their token progress."""
        assert self._tick_event is not None
        while True:
            if not self.jobs:
                self._tick_event.clear()
                await self._tick_event.wait()
            await asyncio.sleep(self.cfg.stream_interval_s)
            eng = self.engine
            prog = eng.progress(self.now())
            for eid, n in prog.items():
                job = self.jobs.get(eid)
                if job is not None and job.first_token_s is not None and n > job.visible:
                    job.visible = min(n, job.target)
                    job.changed.set()

    # ---- sleep mode ---------------------------------------------------------------------
    @property
    def is_sleeping(self) -> bool:
        return bool(self.asleep_tags)

    @property
    def sleep_state(self) -> str:
        if not self.asleep_tags or self.sleep_level == 0:
            return "awake"
        return SLEEP_STATES[self.sleep_level]

    async def sleep(self, level: int, mode: Literal["abort", "wait", "keep"]) -> None:
        """``/sleep``: level 0 pauses scheduling; 1 offloads weights; 2 discards them.
        ``mode=abort`` aborts in-flight requests (finish_reason ``abort``); ``wait`` lets
        them finish first; ``keep`` pauses them and resumes them on wake."""
        assert self._sleep_lock is not None
        async with self._sleep_lock:
            if self.asleep_tags:
                return
            eng = self.engine
            if mode == "abort":
                for job in list(self.jobs.values()):
                    self.abort(job)
            elif mode == "wait":
                while not eng.idle:
                    await asyncio.sleep(self.cfg.stream_interval_s)
            eng.paused = True
            while eng.plan is not None:  # the current iteration completes
                await asyncio.sleep(self.cfg.stream_interval_s / 4)
            if level >= 1:
                cost = self.costs.sleep_s if level == 1 else self.swap_consts.sleep_fixed_s
                await asyncio.sleep(self.sched.wall(cost))
                self.asleep_tags = {"weights", "kv_cache"}
                self.weights_reloaded = level == 1
            else:
                self.asleep_tags = {"scheduling"}
            self.sleep_level = level

    async def wake_up(self, tags: list[str] | None) -> None:
        """``/wake_up[?tags=...]``; scheduling resumes once nothing is asleep. The first
        iteration after a weights wake pays the warm-up penalty (the contract's 1-token
        warm-up request absorbs it)."""
        assert self._sleep_lock is not None
        async with self._sleep_lock:
            want = set(tags) if tags else set(self.asleep_tags)
            if not want & self.asleep_tags:
                return
            c = self.swap_consts
            if "weights" in want and "weights" in self.asleep_tags:
                if self.sleep_level == 1:
                    cost = self.costs.wake_l1_s - c.warmup_s
                else:
                    cost = c.level2_fixed_s
                    if not tags:  # a plain wake from level 2 also reloads
                        cost += self._reload_s()
                        self.weights_reloaded = True
                await asyncio.sleep(self.sched.wall(max(0.0, cost)))
                self.engine.warmup_penalty_s = c.warmup_s
            self.asleep_tags -= want
            if not self.asleep_tags:
                self.sleep_level = 0
                self.engine.resume()

    def _reload_s(self) -> float:
        return self.costs.wake_l2_s - self.swap_consts.level2_fixed_s - self.swap_consts.warmup_s

    async def reload_weights(self) -> None:
        """``collective_rpc reload_weights``: the level-2 reload from disk."""
        if self.weights_reloaded:
            return
        await asyncio.sleep(self.sched.wall(max(0.0, self._reload_s())))
        self.weights_reloaded = True
