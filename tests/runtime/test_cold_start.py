"""Cold-start swaps: an engine without sleep mode that lists two models runs one emulator;
a swap stops it and starts the other through the launcher, reported ``SwapDone(cold=True)``."""

from __future__ import annotations

import asyncio

import pytest

from qlm.domain.request import Request, RequestState
from qlm.domain.slo import DEFAULT_SLO_CLASSES
from qlm.errors import ConfigError
from qlm.perf.swap_model import Residency
from qlm.policies.edf import EDFPolicy
from qlm.runtime.config import parse_runtime_config
from qlm.runtime.launcher import EmulatedEngineSpec, EmulatedLauncher, start_runtime
from qlm.runtime.vllm.driver import OUTPUT_TOKENS, VLLMInstance

SLO = {c.name: c for c in DEFAULT_SLO_CLASSES}
SPEED = 20.0


async def test_cold_swap_starts_the_target_engine_through_the_launcher() -> None:
    spec = EmulatedEngineSpec("a", "A100-80G", ("chat", "code"), sleep_mode=False,
                              profiles={"chat": "mistral-7b", "code": "llama-3-8b"})
    launcher = EmulatedLauncher([spec], speed=SPEED, health_interval_s=0.1)
    cfg = await launcher.start()
    assert cfg.launcher == "emulated" and set(launcher.servers) == {("a", "chat")}
    rt = await start_runtime(cfg, EDFPolicy(), SLO, processes=launcher)
    try:
        inst = rt.control.instances["a"]
        assert inst.residency["code"] is Residency.COLD
        reqs = [Request(f"r{i}", "code", "batch-2", rt.now(), 100, meta={OUTPUT_TOKENS: 10})
                for i in range(3)]
        for r in reqs:
            rt.submit(r, streaming=False)
        await asyncio.wait_for(rt.drain(), timeout=20)
        assert all(r.state is RequestState.FINISHED and r.generated_tokens == 10 for r in reqs)
        backend = inst.backend
        assert isinstance(backend, VLLMInstance)
        [(old, new, dur)] = backend.cold_log
        assert (old, new) == ("chat", "code")
        # the emulator refuses connections for the model's cold-start time (virtual seconds)
        cold_s = inst.swap_costs["code"].cold_s
        assert 0.8 * cold_s <= dur <= cold_s + 10.0, (dur, cold_s)
        assert rt.control.cold_starts == 1
        assert inst.active_model == "code" and inst.residency["chat"] is Residency.COLD
        assert set(launcher.servers) == {("a", "code")}  # the old engine process is gone
    finally:
        await rt.stop()
        await launcher.stop()


async def test_cold_swap_without_a_launcher_reports_the_instance_down() -> None:
    spec = EmulatedEngineSpec("a", "A100-80G", ("chat", "code"), sleep_mode=False,
                              profiles={"chat": "mistral-7b", "code": "llama-3-8b"})
    launcher = EmulatedLauncher([spec], speed=SPEED, health_interval_s=0.1)
    cfg = await launcher.start()
    rt = await start_runtime(cfg, EDFPolicy(), SLO)  # no processes: nobody can start engines
    try:
        rt.submit(Request("r", "code", "batch-2", rt.now(), 100, meta={OUTPUT_TOKENS: 5}))
        inst = rt.control.instances["a"]
        for _ in range(200):
            if inst.state.name == "DOWN":
                break
            await asyncio.sleep(0.01)
        assert inst.state.name == "DOWN"
    finally:
        await rt.stop()
        await launcher.stop()


def test_static_engines_cannot_cold_swap() -> None:
    eng = {"id": "a", "gpu": "A100-80G", "sleep_mode": False,
           "models": [{"model": "m", "url": "http://h:1"}, {"model": "n", "url": "http://h:2"}]}
    with pytest.raises(ConfigError, match="engines.0.sleep_mode"):
        parse_runtime_config({"engines": [eng]})
    assert parse_runtime_config({"launcher": "emulated", "engines": [eng]}).engines[0].cold_swaps
