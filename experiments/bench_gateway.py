"""Gateway overhead: the same emulated vLLM engines measured directly, behind `qlm serve` (one
per ``--policies``: ``fcfs`` measures the relay alone, ``qlm`` adds its scheduling decisions),
and behind vllm-router (PyPI, policy round_robin), in two modes.

    python experiments/bench_gateway.py --out out/bench_gateway

- **latency** (open loop): requests arrive at a constant ``--rate`` for ``--duration`` seconds;
  each streams ``--latency-max-tokens`` tokens from emulators running at ``--latency-speed``,
  so about ``--concurrency`` streams are open at once (Little's law: rate x stream duration;
  the measured mean is reported). The arrival schedule is the same for every target, and the
  machine is not saturated, so target minus direct is the latency the hop adds.
- **throughput** (closed loop): ``--concurrency`` clients send back-to-back short requests
  (``--max-tokens``) to emulators at ``--speed``: the sustained request rate of each target
  when the machine's cores are the bottleneck (the load generator, the emulators and the
  router share them; in this mode latency is mostly queueing for CPU).

"added" = the target's percentile minus the direct one. The client uses aiohttp; TTFT is the
time to the first chunk with generated text. "cores" is the target process's CPU time over the
measured window divided by the window (Linux: /proc); "CPU us/token" divides that CPU time by
the tokens relayed (latency mode), all per-request work included; "load generator cores" is this
script's own CPU over the window (it shares the cores with the targets and the emulators, so it
runs on uvloop and parses a stream's lines only until its first token). The machine is written
into the report.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import uvloop
from prometheus_client.parser import text_string_to_metric_families

from qlm.bench.local import LocalProcesses, router_path, static_gateway_config

MODEL = "m"


async def one_request(session: aiohttp.ClientSession, base: str, max_tokens: int) -> tuple[float, float] | None:
    """One streamed chat completion: (TTFT, end-to-end) in seconds, or None when it failed."""
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hello " * 20}], "max_tokens": max_tokens,
            "ignore_eos": True, "stream": True, "stream_options": {"include_usage": True}}
    t0 = time.perf_counter()
    ttft = None
    done = False
    rest = b""
    try:
        async with session.post(f"{base}/v1/chat/completions", json=body) as resp:
            if resp.status != 200:
                await resp.read()
                return None
            # whatever each network read brings: lines are parsed only until the first token,
            # then only the end is looked for (the load generator shares the cores it measures)
            async for data in resp.content.iter_any():
                if ttft is None:
                    *lines, rest = (rest + data).split(b"\n")
                    for line in lines:
                        if line.startswith(b"data: {") and ttft is None:
                            choices = json.loads(line[6:]).get("choices") or []
                            if choices and (choices[0].get("delta") or {}).get("content"):
                                ttft = time.perf_counter() - t0
                        elif line.startswith(b"data: [DONE]"):
                            done = True
                else:
                    rest = (rest + data)[-64:]
                    done = done or b"data: [DONE]" in rest
    except (TimeoutError, aiohttp.ClientError):
        return None
    if ttft is None or not done:
        return None
    return ttft, time.perf_counter() - t0


async def process_health(base: str) -> dict[str, float]:
    """The gateway's ``qlm_event_loop_lag_seconds`` and ``qlm_gc_pause_seconds`` histograms,
    flattened: ``lag_count``, ``lag_over_5ms``, ``lag_over_10ms``, ``gc<gen>_count``,
    ``gc_over_5ms``, and the planner's ``solver_solves`` and ``solver_seconds`` (cumulative
    since start: diff two snapshots)."""
    async with aiohttp.ClientSession() as session, session.get(f"{base}/metrics") as resp:
        text = await resp.text()
    count: dict[str, float] = {}  # series ("lag", "gc0", ...) -> observations
    within: dict[tuple[str, str], float] = {}  # (series, le) -> observations at most le
    out: dict[str, float] = {}
    for fam in text_string_to_metric_families(text):
        if fam.name in ("qlm_solver_solves", "qlm_solver_seconds"):
            out[fam.name.removeprefix("qlm_")] = sum(x.value for x in fam.samples)
        elif fam.name in ("qlm_event_loop_lag_seconds", "qlm_gc_pause_seconds"):
            for sample in fam.samples:
                series = "lag" if fam.name == "qlm_event_loop_lag_seconds" else f"gc{sample.labels['generation']}"
                if sample.name.endswith("_count"):
                    count[series] = sample.value
                elif sample.name.endswith("_bucket"):
                    within[(series, sample.labels["le"])] = sample.value
    lag = count.get("lag", 0.0)
    out.update({"lag_count": lag, "lag_over_5ms": lag - within.get(("lag", "0.005"), 0.0),
                "lag_over_10ms": lag - within.get(("lag", "0.01"), 0.0)})
    gcs = [k for k in count if k.startswith("gc")]
    out.update({f"{k}_count": count[k] for k in gcs})
    out["gc_over_5ms"] = sum(count[k] - within.get((k, "0.005"), 0.0) for k in gcs)
    return out


def cpu_seconds(pid: int | None) -> float | None:
    """User + system CPU seconds of process ``pid`` so far (Linux /proc), or None."""
    if pid is None:
        return None
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _session(concurrency: int) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency + 50),
                                 timeout=aiohttp.ClientTimeout(total=120.0))


class _Tally:
    """Latencies of finished requests and the count of failed ones."""

    def __init__(self) -> None:
        self.ttfts: list[float] = []
        self.e2es: list[float] = []
        self.failed = 0

    def add(self, res: tuple[float, float] | None) -> None:
        if res is None:
            self.failed += 1
        else:
            self.ttfts.append(res[0])
            self.e2es.append(res[1])

    def stats(self, wall: float) -> dict[str, float]:
        t = np.array(self.ttfts) * 1000
        e = np.array(self.e2es) * 1000

        def pct(a: np.ndarray, q: float) -> float:
            return float(np.percentile(a, q)) if len(a) else float("nan")

        return {"completed": len(t), "failed": self.failed, "rps": len(t) / wall,
                "ttft_p50_ms": pct(t, 50), "ttft_p99_ms": pct(t, 99), "e2e_p50_ms": pct(e, 50),
                "e2e_p99_ms": pct(e, 99), "mean_open_streams": float(e.sum() / 1000 / wall) if len(e) else 0.0}


async def closed_loop(bases: list[str], concurrency: int, duration_s: float, max_tokens: int) -> dict[str, float]:
    """``concurrency`` clients back to back for ``duration_s``."""
    tally = _Tally()
    stop = time.perf_counter() + duration_s
    rr = itertools.cycle(bases)
    async with _session(concurrency) as session:
        async def worker() -> None:
            while time.perf_counter() < stop:
                tally.add(await one_request(session, next(rr), max_tokens))

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - t0
    return tally.stats(wall)


async def open_loop(bases: list[str], rate: float, duration_s: float, max_tokens: int,
                    concurrency: int) -> dict[str, float]:
    """Arrivals every ``1 / rate`` seconds for ``duration_s`` (the same schedule for every target)."""
    tally = _Tally()
    rr = itertools.cycle(bases)
    n = int(rate * duration_s)
    async with _session(concurrency * 2) as session:
        async def one(base: str) -> None:
            tally.add(await one_request(session, base, max_tokens))

        t0 = time.perf_counter()
        tasks = []
        for i in range(n):
            delay = t0 + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(next(rr))))
        await asyncio.gather(*tasks)
        wall = time.perf_counter() - t0
    return tally.stats(wall)


async def run_targets(args: argparse.Namespace, procs: LocalProcesses, speed: float, mode: str
                      ) -> dict[str, dict[str, float]]:
    emu_urls = await procs.emulators(args.engines, MODEL, prefix=f"{mode}-emu", gpu="A100-80G", speed=speed)
    targets: list[tuple[str, list[str], int | None]] = [("direct", emu_urls, None)]
    for policy in args.policies:
        cfg = static_gateway_config(emu_urls, MODEL, gpu="A100-80G", speed=speed, policy=policy,
                                    profile="mistral-7b", scheduling_policy="fcfs")
        url = await procs.gateway(cfg, name=f"{mode}-gateway-{policy}")
        targets.append((f"qlm serve ({policy})", [url], procs.procs[-1].pid))
    if router_path() is not None and not args.no_router:
        with contextlib.suppress(RuntimeError):
            url = await procs.router(emu_urls, name=f"{mode}-router")
            targets.append(("vllm-router", [url], procs.procs[-1].pid))
    out: dict[str, dict[str, float]] = {}
    for name, bases, pid in targets:
        await closed_loop(bases, 8, 2.0, args.max_tokens)  # warm-up: connections, caches
        gateway = name.startswith("qlm serve")
        health0 = await process_health(bases[0]) if gateway else {}
        cpu0, t0, own0 = cpu_seconds(pid), time.perf_counter(), time.process_time()
        if mode == "latency":
            print(f"[latency] {name}: {args.rate:g} req/s x {args.duration:g} s, "
                  f"{args.latency_max_tokens} tokens at speed {speed:g} ...", flush=True)
            out[name] = await open_loop(bases, args.rate, args.duration, args.latency_max_tokens, args.concurrency)
        else:
            print(f"[throughput] {name}: {args.concurrency} closed-loop streams x {args.duration:g} s ...", flush=True)
            out[name] = await closed_loop(bases, args.concurrency, args.duration, args.max_tokens)
        cpu1, wall, own = cpu_seconds(pid), time.perf_counter() - t0, time.process_time() - own0
        tokens = out[name]["completed"] * (args.latency_max_tokens if mode == "latency" else args.max_tokens)
        used = cpu1 - cpu0 if cpu0 is not None and cpu1 is not None else float("nan")
        out[name]["cores"] = used / wall
        out[name]["client_cores"] = own / wall
        out[name]["cpu_us_per_token"] = used / tokens * 1e6 if tokens else float("nan")
        if gateway:
            health1 = await process_health(bases[0])
            out[name].update({k: v - health0.get(k, 0.0) for k, v in health1.items()})
        print(f"  {out[name]}", flush=True)
    return out


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for mode in args.modes:
        with LocalProcesses(Path(tempfile.mkdtemp(prefix=f"qlm-bench-gw-{mode}-"))) as procs:
            speed = args.latency_speed if mode == "latency" else args.speed
            results[mode] = await run_targets(args, procs, speed, mode)
    return results


def _num(x: float | None, fmt: str) -> str:
    return "-" if x is None or x != x else format(x, fmt)


def table(res: dict[str, dict[str, float]], mode: str) -> list[str]:
    base = res["direct"]
    lines = ["| target | completed | failed | req/s | mean open streams | TTFT p50 ms | TTFT p99 ms | "
             "added p50 ms | added p99 ms | req/s vs vllm-router | cores | CPU us/token | load generator cores |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    router = res.get("vllm-router")
    for name, r in res.items():
        ratio = f"{r['rps'] / router['rps']:.2f}" if router and router["rps"] else "-"
        lines.append(f"| {name} | {r['completed']} | {r['failed']} | {r['rps']:.1f} | {r['mean_open_streams']:.0f} | "
                     f"{r['ttft_p50_ms']:.1f} | {r['ttft_p99_ms']:.1f} | "
                     f"{r['ttft_p50_ms'] - base['ttft_p50_ms']:+.1f} | "
                     f"{r['ttft_p99_ms'] - base['ttft_p99_ms']:+.1f} | {ratio} | "
                     f"{_num(r.get('cores'), '.2f')} | {_num(r.get('cpu_us_per_token'), '.1f')} | "
                     f"{_num(r.get('client_cores'), '.2f')} |")
    return lines


def health_table(res: dict[str, dict[str, float]]) -> list[str]:
    """The gateways' own loop lag and garbage-collector pauses over the measured window."""
    lines = ["| target | loop lag checks | late > 5 ms | late > 10 ms | GC pauses gen 0 / 1 / 2 | GC pauses > 5 ms "
             "| planner solves | solver s |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for name, r in res.items():
        if "lag_count" not in r:
            continue
        n = r["lag_count"] or float("nan")
        gcs = " / ".join(f"{r.get(f'gc{g}_count', 0.0):.0f}" for g in range(3))
        lines.append(f"| {name} | {r['lag_count']:.0f} | {r['lag_over_5ms'] / n:.1%} | {r['lag_over_10ms'] / n:.1%} | "
                     f"{gcs} | {r['gc_over_5ms']:.0f} | {r.get('solver_solves', 0.0):.0f} | "
                     f"{r.get('solver_seconds', 0.0):.2f} |")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--engines", type=int, default=2)
    ap.add_argument("--modes", default="latency,throughput", help="latency, throughput or both")
    ap.add_argument("--concurrency", type=int, default=200, help="open streams (latency: the target)")
    ap.add_argument("--duration", type=float, default=20.0, help="seconds per target")
    ap.add_argument("--rate", type=float, default=100.0, help="latency mode: arrivals per second")
    ap.add_argument("--latency-speed", type=float, default=1.0, help="latency mode: emulator time compression")
    ap.add_argument("--latency-max-tokens", type=int, default=128, help="latency mode: tokens per stream")
    ap.add_argument("--speed", type=float, default=100.0, help="throughput mode: emulator time compression")
    ap.add_argument("--max-tokens", type=int, default=16, help="throughput mode: tokens per request")
    ap.add_argument("--policies", default="fcfs,qlm",
                    help="one qlm serve per policy (fcfs: the relay alone; qlm: with its scheduling)")
    ap.add_argument("--no-router", action="store_true")
    ap.add_argument("--out", type=Path, default=Path("out/bench_gateway"))
    args = ap.parse_args()
    args.modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    args.policies = [p.strip() for p in args.policies.split(",") if p.strip()]
    bad = [m for m in args.modes if m not in ("latency", "throughput")]
    if bad:
        ap.error(f"--modes: unknown mode(s) {bad}; known: latency, throughput")
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:  # a lighter load generator
        doc = runner.run(main_async(args))
    machine = f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    lines = [f"Machine: {machine}; {args.engines} emulated A100 engines (mistral-7b profile); "
             f"qlm serve policies {', '.join(args.policies)}; {args.duration:g} s per target.", ""]
    if "latency" in doc:
        lines += [f"Latency (open loop): {args.rate:g} req/s, {args.latency_max_tokens} tokens per stream, "
                  f"emulators at speed {args.latency_speed:g}.", "", *table(doc["latency"], "latency"), "",
                  "The gateways' event loop (a 50 ms timer, qlm_event_loop_lag_seconds) and garbage collector "
                  "(qlm_gc_pause_seconds) over the same window:", "", *health_table(doc["latency"]), ""]
    if "throughput" in doc:
        lines += [f"Throughput (closed loop): {args.concurrency} streams, {args.max_tokens} tokens per request, "
                  f"emulators at speed {args.speed:g}.", "", *table(doc["throughput"], "throughput"), ""]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bench_gateway.json").write_text(json.dumps({"machine": machine, "args": {
        k: v for k, v in vars(args).items() if k != "out"}, "results": doc}, indent=2, default=str))
    (args.out / "bench_gateway.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
