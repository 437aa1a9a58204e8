"""The gateway core: starts engines and the runtime, admits requests, answers visibility queries.

HTTP-free (``qlm.api.app`` is the FastAPI surface over it). Contract:

- :meth:`Gateway.start` brings up the engines (the embedded emulated cluster when the config
  has no ``runtime``), the policy and the :class:`~qlm.runtime.loop.RuntimeLoop`;
  :meth:`Gateway.stop` tears them down.
- :meth:`Gateway.admit` submits one request in its SLO class and applies the class's
  admission rule to the estimate the policy made at admission (``meta["p_meet"]``,
  ``meta["pred_wait_s"]``): accept, reject (:class:`APIError` 429 with ``Retry-After``) or
  downgrade (the request is withdrawn and re-admitted in the target class, under a new
  internal id; the public id stays). A policy without an estimate accepts.
- :meth:`Gateway.request_info` is the state, queue position and current estimated wait.
- Batch API (when ``config.batch`` names a data dir or database): :meth:`Gateway.start` opens
  the :class:`~qlm.api.batch.BatchStore`; :meth:`Gateway.start_batches` runs a
  :class:`~qlm.api.batch.BatchRunner` whose ``submit`` (given by the HTTP layer, which frames
  responses) enqueues each batch line into the global queue, non-streaming, in the SLO class
  :meth:`GatewayConfig.batch_class` maps the completion window to, bypassing admission rules
  (a batch request waits rather than being rejected or downgraded).

Estimates are reported in wall seconds (control-plane seconds divided by the clock speed).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from qlm.api.batch import BatchRunner, BatchStore, SubmitFn
from qlm.api.batch.metrics import BatchCollector
from qlm.api.config import GatewayConfig
from qlm.api.errors import APIError
from qlm.api.metrics import GatewayMetrics, LoopMonitor
from qlm.domain.request import Request, RequestState
from qlm.policies import registry
from qlm.runtime.control import ControlListener
from qlm.runtime.events import EngineEvent, InstanceDown
from qlm.runtime.launcher import (
    EmulatedEngineSpec,
    EmulatedLauncher,
    LocalLauncher,
    default_emulated_engines,
    start_runtime,
)
from qlm.runtime.loop import RuntimeLoop
from qlm.runtime.view import InstanceState
from qlm.runtime.vllm.stream import RequestStream

log = logging.getLogger("qlm.api")

__all__ = ["NO_ENGINE", "Admitted", "Gateway"]

NO_ENGINE = "no engine"
"""Prefix of the failure reason of requests that no live engine can serve."""

_MAX_TRACKED = 100_000


@dataclass(slots=True)
class Admitted:
    """An admitted request: what the HTTP layer streams and reports in headers."""

    public_id: str
    request: Request
    stream: RequestStream
    slo_class: str
    requested_class: str
    est_wait_s: float | None
    p_meet: float | None


class _FailWhenNoEngine(ControlListener):
    """When an engine goes down and no live engine can serve a model any more, the queued
    requests of that model fail at once (HTTP 503, code ``no_engine``) instead of waiting with
    no end in sight; batch lines are retried by the batch runner, so none is lost."""

    def __init__(self, rt: RuntimeLoop) -> None:
        self.rt = rt

    def on_event(self, event: EngineEvent) -> None:
        if not isinstance(event, InstanceDown):
            return
        control = self.rt.control
        live = {m for i in control.instances.values() if i.state is not InstanceState.DOWN for m in i.profiles}
        doomed = [r.id for r in control.queue.values() if r.model not in live]
        if doomed:  # after the control plane finished handling this event
            asyncio.get_running_loop().call_soon(self._fail, doomed)

    def _fail(self, ids: list[str]) -> None:
        for rid in ids:
            self.rt.cancel(rid, f"{NO_ENGINE}: every engine able to serve its model is down")


class Gateway:
    """Engines + runtime + admission for one :class:`GatewayConfig`.

    ``emulated_engines`` replaces ``default_emulated_engines()`` for the embedded cluster
    (tests, benchmarks)."""

    def __init__(self, config: GatewayConfig, *, emulated_engines: list[EmulatedEngineSpec] | None = None
                 ) -> None:
        self.config = config
        self.emulated_engines = emulated_engines
        self.metrics = GatewayMetrics()
        self.monitor = LoopMonitor(self.metrics.registry)
        self.launcher: EmulatedLauncher | LocalLauncher | None = None
        self.rt: RuntimeLoop | None = None
        self.ids: OrderedDict[str, str] = OrderedDict()  # public id -> current internal id
        self.speed = 1.0
        self.batch_store: BatchStore | None = None
        self.batch_runner: BatchRunner | None = None
        self._batch_task: asyncio.Task[None] | None = None
        self._batch_collector: BatchCollector | None = None

    # ---- lifecycle ----------------------------------------------------------------------
    async def start(self) -> None:
        """Start engines (per the config) and the runtime; returns once they are ready. A
        no-op when already started (``qlm serve`` starts it before the HTTP server)."""
        if self.rt is not None:
            return
        cfg = self.config
        rc = cfg.runtime
        if rc is None:
            self.launcher = EmulatedLauncher(self.emulated_engines or default_emulated_engines(),
                                             speed=cfg.emulated.speed, seed=cfg.emulated.seed,
                                             subprocess=cfg.emulated.subprocess)
            rcfg = await self.launcher.start()
        elif rc.launcher == "emulated":
            specs = [EmulatedEngineSpec(
                id=e.id, gpu=e.gpu, models=tuple(m.model for m in e.models), tp=e.tp, node=e.node,
                initial_model=e.initial_model, sleep_mode=e.sleep_mode, sleep_level=e.sleep_level,
                scheduling_policy=e.scheduling_policy,
                profiles={m.model: m.profile for m in e.models if m.profile is not None},
            ) for e in rc.engines]
            self.launcher = EmulatedLauncher(specs, speed=rc.speed, seed=cfg.emulated.seed, host=rc.host,
                                             health_interval_s=rc.health_interval_s,
                                             subprocess=cfg.emulated.subprocess)
            rcfg = await self.launcher.start()
        elif rc.launcher == "local":
            self.launcher = LocalLauncher(rc)
            rcfg = await self.launcher.start()
        else:
            rcfg = rc
        self.speed = rcfg.speed
        policy = registry.create(cfg.policy, **cfg.policy_params)
        try:
            self._expected_traffic(policy, rcfg)
            self.rt = await start_runtime(rcfg, policy, cfg.classes, keep_ended=cfg.limits.ended_requests_kept)
        except BaseException:
            await self._stop_launcher()
            raise
        self.metrics.attach(self.rt.control)
        self.monitor.start()
        self.rt.control.listeners.append(_FailWhenNoEngine(self.rt))
        if cfg.batch.enabled:
            try:
                self.batch_store = await asyncio.to_thread(BatchStore(cfg.batch.store_config()).open)
            except BaseException:
                await self.stop()
                raise
            self._batch_collector = BatchCollector(self.batch_store)
            self.metrics.registry.register(self._batch_collector)

    def _expected_traffic(self, policy: Any, rcfg: Any) -> None:
        """Give the policy's estimator the configured priors (rates per control-plane second)."""
        traffic = self.config.expected_traffic
        if not traffic:
            return
        from qlm.estimator import LengthPrior

        est: Any = getattr(policy, "estimator", None)
        if not callable(getattr(est, "set_traffic_prior", None)):
            raise ValueError(f"expected_traffic: policy {self.config.policy!r} has no estimator to use it")
        served = {m.model for e in rcfg.engines for m in e.models}
        for model, by_class in sorted(traffic.items()):
            if model not in served:
                raise ValueError(f"expected_traffic.{model}: no engine serves it; served: {sorted(served)}")
            for cls, p in sorted(by_class.items()):
                output = None if p.output_mean is None or p.output_std is None else LengthPrior(
                    p.output_mean, p.output_std)
                est.set_traffic_prior(model, cls, rate=None if p.rate is None else p.rate / self.speed,
                                      output=output, prompt_mean=p.prompt_mean)

    def start_batches(self, submit: SubmitFn) -> None:
        """Run the batch runner (every accepted batch resumes); a no-op when the Batch API is off."""
        if self.batch_store is None or self._batch_task is not None:
            return
        b = self.config.batch
        self.batch_runner = BatchRunner(self.batch_store, submit, slo_class_for=self.batch_class,
                                        max_concurrency=b.max_concurrency, poll_interval_s=b.poll_interval_s)
        self._batch_task = asyncio.create_task(self.batch_runner.run(), name="qlm-batch-runner")

    def batch_class(self, window_s: float) -> str:
        """The SLO class of a batch with this completion window (wall seconds)."""
        return self.config.batch_class(window_s, self.speed)

    async def stop(self) -> None:
        await self.monitor.stop()
        if self.batch_runner is not None and self._batch_task is not None:
            self.batch_runner.request_stop()  # in-flight batch requests are cancelled and stay pending
            with contextlib.suppress(Exception):
                await self._batch_task
            self.batch_runner = None
            self._batch_task = None
        if self.batch_store is not None:
            if self._batch_collector is not None:
                self.metrics.registry.unregister(self._batch_collector)
                self._batch_collector = None
            self.batch_store.close()
            self.batch_store = None
        if self.rt is not None:
            for rid, r in list(self.rt.control.requests.items()):
                if not r.state.terminal:
                    self.rt.cancel(rid, "gateway shutdown")
            await self.rt.stop()
            self.rt = None
        await self._stop_launcher()

    async def _stop_launcher(self) -> None:
        if self.launcher is not None:
            await self.launcher.stop()
            self.launcher = None

    @property
    def runtime(self) -> RuntimeLoop:
        if self.rt is None:
            raise APIError(503, "the gateway is not running", type="service_unavailable")
        return self.rt

    # ---- models -------------------------------------------------------------------------
    def models(self) -> dict[str, int]:
        """Every model some engine can serve (resident or swappable) -> its context length."""
        out: dict[str, int] = {}
        for inst in self.runtime.control.instances.values():
            for name, prof in inst.profiles.items():
                out[name] = min(out.get(name, prof.model.max_model_len), prof.model.max_model_len)
        return dict(sorted(out.items()))

    def check_model(self, model: str, prompt: int, max_tokens: int | None, param: str) -> None:
        """404 for an unknown model, 400 when the prompt (plus ``max_tokens``) exceeds its
        context, 503 when every engine able to serve it is down."""
        ctx = self.models().get(model)
        if ctx is None:
            raise APIError(404, f"The model `{model}` does not exist.", param="model", code="model_not_found")
        if prompt >= ctx:
            raise APIError(400, f"This model's maximum context length is {ctx} tokens. However, your request "
                           f"has {prompt} input tokens.", param="messages", code="context_length_exceeded")
        if max_tokens is not None and prompt + max_tokens > ctx:
            raise APIError(400, f"'{param}' is too large: {max_tokens}. This model's maximum context length is "
                           f"{ctx} tokens and your request has {prompt} input tokens ({max_tokens} > {ctx} - "
                           f"{prompt}).", param=param, code="context_length_exceeded")
        insts = [i for i in self.runtime.control.instances.values() if model in i.profiles]
        if all(i.state is InstanceState.DOWN for i in insts):
            raise APIError(503, f"no engine can serve `{model}` now", type="service_unavailable",
                           code="no_engine")

    def resolve_class(self, body_class: str | None, header_class: str | None, service_tier: str | None) -> str:
        """Body ``slo_class``, else the ``X-QLM-SLO-Class`` header, else ``service_tier``'s
        mapping, else the default class. 400 for an unknown class or tier."""
        known = self.config.classes
        for value, param in ((body_class, "slo_class"), (header_class, "X-QLM-SLO-Class")):
            if value is not None:
                if value not in known:
                    raise APIError(400, f"unknown SLO class {value!r}; known: {', '.join(known)}",
                                   param=param, code="unknown_slo_class")
                return value
        if service_tier is not None:
            tiers = self.config.tiers()
            if service_tier not in tiers:
                raise APIError(400, f"unknown service_tier {service_tier!r}; known: {', '.join(sorted(tiers))}",
                               param="service_tier")
            return tiers[service_tier]
        return self.config.default

    # ---- admission ----------------------------------------------------------------------
    def admit(self, model: str, body: dict[str, Any], endpoint: str, prompt: int, max_tokens: int | None,
              slo_class: str, streaming: bool, *, apply_rule: bool = True,
              meta: dict[str, Any] | None = None) -> Admitted:
        """Submit and apply the admission rule of the class (see the module docstring);
        ``apply_rule=False`` always accepts (batch requests). ``meta`` is added to the request's."""
        rt = self.runtime
        prefix = "chatcmpl" if endpoint == "chat" else "cmpl"
        public = f"{prefix}-{uuid.uuid4().hex}"
        cls = slo_class
        visited: set[str] = set()
        attempt = 0
        while True:
            internal = public if attempt == 0 else f"{public}~{attempt}"
            req = Request(internal, model, cls, rt.now(), prompt, max_tokens,
                          meta={"body": body, "endpoint": endpoint, **(meta or {})})
            stream = rt.submit(req, streaming=streaming)
            self._track(public, internal)
            p = req.meta.get("p_meet")
            w = req.meta.get("pred_wait_s")
            p_meet = float(p) if isinstance(p, int | float) else None
            wait = float(w) / self.speed if isinstance(w, int | float) and math.isfinite(w) else None
            rule = self.config.rule(cls)
            missed = p_meet is not None and p_meet < rule.min_probability and not req.state.terminal
            looped = rule.target is not None and rule.target in visited
            if not apply_rule or not missed or rule.kind == "accept" or looped:
                return Admitted(public, req, stream, cls, slo_class, wait, p_meet)
            if rule.kind == "reject":
                rt.cancel(internal, "rejected by admission")
                self.metrics.requests.labels(model, cls, "rejected").inc()
                ttft = self.config.classes[cls].ttft_s / self.speed
                retry = max(1, math.ceil((wait or 0.0) - ttft))
                raise APIError(429, f"SLO class {cls!r} is overloaded: estimated wait "
                               f"{wait if wait is not None else float('nan'):.1f} s, P(meet {ttft:g} s TTFT) = "
                               f"{p_meet:.2f}", code="slo_overloaded",
                               headers={"Retry-After": str(retry), "x-qlm-request-id": public,
                                        "x-qlm-slo-class": cls})
            rt.cancel(internal, f"downgraded to {rule.target}")
            self.metrics.requests.labels(model, cls, "downgraded").inc()
            visited.add(cls)
            assert rule.target is not None
            cls = rule.target
            attempt += 1

    def _track(self, public: str, internal: str) -> None:
        self.ids[public] = internal
        self.ids.move_to_end(public)
        while len(self.ids) > _MAX_TRACKED:
            self.ids.popitem(last=False)

    def outcome(self, adm: Admitted, outcome: str) -> None:
        self.metrics.requests.labels(adm.request.model, adm.slo_class, outcome).inc()

    def cancel(self, adm: Admitted, reason: str = "client disconnected") -> None:
        if not adm.request.state.terminal:
            self.runtime.cancel(adm.request.id, reason)

    # ---- visibility ---------------------------------------------------------------------
    def request_info(self, public_id: str) -> dict[str, Any]:
        """State, SLO class, queue position (0 = next) and current estimated wait (wall s)."""
        rt = self.runtime
        internal = self.ids.get(public_id)
        r = rt.control.requests.get(internal) if internal is not None else None
        if r is None:
            raise APIError(404, f"unknown request {public_id!r}", param="id", code="request_not_found")
        now = rt.now()
        info: dict[str, Any] = {
            "id": public_id, "object": "qlm.request", "model": r.model, "slo_class": r.slo_class,
            "state": r.state.name.lower(), "instance": r.instance, "queue_position": None,
            "estimated_wait_s": None, "age_s": (now - r.arrival_s) / self.speed,
            "ttft_s": None if r.ttft_s is None else r.ttft_s / self.speed,
            "generated_tokens": r.generated_tokens, "finish_reason": r.finish_reason,
        }
        if r.state is RequestState.QUEUED:
            info.update(self._position(r, now))
        return info

    def _position(self, r: Request, now: float) -> dict[str, Any]:
        control = self.runtime.control
        policy: Any = control.policy
        vqueues = getattr(policy, "vqueues", None)
        if isinstance(vqueues, dict) and hasattr(policy, "flat_queue"):
            for inst_id in sorted(vqueues):
                q = policy.flat_queue(inst_id, upto=r)
                if q and q[-1] is r:
                    out: dict[str, Any] = {"queue_position": len(q) - 1, "planned_instance": inst_id}
                    est = getattr(policy, "estimator", None)
                    if est is not None:
                        try:
                            ws = est.wait_at(control.instances[inst_id], q, len(q) - 1, now)
                            out["estimated_wait_s"] = float(ws.mean) / self.speed
                            out["slo_probability"] = float(ws.p_within(r.ttft_deadline_s - now))
                        except Exception:  # an estimate is best effort, never an error
                            log.exception("estimate for %s failed", r.id)
                    return out
        order = sorted(control.queue.values(), key=lambda q: (q.ttft_deadline_s, q.arrival_s, q.id))
        return {"queue_position": next((i for i, q in enumerate(order) if q is r), None)}

    def state(self) -> dict[str, Any]:
        """``/admin/state``: virtual queues, groups, engines, the last plan, counters."""
        control = self.runtime.control
        policy: Any = control.policy
        groups = []
        table = getattr(policy, "groups", None)
        for g in getattr(table, "groups", {}).values():
            queued = sum(1 for q in g.requests if q.state is RequestState.QUEUED)
            groups.append({"id": g.id, "model": g.model, "slo_class": g.slo_class, "size": len(g),
                           "queued": queued, "sealed": g.full, "instance": getattr(policy, "assigned", {}).get(g.id)})
        engines = [{
            "id": i.id, "state": i.state.name.lower(), "gpu": i.spec.gpu, "tp": i.spec.tp,
            "active_model": i.active_model, "pending_model": i.pending_model, "models": sorted(i.profiles),
            "residency": {m: res.name.lower() for m, res in sorted(i.residency.items())},
            "outstanding": sorted(i.outstanding),
        } for i in sorted(control.instances.values(), key=lambda i: i.id)]
        planner = getattr(policy, "planner", None)
        last: Any = getattr(planner, "last_plan", None)
        weights: Any = getattr(planner, "weights", None)
        return {
            "policy": getattr(policy, "name", type(policy).__name__),
            "planner": getattr(planner, "name", None),
            "queue_depth": len(control.queue),
            "virtual_queues": {k: list(v) for k, v in sorted(getattr(policy, "vqueues", {}).items())},
            "groups": sorted(groups, key=lambda g: g["id"]),
            "engines": engines,
            "last_plan": last.model_dump(mode="json") if hasattr(last, "model_dump") else None,
            "weights": weights.model_dump(mode="json") if hasattr(weights, "model_dump") else None,
            "counters": {"swaps": control.swaps, "evictions": control.evictions, "rejections": control.rejections,
                         "replans": getattr(policy, "replans", None)},
        }

    def set_weights(self, raw: Any) -> dict[str, Any]:
        """Validate ``OperatorWeights`` and hand them to the planner (used from its next
        epoch). 400 for invalid weights; 409 when the policy's planner takes no weights."""
        from pydantic import ValidationError

        from qlm.errors import pydantic_error_line
        from qlm.solver.problem import OperatorWeights

        planner = getattr(self.runtime.control.policy, "planner", None)
        if planner is None or not hasattr(planner, "set_weights"):
            raise APIError(409, f"policy {self.config.policy!r} has no planner with operator weights",
                           code="no_weights")
        try:
            weights = OperatorWeights.model_validate(raw)
        except ValidationError as exc:
            err = pydantic_error_line("weights", exc)
            raise APIError(400, f"{err.field}: {err.reason}" if err.field else err.reason,
                           param=err.field or None) from None
        unknown = sorted(set(weights.class_importance) - set(self.config.classes))
        if unknown:
            raise APIError(400, f"class_importance: unknown SLO classes {unknown}", param="class_importance")
        planner.set_weights(weights)
        return weights.model_dump(mode="json")
