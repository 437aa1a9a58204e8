"""Launchers: from a :class:`RuntimeConfig` to running engines and a :class:`RuntimeLoop`.

- ``static``: engines the operator already runs; nothing is started.
- ``local``: ``vllm serve`` processes started here (:class:`LocalLauncher`; needs the
  ``vllm`` extra and GPUs). The command lines follow the contract's launch line.
- ``emulated``: :class:`EmulatedLauncher` starts emulators on free loopback ports, in this
  process or as subprocesses, and returns the static config that reaches them.

From the API layer::

    launcher = EmulatedLauncher(default_emulated_engines(), speed=1.0)
    cfg = await launcher.start()
    rt = await start_runtime(cfg, registry.create("edf"), slo_classes)
    ...
    await rt.stop(); await launcher.stop()
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Literal

from qlm.domain.cluster import InstanceSpec, NodeSpec
from qlm.domain.slo import SLOClass
from qlm.errors import ConfigError
from qlm.perf.catalog import Catalog, default_catalog
from qlm.perf.engine_model import EngineProfile, build_profile
from qlm.perf.swap_model import Residency, SwapCosts, swap_costs
from qlm.policies.base import Policy
from qlm.runtime.clock import Clock, RealClock
from qlm.runtime.config import EngineConfig, ModelProcess, NodeConfig, RuntimeConfig
from qlm.runtime.control import ControlPlane
from qlm.runtime.emulator.core import EmulatorConfig
from qlm.runtime.emulator.server import EmulatorServer, free_port
from qlm.runtime.loop import RuntimeLoop
from qlm.runtime.view import InstanceView
from qlm.runtime.vllm.driver import ModelEndpoint, ProcessControl, VLLMInstance


# ---- config -> control-plane views ---------------------------------------------------------
def _profile(proc: ModelProcess, eng: EngineConfig, cat: Catalog, where: str) -> EngineProfile:
    if proc.profile_model not in cat.models:
        raise ConfigError("runtime config", f"{where}.profile",
                          f"unknown model {proc.profile_model!r}; known: {sorted(cat.models)}")
    base = build_profile(proc.profile_model, eng.gpu, eng.tp, cat)
    return replace(base, model=base.model.model_copy(update={"name": proc.model}))


def build_instances(cfg: RuntimeConfig, *, catalog: Catalog | None = None,
                    clock: Clock | None = None, processes: ProcessControl | None = None
                    ) -> dict[str, InstanceView]:
    """Control-plane views with :class:`VLLMInstance` backends (not yet connected).

    Profiles and swap costs come from the catalogue (``profile`` of each model process,
    else its served name); errors name the field (``engines.0.gpu``). ``processes`` (the
    launcher) cold-starts models of engines without sleep mode."""
    cat = catalog or default_catalog()
    clock = clock or RealClock(cfg.speed)
    views: dict[str, InstanceView] = {}
    for i, eng in enumerate(cfg.engines):
        if eng.gpu not in cat.gpus:
            raise ConfigError("runtime config", f"engines.{i}.gpu",
                              f"unknown GPU type {eng.gpu!r}; known: {sorted(cat.gpus)}")
        nc = cfg.node(eng.node)
        node = NodeSpec(name=eng.node, gpu=eng.gpu, num_gpus=max(eng.tp, len(eng.gpus)),
                        cpu_ram_gb=nc.cpu_ram_gb, disk_gbps=nc.disk_gbps)
        names = tuple(m.model for m in eng.models)
        spec = InstanceSpec(id=eng.id, node=eng.node, gpu=eng.gpu, tp=eng.tp, models=names,
                            initial_model=eng.active_model, sleep_mode=eng.sleep_mode)
        profiles: dict[str, EngineProfile] = {}
        costs: dict[str, SwapCosts] = {}
        for j, proc in enumerate(eng.models):
            profiles[proc.model] = _profile(proc, eng, cat, f"engines.{i}.models.{j}")
            costs[proc.model] = swap_costs(cat.model(proc.profile_model), cat.gpu(eng.gpu),
                                           eng.tp, node, cat)
        residency = {
            m: Residency.ACTIVE if m == eng.active_model
            else (Residency(eng.sleep_level) if eng.sleep_mode else Residency.COLD)
            for m in names
        }
        endpoints = [ModelEndpoint(m.model, m.url or "", sleep_level=eng.sleep_level)
                     for m in eng.models]
        backend = VLLMInstance(eng.id, endpoints, eng.active_model, sleep_mode=eng.sleep_mode,
                               priority_scheduling=eng.scheduling_policy == "priority",
                               clock=clock, processes=processes,
                               cold_start_timeout_s=cfg.ready_timeout_s)
        views[eng.id] = InstanceView(spec=spec, node=node, profiles=profiles, swap_costs=costs,
                                     backend=backend, residency=residency,
                                     active_model=eng.active_model)
    return views


async def start_runtime(
    cfg: RuntimeConfig,
    policy: Policy,
    slo_classes: Mapping[str, SLOClass],
    *,
    catalog: Catalog | None = None,
    processes: ProcessControl | None = None,
    keep_ended: int | None = None,
) -> RuntimeLoop:
    """Connect to ``cfg``'s engines (waiting until ready, putting non-initial models to
    sleep), build the control plane (``strict=False``, ``RealClock(cfg.speed)``,
    ``keep_ended`` as in :class:`ControlPlane`) and start the runtime loop. ``processes`` is
    the launcher, for cold starts (engines with several models and no sleep mode). Raises
    ``TimeoutError``/``RuntimeError`` when an engine never gets ready."""
    clock = RealClock(cfg.speed)
    views = build_instances(cfg, catalog=catalog, clock=clock, processes=processes)
    backends = [v.backend for v in views.values() if isinstance(v.backend, VLLMInstance)]
    try:
        await asyncio.gather(*(b.wait_ready(cfg.ready_timeout_s) for b in backends))
    except BaseException:
        for b in backends:
            await b.close()
        raise
    control = ControlPlane(policy, views, dict(slo_classes), clock, strict=False, keep_ended=keep_ended)
    rt = RuntimeLoop(control, health_interval_s=cfg.health_interval_s)
    await rt.start()
    return rt


# ---- local: vllm serve --------------------------------------------------------------------
@dataclass(frozen=True)
class LaunchCommand:
    """One ``vllm serve`` process: argv, extra environment, and its URL."""

    engine_id: str
    model: str
    argv: tuple[str, ...]
    env: dict[str, str]
    url: str


def vllm_serve_command(eng: EngineConfig, proc: ModelProcess, host: str = "127.0.0.1",
                       vllm_bin: str = "vllm") -> LaunchCommand:
    """The contract's launch line for one model process of ``eng``."""
    if proc.port is None:
        raise ValueError(f"engine {eng.id}: model {proc.model} has no port")
    argv = [
        vllm_bin, "serve", proc.path or proc.model,
        "--served-model-name", proc.model,
        "--host", host, "--port", str(proc.port),
        "--tensor-parallel-size", str(eng.tp),
        "--scheduling-policy", eng.scheduling_policy,
        "--enable-request-id-headers", "--enable-server-load-tracking",
        "--enable-prompt-tokens-details", "--enable-per-request-metrics",
    ]
    if eng.sleep_mode:
        argv.append("--enable-sleep-mode")
    argv.extend(proc.extra_args)
    env = {"VLLM_SERVER_DEV_MODE": "1"}
    if eng.gpus:
        env["CUDA_VISIBLE_DEVICES"] = ",".join(str(g) for g in eng.gpus)
    return LaunchCommand(eng.id, proc.model, tuple(argv), env, f"http://{host}:{proc.port}")


class LocalLauncher:
    """Starts and stops ``vllm serve`` processes for a ``launcher: local`` config.

    Per engine, models that start asleep are launched first, one at a time, each put to
    sleep once ready so the next one finds the GPU memory free; the initial model last.
    Engines with several models and no sleep mode run only the active model's process; the
    driver cold-starts another through :meth:`start_model`/:meth:`stop_model` (pass the
    launcher as ``processes`` to :func:`start_runtime`).
    """

    def __init__(self, cfg: RuntimeConfig, vllm_bin: str = "vllm", log_dir: str | None = None
                 ) -> None:
        if cfg.launcher != "local":
            raise ValueError(f"launcher: LocalLauncher needs launcher local, got {cfg.launcher}")
        self.cfg = cfg
        self.vllm_bin = vllm_bin
        self.log_dir = log_dir
        self.procs: dict[tuple[str, str], asyncio.subprocess.Process] = {}

    def commands(self) -> list[LaunchCommand]:
        """Launch commands in start order."""
        out: list[LaunchCommand] = []
        for eng in self.cfg.engines:
            order = sorted(eng.models, key=lambda m: m.model == eng.active_model)
            out.extend(vllm_serve_command(eng, m, self.cfg.host, self.vllm_bin) for m in order)
        return out

    def initial_commands(self) -> list[LaunchCommand]:
        """What :meth:`start` launches: all commands but the cold (not started) models."""
        engines = {e.id: e for e in self.cfg.engines}
        return [c for c in self.commands()
                if not engines[c.engine_id].cold_swaps or c.model == engines[c.engine_id].active_model]

    def static_config(self) -> RuntimeConfig:
        """The config with every model process's URL filled in, as ``launcher: static``
        (``local`` when an engine cold-starts its models: it needs this launcher)."""
        urls = {(c.engine_id, c.model): c.url for c in self.commands()}
        engines = tuple(
            e.model_copy(update={"models": tuple(
                m.model_copy(update={"url": urls[(e.id, m.model)]}) for m in e.models)})
            for e in self.cfg.engines
        )
        kind = "local" if any(e.cold_swaps for e in self.cfg.engines) else "static"
        return self.cfg.model_copy(update={"launcher": kind, "engines": engines})

    async def _spawn(self, c: LaunchCommand) -> asyncio.subprocess.Process:
        out = None
        if self.log_dir:
            os.makedirs(self.log_dir, exist_ok=True)
            out = open(os.path.join(self.log_dir, f"{c.engine_id}-{c.model}.log"), "ab")  # noqa: SIM115
        proc = await asyncio.create_subprocess_exec(
            *c.argv, env={**os.environ, **c.env}, stdout=out, stderr=out)
        self.procs[(c.engine_id, c.model)] = proc
        return proc

    async def start_model(self, instance_id: str, model: str) -> str:
        """Cold start: launch ``model``'s ``vllm serve`` on ``instance_id``'s GPUs; returns its
        URL at once (the driver waits for ``/health``)."""
        c = next((c for c in self.commands() if c.engine_id == instance_id and c.model == model), None)
        if c is None:
            raise RuntimeError(f"engine {instance_id}: no model process {model!r}")
        await self._spawn(c)
        return c.url

    async def stop_model(self, instance_id: str, model: str, timeout_s: float = 60.0) -> None:
        """Stop ``model``'s process on ``instance_id`` (SIGTERM, then SIGKILL)."""
        proc = self.procs.pop((instance_id, model), None)
        if proc is not None:
            await _terminate(proc, timeout_s)

    async def start(self) -> RuntimeConfig:
        """Start the processes (sleeping non-initial ones once ready; cold models are not
        started); returns the config for :func:`start_runtime`."""
        by_engine: dict[str, list[LaunchCommand]] = {}
        for c in self.initial_commands():
            by_engine.setdefault(c.engine_id, []).append(c)
        static = self.static_config()
        engines = {e.id: e for e in self.cfg.engines}
        for eid, cmds in by_engine.items():
            eng = engines[eid]
            for c in cmds:
                await self._spawn(c)
                probe = VLLMInstance(eid, [ModelEndpoint(c.model, c.url, eng.sleep_level)],
                                     c.model, sleep_mode=False)
                try:
                    await probe.wait_ready(self.cfg.ready_timeout_s)
                    if eng.sleep_mode and c.model != eng.active_model:
                        await probe._sleep(probe.endpoints[c.model])
                finally:
                    await probe.close()
        return static

    async def stop(self, timeout_s: float = 30.0) -> None:
        procs = list(self.procs.values())
        self.procs.clear()
        await asyncio.gather(*(_terminate(p, timeout_s) for p in procs))


async def _terminate(proc: asyncio.subprocess.Process, timeout_s: float) -> None:
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            proc.terminate()
    try:
        await asyncio.wait_for(proc.wait(), timeout_s)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()


# ---- emulated -----------------------------------------------------------------------------
@dataclass(frozen=True)
class EmulatedEngineSpec:
    """An emulated instance: one emulator per model (served names), sharing ``tp`` x
    ``gpu``. ``profiles`` maps a served name to the catalogue model giving its timings
    (default: the name itself if it is in the catalogue, else mistral-7b)."""

    id: str
    gpu: str
    models: tuple[str, ...]
    tp: int = 1
    node: str | None = None
    initial_model: str | None = None
    sleep_mode: bool = True
    sleep_level: Literal[1, 2] = 1
    scheduling_policy: Literal["fcfs", "priority"] = "priority"
    profiles: Mapping[str, str] = field(default_factory=dict)

    def profile_of(self, model: str, cat: Catalog) -> str:
        if model in self.profiles:
            return self.profiles[model]
        return model if model in cat.models else "mistral-7b"


def default_emulated_engines() -> list[EmulatedEngineSpec]:
    """What ``qlm serve`` without a config runs: two A100-80G instances, each able to serve
    mistral-7b and llama-3-8b (one awake, the other asleep), and one H100 serving
    qwen2.5-7b."""
    return [
        EmulatedEngineSpec("a100-0", "A100-80G", ("mistral-7b", "llama-3-8b")),
        EmulatedEngineSpec("a100-1", "A100-80G", ("llama-3-8b", "mistral-7b")),
        EmulatedEngineSpec("h100-0", "H100", ("qwen2.5-7b",)),
    ]


class EmulatedLauncher:
    """Starts emulators for ``engines`` on free loopback ports.

    ``subprocess=False`` serves them on the current event loop (cheap, one core);
    ``subprocess=True`` runs ``python -m qlm.runtime.emulator`` processes (parallel, and
    :meth:`kill` is a real process death). ``speed`` compresses time in every emulator and
    is copied into the returned config, so the control plane's clock matches. ``nodes``
    (CPU RAM, disk rate) go into that config too; ``stream_interval_s`` is the emulators'
    chunk period (wall seconds).

    Engines without sleep mode that list several models run only the active model's
    emulator; :meth:`start_model` cold-starts another (refusing connections for the
    model's cold-start time) and :meth:`stop_model` stops one: pass the launcher as
    ``processes`` to :func:`start_runtime`.
    """

    def __init__(self, engines: Sequence[EmulatedEngineSpec], *, speed: float = 1.0,
                 subprocess: bool = False, seed: int = 0, host: str = "127.0.0.1",
                 health_interval_s: float = 1.0, catalog: Catalog | None = None,
                 nodes: Mapping[str, NodeConfig] | None = None,
                 stream_interval_s: float = 0.01) -> None:
        if speed <= 0:
            raise ValueError(f"speed: must be > 0, got {speed}")
        ids = [e.id for e in engines]
        if len(set(ids)) != len(ids):
            raise ValueError(f"engines: duplicate engine id in {ids}")
        self.engines = list(engines)
        self.speed = speed
        self.subprocess = subprocess
        self.seed = seed
        self.host = host
        self.health_interval_s = health_interval_s
        self.catalog = catalog or default_catalog()
        self.nodes = dict(nodes or {})
        self.stream_interval_s = stream_interval_s
        self.servers: dict[tuple[str, str], EmulatorServer] = {}
        self._starting: dict[tuple[str, str], asyncio.Task[None]] = {}
        self._seeds: dict[tuple[str, str], int] = {}
        self.procs: dict[tuple[str, str], asyncio.subprocess.Process] = {}
        self.urls: dict[tuple[str, str], str] = {}

    def _node_of(self, e: EmulatedEngineSpec) -> str:
        return e.node or f"{e.id}-node"

    def _emulator_config(self, e: EmulatedEngineSpec, model: str, k: int,
                         cold_start: bool = False) -> EmulatorConfig:
        node = self.nodes.get(self._node_of(e), NodeConfig())
        return EmulatorConfig(
            served_model=model, gpu=e.gpu, tp=e.tp, profile_model=e.profile_of(model, self.catalog),
            sleep_mode=e.sleep_mode, scheduling_policy=e.scheduling_policy, speed=self.speed,
            seed=self.seed + k, catalog=self.catalog, stream_interval_s=self.stream_interval_s,
            disk_gbps=node.disk_gbps, cold_start=cold_start,
        )

    @staticmethod
    def _cold(e: EmulatedEngineSpec) -> bool:
        return len(e.models) > 1 and not e.sleep_mode

    async def start(self) -> RuntimeConfig:
        """Start the emulators (not the cold models of engines without sleep mode); returns
        the config reaching them (``launcher: static``, or ``emulated`` with cold models)."""
        k = 0
        starts = []
        for e in self.engines:
            active = e.initial_model or e.models[0]
            for m in e.models:
                cfg = self._emulator_config(e, m, k)  # validates gpu/profile early
                self._seeds[(e.id, m)] = k
                k += 1
                if self._cold(e) and m != active:
                    continue
                if self.subprocess:
                    starts.append(self._start_proc(e, m, cfg))
                else:
                    starts.append(self._start_inproc(e, m, cfg))
        await asyncio.gather(*starts)
        return self.config()

    async def start_model(self, instance_id: str, model: str) -> str:
        """Cold start of ``model``'s emulator on ``instance_id``: returns its URL at once; it
        accepts connections after the model's cold-start time (compressed by ``speed``)."""
        e = next((e for e in self.engines if e.id == instance_id), None)
        if e is None or model not in e.models:
            raise RuntimeError(f"engine {instance_id}: no model process {model!r}")
        key = (instance_id, model)
        await self.stop_model(instance_id, model)
        cfg = self._emulator_config(e, model, self._seeds.get(key, 0), cold_start=True)
        if self.subprocess:
            await self._start_proc(e, model, cfg)
        else:
            port = free_port(self.host)
            server = EmulatorServer(cfg, host=self.host, port=port)
            self.servers[key] = server
            self.urls[key] = server.url
            task = asyncio.get_running_loop().create_task(self._serve(server))
            self._starting[key] = task
        return self.urls[key]

    @staticmethod
    async def _serve(server: EmulatorServer) -> None:
        await server.start()

    async def stop_model(self, instance_id: str, model: str) -> None:
        """Stop ``model``'s emulator on ``instance_id`` (frees its slots, drops connections)."""
        key = (instance_id, model)
        task = self._starting.pop(key, None)
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        proc = self.procs.pop(key, None)
        if proc is not None:
            await _terminate(proc, 10.0)
        server = self.servers.pop(key, None)
        if server is not None:
            await server.stop(force=True)
        self.urls.pop(key, None)

    async def _start_inproc(self, e: EmulatedEngineSpec, model: str, cfg: EmulatorConfig) -> None:
        server = EmulatorServer(cfg, host=self.host)
        self.urls[(e.id, model)] = await server.start()
        self.servers[(e.id, model)] = server

    async def _start_proc(self, e: EmulatedEngineSpec, model: str, cfg: EmulatorConfig) -> None:
        port = free_port(self.host)
        argv = [sys.executable, "-m", "qlm.runtime.emulator", "--model", model, "--gpu", cfg.gpu,
                "--tp", str(cfg.tp), "--port", str(port), "--host", self.host,
                "--scheduling-policy", cfg.scheduling_policy, "--speed", repr(cfg.speed),
                "--profile", cfg.profile_model, "--seed", str(cfg.seed),
                "--stream-interval", repr(cfg.stream_interval_s),
                "--disk-gbps", repr(cfg.disk_gbps), "--parent-pid", str(os.getpid())]
        if cfg.sleep_mode:
            argv.append("--sleep-mode")
        if cfg.cold_start:
            argv.append("--cold-start")
        proc = await asyncio.create_subprocess_exec(*argv, stdin=asyncio.subprocess.DEVNULL)
        self.procs[(e.id, model)] = proc
        self.urls[(e.id, model)] = f"http://{self.host}:{port}"

    def config(self) -> RuntimeConfig:
        """The runtime config of the started emulators: ``static``, or ``emulated`` when an
        engine cold-starts its models (not-started models have no URL yet)."""
        engines = []
        for e in self.engines:
            engines.append(EngineConfig(
                id=e.id, node=self._node_of(e), gpu=e.gpu, tp=e.tp,
                models=tuple(ModelProcess(model=m, url=self.urls.get((e.id, m)),
                                          profile=e.profile_of(m, self.catalog))
                             for m in e.models),
                initial_model=e.initial_model, sleep_mode=e.sleep_mode,
                sleep_level=e.sleep_level, scheduling_policy=e.scheduling_policy,
            ))
        kind: Literal["static", "emulated"] = (
            "emulated" if any(self._cold(e) for e in self.engines) else "static")
        return RuntimeConfig(launcher=kind, engines=tuple(engines), speed=self.speed,
                             nodes=dict(self.nodes), health_interval_s=self.health_interval_s,
                             ready_timeout_s=60.0)

    async def kill(self, engine_id: str, model: str | None = None) -> None:
        """Abrupt death of an engine's emulators (all of them, or ``model``'s)."""
        for (eid, m), proc in list(self.procs.items()):
            if eid == engine_id and (model is None or m == model) and proc.returncode is None:
                proc.send_signal(signal.SIGKILL)
                await proc.wait()
        for (eid, m), server in list(self.servers.items()):
            if eid == engine_id and (model is None or m == model):
                await server.stop(force=True)

    async def stop(self) -> None:
        for task in self._starting.values():
            task.cancel()
        for task in self._starting.values():
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._starting.clear()
        procs = list(self.procs.values())
        self.procs.clear()
        await asyncio.gather(*(_terminate(p, 10.0) for p in procs))
        for server in self.servers.values():
            await server.stop(force=True)
        self.servers.clear()

    async def __aenter__(self) -> EmulatedLauncher:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
