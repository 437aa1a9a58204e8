"""Gateway memory over many requests: ``qlm serve`` in front of emulated engines, loaded by
closed-loop clients in rounds; its resident memory (Linux /proc) after each round.

    python -m experiments.soak_gateway --rounds 6 --seconds 12

A gateway that keeps something per request grows without end; one that keeps bounded state
(the last ``limits.ended_requests_kept`` ended requests, the last 100,000 public ids) levels
off once those bounds are reached. Short requests (``--max-tokens``) at a high emulator speed
make many requests quickly; the prompts are small, so real traffic leaks faster per request.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
from pathlib import Path

import uvloop

from experiments.bench_gateway import MODEL, closed_loop
from qlm.bench.local import LocalProcesses, static_gateway_config


def rss_mb(pid: int) -> float:
    """Resident memory of process ``pid`` in MiB (Linux /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


async def soak(args: argparse.Namespace) -> list[tuple[int, float]]:
    """(requests served so far, gateway RSS in MiB) at the start and after each round."""
    with LocalProcesses(Path(tempfile.mkdtemp(prefix="qlm-soak-"))) as procs:
        emu = await procs.emulators(2, MODEL, prefix="emu", gpu="A100-80G", speed=args.speed)
        cfg = static_gateway_config(emu, MODEL, gpu="A100-80G", speed=args.speed, policy=args.policy,
                                    profile="mistral-7b", scheduling_policy="fcfs")
        url = await procs.gateway(cfg, name="gateway")
        pid = procs.procs[-1].pid
        rows = [(0, rss_mb(pid))]
        print(f"{0:8d} requests  RSS {rows[0][1]:7.1f} MiB", flush=True)
        done = 0
        for _ in range(args.rounds):
            res = await closed_loop([url], args.concurrency, args.seconds, args.max_tokens)
            done += int(res["completed"])
            rows.append((done, rss_mb(pid)))
            print(f"{done:8d} requests  RSS {rows[-1][1]:7.1f} MiB  ({res['rps']:.0f} req/s, "
                  f"{res['failed']:.0f} failed)", flush=True)
        return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--seconds", type=float, default=12.0, help="seconds per round")
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--max-tokens", type=int, default=4)
    ap.add_argument("--speed", type=float, default=100.0, help="emulator time compression")
    ap.add_argument("--policy", default="fcfs")
    args = ap.parse_args()
    if args.rounds < 1 or args.seconds <= 0 or args.concurrency < 1:
        ap.error("--rounds, --seconds and --concurrency must be positive")
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(soak(args))


if __name__ == "__main__":
    main()
