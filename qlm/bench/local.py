"""Local benchmark targets as subprocesses: emulated engines (``qlm emulate``), the gateway
(``qlm serve --config``, static engines) and ``vllm-router``; used by the experiments
(``experiments/bench_gateway.py``, ``experiments/peer_compare.py``) and the tests.

:class:`LocalProcesses` owns what it starts: each process runs in its own session, logs to
``<log_dir>/<name>.log``, and is stopped (SIGTERM to its group, SIGKILL after a grace
period) when the context exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx
import yaml

from qlm.runtime.emulator.server import free_port

__all__ = ["LocalProcesses", "emulator_command", "free_port", "router_path", "static_gateway_config",
           "wait_ready"]


async def wait_ready(url: str, timeout_s: float = 60.0, proc: subprocess.Popen[bytes] | None = None) -> None:
    """Poll ``url`` until it answers 200. ``RuntimeError`` after ``timeout_s`` or when
    ``proc`` exits first."""
    deadline = time.monotonic() + timeout_s
    async with httpx.AsyncClient(trust_env=False) as c:
        while time.monotonic() < deadline:
            if proc is not None and proc.poll() is not None:
                raise RuntimeError(f"{url}: the process exited with code {proc.returncode} before it was ready")
            with contextlib.suppress(httpx.HTTPError):
                r = await c.get(url, timeout=1.0)
                if r.status_code == 200:
                    return
            await asyncio.sleep(0.2)
    raise RuntimeError(f"{url} not ready after {timeout_s:g} s")


def emulator_command(model: str, port: int, *, gpu: str = "A100-80G", speed: float = 1.0,
                     scheduling_policy: str = "fcfs", profile: str | None = None, seed: int = 0) -> list[str]:
    """``python -m qlm emulate ...`` on 127.0.0.1:``port``."""
    cmd = [sys.executable, "-m", "qlm", "emulate", "--model", model, "--gpu", gpu, "--port", str(port),
           "--speed", f"{speed:g}", "--scheduling-policy", scheduling_policy, "--seed", str(seed)]
    if profile is not None:
        cmd += ["--profile", profile]
    return cmd


def static_gateway_config(urls: Sequence[str], model: str, *, gpu: str = "A100-80G", speed: float = 1.0,
                          policy: str = "qlm", profile: str | None = None,
                          slo_classes: Iterable[dict[str, Any]] | None = None,
                          scheduling_policy: str = "priority",
                          expected_traffic: dict[str, Any] | None = None) -> dict[str, Any]:
    """A ``qlm serve --config`` mapping: one static engine per URL serving ``model`` (timings
    of ``profile``, default the model), no sleep mode, the runtime clock at ``speed``;
    ``expected_traffic`` as in the gateway config (e.g. :func:`traffic_priors`)."""
    cfg: dict[str, Any] = {
        "policy": policy,
        "runtime": {"launcher": "static", "speed": speed, "engines": [
            {"id": f"e{k}", "gpu": gpu, "sleep_mode": False, "scheduling_policy": scheduling_policy,
             "models": [{"model": model, "url": u, "profile": profile or model}]}
            for k, u in enumerate(urls)]},
    }
    if expected_traffic:
        cfg["expected_traffic"] = expected_traffic
    if slo_classes is not None:
        classes = list(slo_classes)
        cfg["slo_classes"] = classes
        cfg["default_class"] = classes[0]["name"]
    return cfg


def traffic_priors(scenario: Any, speed: float = 1.0) -> dict[str, dict[str, dict[str, float]]]:
    """A scenario's declared traffic as the gateway's ``expected_traffic``, the priors the
    simulator gives the ``qlm`` policy (``QLMPolicy.configure``): per model and class the
    declared output mean/std and mean prompt, and the summed rate of its steady streams in
    requests per wall second when the workload is sent ``speed`` times faster."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for (model, cls), t in scenario.workload.declared_traffic().items():
        prior = {"output_mean": t.output_mean, "output_std": t.output_std, "prompt_mean": t.prompt_mean}
        if t.rate is not None:
            prior["rate"] = t.rate * speed
        out.setdefault(model, {})[cls] = prior
    return out


def router_path() -> str | None:
    """The ``vllm-router`` executable (``pip install vllm-router``), or None."""
    return shutil.which("vllm-router")


class LocalProcesses:
    """Subprocesses started by :meth:`start` and stopped on exit (see the module docstring)."""

    def __init__(self, log_dir: Path, grace_s: float = 10.0) -> None:
        self.log_dir = log_dir
        self.grace_s = grace_s
        self.procs: list[subprocess.Popen[bytes]] = []
        log_dir.mkdir(parents=True, exist_ok=True)

    def __enter__(self) -> LocalProcesses:
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()

    def start(self, name: str, cmd: list[str]) -> subprocess.Popen[bytes]:
        with (self.log_dir / f"{name}.log").open("wb") as fh:
            p = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
        self.procs.append(p)
        return p

    def stop(self) -> None:
        """SIGTERM every process group started here, then SIGKILL what is left after the grace period."""
        for p in self.procs:
            if p.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGTERM)
        deadline = time.monotonic() + self.grace_s
        for p in self.procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
            if p.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGKILL)
                p.wait(timeout=5)
        self.procs.clear()

    async def emulators(self, n: int, model: str, *, prefix: str = "emu", **kw: Any) -> list[str]:
        """Start ``n`` emulators (keywords: :func:`emulator_command`); their base URLs once healthy."""
        started = []
        for k in range(n):
            port = free_port()
            proc = self.start(f"{prefix}{k}", emulator_command(model, port, **kw))
            started.append((f"http://127.0.0.1:{port}", proc))
        for url, p in started:
            await wait_ready(f"{url}/health", proc=p)
        return [u for u, _ in started]

    async def gateway(self, config: dict[str, Any], name: str = "gateway") -> str:
        """``qlm serve --config`` with ``config`` (written next to the logs); its base URL once ready."""
        path = self.log_dir / f"{name}.yaml"
        path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
        port = free_port()
        p = self.start(name, [sys.executable, "-m", "qlm", "serve", "--config", str(path), "--port", str(port)])
        url = f"http://127.0.0.1:{port}"
        await wait_ready(f"{url}/ready", proc=p)
        return url

    async def router(self, worker_urls: Sequence[str], *, policy: str = "round_robin", name: str = "router",
                     extra_args: Sequence[str] = ()) -> str:
        """``vllm-router --policy <policy> --worker-urls ...``; its base URL once healthy.
        Its Prometheus exporter gets a free port too (its default port is fixed, so two
        routers on one machine would collide). ``RuntimeError`` when it is not installed."""
        exe = router_path()
        if exe is None:
            raise RuntimeError("vllm-router is not installed (pip install vllm-router)")
        port = free_port()
        p = self.start(name, [exe, "--host", "127.0.0.1", "--port", str(port), "--policy", policy,
                              "--prometheus-host", "127.0.0.1", "--prometheus-port", str(free_port()),
                              "--worker-urls", *worker_urls, *extra_args])
        url = f"http://127.0.0.1:{port}"
        await wait_ready(f"{url}/health", timeout_s=30, proc=p)
        return url
