"""``qlm emulate``: one emulated ``vllm serve`` process."""

from __future__ import annotations


def emulate_command(
    model: str,
    gpu: str = "A100-80G",
    tp: int = 1,
    port: int = 8000,
    host: str = "127.0.0.1",
    sleep_mode: bool = False,
    scheduling_policy: str = "fcfs",
    speed: float = 1.0,
    profile: str | None = None,
    seed: int = 0,
    *,
    stream_interval_s: float = 0.01,
    cold_start: bool = False,
    disk_gbps: float = 2.0,
) -> None:
    """Serve the vLLM HTTP contract for ``model`` (served name) with the timings of
    ``profile`` (catalogue model, default mistral-7b) on ``tp`` x ``gpu``; blocks until
    interrupted. Invalid options end with a one-line error and exit status 2."""
    from qlm.cli import fail
    from qlm.runtime.emulator.core import EmulatorConfig
    from qlm.runtime.emulator.server import run_emulator

    if not 0 < port < 65536:
        fail(f"--port: must be in 1..65535 (got {port})")
    try:
        cfg = EmulatorConfig(
            served_model=model, gpu=gpu, tp=tp, profile_model=profile or "mistral-7b",
            sleep_mode=sleep_mode, scheduling_policy=scheduling_policy,  # type: ignore[arg-type]
            speed=speed, seed=seed, stream_interval_s=stream_interval_s, cold_start=cold_start,
            disk_gbps=disk_gbps,
        )
    except ValueError as exc:
        fail(f"--{str(exc).replace('_', '-')}")
        return
    run_emulator(cfg, host=host, port=port)
