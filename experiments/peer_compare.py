"""Peer comparison: the same emulated vLLM engines behind `qlm serve` (SLO-aware queue) and
behind vllm-router (PyPI, round_robin), loaded by `qlm bench`'s runner with the same mixed
interactive + batch workload in real time.

    python -m experiments.peer_compare --engines 2 --gpu A10 --speed 20 \
        --scenario experiments/scenarios/peer_mixed.yaml --out out/peer_compare

For each target, N fresh emulators (`qlm emulate --speed S --scheduling-policy priority`) are
started, then the target in front of them, then the scenario's requests are sent open loop at
S x their arrival rate; times are reported in model seconds (wall x S), so they compare with
the SLO targets. vllm-router sends no priority, so the engines serve it first come first
served; `qlm serve` (policy `--policy`, default qlm) holds its backlog and orders it by SLO.
vllm-router is skipped with a message when it is not installed (`pip install vllm-router`).

Writes `peer_compare.json` (settings, machine, each target's full `qlm bench` result, the
simulator's rows) and `peer_compare.md` (per target and class: SLO attainment, goodput, TTFT
p50/p99, TPOT; then the simulator's prediction for the same workload, policies `--policy`
and fcfs) into `--out`. The load generator, the emulators and the targets share this machine's cores: the
JSON records the client's largest send lag per target.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from experiments.paper.common import machine
from qlm.bench.local import LocalProcesses, router_path, static_gateway_config, traffic_priors
from qlm.bench.plan import BenchPlan, build_plan
from qlm.bench.records import RequestRecord
from qlm.bench.report import SUMMARY_HEADERS, markdown_table, result_document, summary_rows
from qlm.bench.runner import Target, probe, run_plan
from qlm.workload.scenario import Scenario, load_scenario

DEFAULT_SCENARIO = "experiments/scenarios/peer_mixed.yaml"
TARGETS = ("qlm serve", "vllm-router")
err = Console(stderr=True)


async def _start_target(name: str, procs: LocalProcesses, urls: list[str], plan: BenchPlan, model: str,
                        args: argparse.Namespace) -> str:
    if name == "qlm serve":
        classes = [plan.slo_classes[c].model_dump(exclude_none=True) for c in plan.slo_classes]
        priors = None if args.no_priors else traffic_priors(args.scenario_obj, args.speed)
        cfg = static_gateway_config(urls, model, gpu=args.gpu, speed=args.speed, policy=args.policy,
                                    slo_classes=classes, expected_traffic=priors)
        return await procs.gateway(cfg)
    return await procs.router(urls, policy="round_robin")


async def run_target(name: str, plan: BenchPlan, model: str, args: argparse.Namespace, logs: Path) -> dict[str, Any]:
    """Fresh engines, the target in front of them, the whole plan; ``qlm bench``'s result."""
    with LocalProcesses(logs / name.replace(" ", "-")) as procs:
        urls = await procs.emulators(args.engines, model, gpu=args.gpu, speed=args.speed,
                                     scheduling_policy="priority", seed=args.seed)
        base = await _start_target(name, procs, urls, plan, model, args)
        target = Target(base, timeout_s=args.timeout)
        await probe(target)
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      console=err, disable=args.quiet or not err.is_terminal, transient=True) as prog:
            task = prog.add_task(f"{name:>11}", total=len(plan.requests))

            def done(_rec: RequestRecord) -> None:
                prog.update(task, advance=1)

            run = await run_plan(plan, target, on_record=done)
    doc = result_document(plan, target, run)
    doc["target"] = name
    return doc


def simulate_rows(sc: Scenario, policies: Sequence[str], seed: int, limit: int | None) -> list[dict[str, Any]]:
    """What the simulator predicts for the scenario's own cluster (``qlm simulate``): one
    result row per policy; ``fcfs`` (least-loaded routing to FCFS engine queues) stands for
    the router."""
    from qlm.sim.runner import RunSpec, prepare, run_policy

    spec = RunSpec(sc, seed=seed)
    cluster, workload = prepare(spec)
    if limit is not None:
        workload = workload[:limit]
    return [run_policy(spec, p, prepared=(cluster, workload))[0] for p in policies]


def _markdown(docs: dict[str, dict[str, Any]], plan: BenchPlan, args: argparse.Namespace, command: str,
              mach: dict[str, Any], skipped: list[str], sim: list[dict[str, Any]], sc: Scenario) -> str:
    classes = ", ".join(f"{c} (TTFT {plan.slo_classes[c].ttft_s:g} s)" for c in plan.classes_used)
    counts = ", ".join(f"{sum(r.slo_class == c for r in plan.requests)} {c}" for c in plan.classes_used)
    lines = [
        "## Peer comparison: qlm serve vs vllm-router",
        "",
        f"Generated by `{command}` (regenerate with the same command; do not edit by hand).",
        f"Machine: {mach['cpu_cores']} CPU cores ({mach['platform']}), no GPU (emulated engines); "
        f"Python {mach['python']}; code at git {mach['git_head']}{mach['dirty']}.",
        "",
        f"Set-up: {args.engines} x {args.gpu} emulated engines serving {plan.requests[0].model} at speed "
        f"{args.speed:g}, fresh for each target; `qlm serve --config` (policy {args.policy}, static engines) "
        f"and `vllm-router --policy round_robin`; workload `{plan.source['scenario']}` (seed {args.seed}): "
        f"{counts}; classes {classes}. Times and rates are in model time (wall x {args.speed:g}).",
        "",
        markdown_table([[name, *row] for name, d in docs.items() for row in summary_rows(d)],
                       ("target", *SUMMARY_HEADERS)),
        "",
        "SLO met: " + (next(iter(docs.values()))["slo_definition"] if docs else "") + ".",
        "Client send lag (largest, wall ms): "
        + ", ".join(f"{n} {d['max_send_lag_ms']:.0f}" for n, d in docs.items()) + ".",
    ]
    lines += [f"Skipped: {s}." for s in skipped]
    if sim:
        pools = " + ".join(f"{p.nodes * p.gpus_per_node // p.tp} x {p.gpu}" for p in sc.cluster.pools)
        used = plan.classes_used
        lines += ["", f"The simulator on the same workload and the scenario's cluster ({pools}), virtual time "
                  f"(`qlm simulate --scenario {args.scenario} --policy {','.join(r['policy'] for r in sim)}`; "
                  "fcfs stands for the router):", "",
                  markdown_table([[r["policy"], *(_pct(r["slo_attainment_by_class"].get(c)) for c in used),
                                   _pct(r["slo_attainment"]), f"{r['throughput_rps']:.3f}"] for r in sim],
                                 ("policy", *(f"{c} SLO met" for c in used), "all SLO met", "req/s"))]
    return "\n".join(lines) + "\n"


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def _dirty() -> str:
    """`` (+ uncommitted changes)`` when the working tree differs from its commit."""
    try:
        out = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                             text=True, timeout=10, check=False).stdout
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return " (+ uncommitted changes)" if out.strip() else ""


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scenario", default=DEFAULT_SCENARIO, help="scenario with one model (name or YAML)")
    ap.add_argument("--engines", type=int, default=2)
    ap.add_argument("--gpu", default="A10", help="GPU type of the emulated engines")
    ap.add_argument("--speed", type=float, default=20.0, help="emulator speed = bench time scale")
    ap.add_argument("--policy", default="qlm", help="qlm serve's policy")
    ap.add_argument("--targets", default=",".join(TARGETS), help=f"comma-separated, among {', '.join(TARGETS)}")
    ap.add_argument("--limit", type=int, default=None, help="send only the first N requests")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--timeout", type=float, default=600.0, help="per-request limit, wall seconds")
    ap.add_argument("--no-simulate", action="store_true", help="skip the simulator's prediction")
    ap.add_argument("--no-priors", action="store_true",
                    help="give qlm serve no expected_traffic (by default it gets the scenario's declared "
                    "lengths and rates, as the simulator gives the policy)")
    ap.add_argument("--quiet", action="store_true")
    ap.add_argument("--out", type=Path, default=Path("out/peer_compare"))
    args = ap.parse_args(argv)
    command = " ".join(["python -m experiments.peer_compare", *(sys.argv[1:] if argv is None else argv)])
    names = [t.strip() for t in args.targets.split(",") if t.strip()]
    bad = [t for t in names if t not in TARGETS]
    if bad or not names:
        ap.error(f"--targets: unknown {bad}; known: {', '.join(TARGETS)}")
    sc = load_scenario(args.scenario)
    args.scenario_obj = sc
    plan = build_plan(sc, seed=args.seed, time_scale=args.speed, limit=args.limit)
    models = sorted({r.model for r in plan.requests})
    if len(models) != 1:
        ap.error(f"--scenario: the engines serve one model; the workload has {models}")
    skipped: list[str] = []
    if "vllm-router" in names and router_path() is None:
        msg = "vllm-router is not installed (pip install vllm-router)"
        err.print(f"skipping vllm-router: {msg}")
        skipped.append(f"vllm-router ({msg})")
        names.remove("vllm-router")
    logs = Path(tempfile.mkdtemp(prefix="qlm-peer-compare-"))
    docs: dict[str, dict[str, Any]] = {}
    for name in names:
        err.print(f"{name}: {len(plan.requests)} requests over {plan.requests[-1].send_s:.1f} wall s ...")
        docs[name] = asyncio.run(run_target(name, plan, models[0], args, logs))
        d = docs[name]
        err.print(f"  done {d['completed']}/{d['submitted']}, SLO met {100 * (d['slo_attainment'] or 0):.1f}%, "
                  f"wall {d['duration']:.1f} s")
    mach = {**machine(), "gpu": "none (emulated engines)", "dirty": _dirty()}
    sim = [] if args.no_simulate else simulate_rows(sc, [args.policy, "fcfs"], args.seed, args.limit)
    payload = {"command": command, "machine": mach, "scenario": sc.name, "engines": args.engines, "gpu": args.gpu,
               "speed": args.speed, "policy": args.policy, "seed": args.seed, "limit": args.limit,
               "skipped": skipped, "logs": str(logs), "results": docs, "simulated": sim}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "peer_compare.json").write_text(json.dumps(payload, indent=1) + "\n", encoding="utf-8")
    md = _markdown(docs, plan, args, command, mach, skipped, sim, sc)
    (args.out / "peer_compare.md").write_text(md, encoding="utf-8")
    print(md)
    return payload


if __name__ == "__main__":
    main()
