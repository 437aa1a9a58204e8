"""Gateway overhead: the same emulated vLLM engines measured directly, behind `qlm serve`, and
behind vllm-router (PyPI, policy round_robin), with N concurrent streaming clients.

    python experiments/bench_gateway.py --engines 2 --concurrency 200 --duration 20 --speed 100 \
        --out out/bench_gateway

For each target it reports completed requests, request rate, and TTFT / end-to-end latency
percentiles measured by the client; "added" latency is the target's percentile minus the direct
one (the direct target is one emulator per client connection, round-robin by the client). The
load generator, the emulators and the routers share this machine's cores, so the numbers
include CPU contention between them; the machine is written into the report.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import yaml

MODEL = "m"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def wait_ready(url: str, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    async with httpx.AsyncClient() as c:
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                r = await c.get(url, timeout=1.0)
                if r.status_code == 200:
                    return
            await asyncio.sleep(0.2)
    raise RuntimeError(f"{url} not ready after {timeout_s} s")


def start(cmd: list[str], log: Path) -> subprocess.Popen[bytes]:
    fh = log.open("wb")
    return subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)


async def one_request(
    client: httpx.AsyncClient, base: str, max_tokens: int, headers: dict[str, str]
) -> tuple[float, float] | None:
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hello " * 20}],
            "max_tokens": max_tokens, "stream": True, "stream_options": {"include_usage": True}}
    t0 = time.perf_counter()
    ttft = None
    try:
        async with client.stream("POST", f"{base}/v1/chat/completions", json=body, headers=headers,
                                 timeout=60.0) as resp:
            if resp.status_code != 200:
                await resp.aread()
                return None
            async for line in resp.aiter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                chunk = json.loads(line[6:])
                if ttft is None and chunk.get("choices"):
                    ttft = time.perf_counter() - t0
    except httpx.HTTPError:
        return None
    if ttft is None:
        return None
    return ttft, time.perf_counter() - t0


async def load(bases: list[str], concurrency: int, duration_s: float, max_tokens: int,
               headers: dict[str, str]) -> dict[str, float]:
    """``concurrency`` closed-loop clients for ``duration_s``; returns latency statistics."""
    ttfts: list[float] = []
    e2es: list[float] = []
    failed = 0
    stop = time.perf_counter() + duration_s
    rr = itertools.cycle(bases)
    limits = httpx.Limits(max_connections=concurrency + 10, max_keepalive_connections=concurrency + 10)
    async with httpx.AsyncClient(limits=limits) as client:
        async def worker() -> None:
            nonlocal failed
            while time.perf_counter() < stop:
                res = await one_request(client, next(rr), max_tokens, headers)
                if res is None:
                    failed += 1
                else:
                    ttfts.append(res[0])
                    e2es.append(res[1])

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - t0
    t = np.array(ttfts) * 1000
    e = np.array(e2es) * 1000
    return {
        "completed": len(ttfts), "failed": failed, "rps": len(ttfts) / wall,
        "ttft_p50_ms": float(np.percentile(t, 50)) if len(t) else float("nan"),
        "ttft_p99_ms": float(np.percentile(t, 99)) if len(t) else float("nan"),
        "e2e_p50_ms": float(np.percentile(e, 50)) if len(e) else float("nan"),
        "e2e_p99_ms": float(np.percentile(e, 99)) if len(e) else float("nan"),
    }


async def main_async(args: argparse.Namespace) -> dict[str, object]:
    tmp = Path(tempfile.mkdtemp(prefix="qlm-bench-gw-"))
    procs: list[subprocess.Popen[bytes]] = []
    try:
        emu_urls = []
        for k in range(args.engines):
            port = free_port()
            procs.append(start([sys.executable, "-m", "qlm", "emulate", "--model", MODEL, "--gpu", "A100-80G",
                                "--port", str(port), "--speed", str(args.speed)], tmp / f"emu{k}.log"))
            emu_urls.append(f"http://127.0.0.1:{port}")
        for u in emu_urls:
            await wait_ready(f"{u}/health")
        results: dict[str, dict[str, float]] = {}
        targets: list[tuple[str, list[str]]] = [("direct", emu_urls)]

        gw_port = free_port()
        cfg = {
            "policy": args.policy,
            "runtime": {"launcher": "static", "speed": args.speed, "engines": [
                {"id": f"e{k}", "gpu": "A100-80G", "sleep_mode": False,
                 "models": [{"model": MODEL, "url": u, "profile": "mistral-7b"}]}
                for k, u in enumerate(emu_urls)]},
        }
        cfg_path = tmp / "gateway.yaml"
        cfg_path.write_text(yaml.safe_dump(cfg))
        procs.append(start([sys.executable, "-m", "qlm", "serve", "--config", str(cfg_path), "--port", str(gw_port)],
                           tmp / "gateway.log"))
        await wait_ready(f"http://127.0.0.1:{gw_port}/ready")
        targets.append(("qlm serve", [f"http://127.0.0.1:{gw_port}"]))

        router = shutil.which("vllm-router")
        if router is not None and not args.no_router:
            r_port = free_port()
            procs.append(start([router, "--host", "127.0.0.1", "--port", str(r_port), "--policy", "round_robin",
                                "--worker-urls", *emu_urls], tmp / "router.log"))
            with contextlib.suppress(RuntimeError):
                await wait_ready(f"http://127.0.0.1:{r_port}/health", timeout_s=30)
                targets.append(("vllm-router", [f"http://127.0.0.1:{r_port}"]))
        for name, bases in targets:
            print(f"{name}: {args.concurrency} streams for {args.duration} s ...", flush=True)
            await load(bases, min(args.concurrency, 8), 2.0, args.max_tokens, {})  # warm-up
            results[name] = await load(bases, args.concurrency, args.duration, args.max_tokens, {})
            print(f"  {results[name]}", flush=True)
        return {"results": results, "engines": args.engines, "concurrency": args.concurrency,
                "speed": args.speed, "max_tokens": args.max_tokens, "duration_s": args.duration,
                "router_found": router is not None}
    finally:
        for p in procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, 15)
        for p in procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(timeout=10)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--engines", type=int, default=2)
    ap.add_argument("--concurrency", type=int, default=200)
    ap.add_argument("--duration", type=float, default=20.0)
    ap.add_argument("--speed", type=float, default=100.0, help="emulator time compression")
    ap.add_argument("--max-tokens", type=int, default=16)
    ap.add_argument("--policy", default="qlm")
    ap.add_argument("--no-router", action="store_true")
    ap.add_argument("--out", type=Path, default=Path("out/bench_gateway"))
    args = ap.parse_args()
    doc = asyncio.run(main_async(args))
    res = doc["results"]
    assert isinstance(res, dict)
    base = res["direct"]
    machine = f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    lines = [f"Machine: {machine}; {args.engines} emulated A100 engines at speed {args.speed}, "
             f"{args.concurrency} concurrent streams, max_tokens {args.max_tokens}, {args.duration} s per target.", "",
             "| target | completed | failed | req/s | TTFT p50 ms | TTFT p99 ms | added p50 ms | added p99 ms |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for name, r in res.items():
        lines.append(f"| {name} | {r['completed']} | {r['failed']} | {r['rps']:.1f} | {r['ttft_p50_ms']:.1f} | "
                     f"{r['ttft_p99_ms']:.1f} | {r['ttft_p50_ms'] - base['ttft_p50_ms']:.1f} | "
                     f"{r['ttft_p99_ms'] - base['ttft_p99_ms']:.1f} |")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bench_gateway.json").write_text(json.dumps({"machine": machine, **doc}, indent=2))
    (args.out / "bench_gateway.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
