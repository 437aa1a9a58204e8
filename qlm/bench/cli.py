"""``qlm bench``: replay a scenario or trace against an OpenAI-compatible endpoint (registered
in :mod:`qlm.cli`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

__all__ = ["bench"]


def bench(
    base_url: Annotated[str, typer.Option(help="server root, e.g. http://127.0.0.1:8000 (qlm serve, vllm serve, "
                                               "a router)")],
    endpoint: Annotated[str, typer.Option(help="/v1/chat/completions or /v1/completions")] = "/v1/chat/completions",
    scenario: Annotated[str, typer.Option(help="built-in name (small, wa, wb, wc) or YAML path: workload, "
                                               "SLO classes")] = "small",
    trace: Annotated[Path | None, typer.Option(help="Azure CSV or Mooncake JSONL trace, mapped onto the "
                                                    "scenario's streams")] = None,
    load: Annotated[float, typer.Option(help="arrival-rate multiplier (with --trace: time compression)")] = 1.0,
    time_scale: Annotated[float, typer.Option(help="send S x faster than the workload's times; pair with "
                                                   "emulators at --speed S; latencies are reported x S too")] = 1.0,
    limit: Annotated[int | None, typer.Option(help="send only the first N requests")] = None,
    model_map: Annotated[str | None, typer.Option(help="rename models: scenario=served,...")] = None,
    api_key: Annotated[str | None, typer.Option(help="bearer key", envvar="QLM_BENCH_API_KEY")] = None,
    class_header: Annotated[bool, typer.Option(help="send the SLO class as header X-QLM-SLO-Class")] = True,
    class_field: Annotated[bool, typer.Option(help="send the SLO class as body field slo_class (off for "
                                                   "servers that reject unknown fields)")] = True,
    service_tier: Annotated[str | None, typer.Option(help="send service_tier per class: class=tier,...")] = None,
    ignore_eos: Annotated[bool, typer.Option(help="send ignore_eos: true (fixed output lengths)")] = True,
    min_tokens: Annotated[bool, typer.Option(help="send min_tokens = the output length")] = False,
    max_concurrency: Annotated[int | None, typer.Option(help="at most N requests in flight (default: no "
                                                             "cap, open loop)")] = None,
    timeout: Annotated[float, typer.Option(help="per-request limit, wall seconds")] = 600.0,
    seed: Annotated[int, typer.Option(help="seed of every random choice (workload, trace mapping, "
                                           "prompt words)")] = 0,
    json_out: Annotated[Path | None, typer.Option("--json", help="write the results as JSON")] = None,
    quiet: Annotated[bool, typer.Option(help="no progress bar and no table")] = False,
) -> None:
    """Load an OpenAI-compatible endpoint with a scenario's timed requests and SLO classes;
    report TTFT, TPOT, ITL, end-to-end latency, goodput and SLO attainment per class."""
    import asyncio
    import json

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from qlm.bench.plan import build_plan, parse_model_map, parse_pairs
    from qlm.bench.records import RequestRecord
    from qlm.bench.report import notes, result_document, rich_table
    from qlm.bench.runner import BenchError, Target, probe, run_plan
    from qlm.cli import err, fail, out
    from qlm.errors import QLMError
    from qlm.workload.scenario import load_scenario

    try:
        target = Target(
            base_url, endpoint, api_key=api_key, class_header=class_header, class_field=class_field,
            service_tiers=parse_pairs(service_tier, "--service-tier") if service_tier else {},
            ignore_eos=ignore_eos, min_tokens=min_tokens, max_concurrency=max_concurrency, timeout_s=timeout,
        )
        mapping = parse_model_map(model_map) if model_map is not None else None
        sc = load_scenario(scenario)
        unknown = sorted(set(target.service_tiers) - set(sc.slo))
        if unknown:
            raise ValueError(f"--service-tier: unknown SLO class {unknown[0]!r}; known: {', '.join(sc.slo)}")
        plan = build_plan(sc, seed=seed, load=load, trace=trace, limit=limit, time_scale=time_scale,
                          model_map=mapping)
    except (QLMError, ValueError) as exc:
        fail(" ".join(str(exc).split()))
        return
    if not plan.requests:
        fail("the workload has no request")
    try:
        served = asyncio.run(probe(target))
    except BenchError as exc:
        fail(str(exc))
        return
    wanted = sorted({r.model for r in plan.requests})
    if served and not set(wanted) & set(served):
        fail(f"{target.base_url} serves {', '.join(served)}, not {', '.join(wanted)}; use --model-map")
    missing = [m for m in wanted if served and m not in served]
    if missing:
        err.print(f"warning: {target.base_url}/v1/models does not list {', '.join(missing)}", highlight=False)

    with Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=err, disable=quiet or not err.is_terminal, transient=True,
    ) as prog:
        task = prog.add_task("requests", total=len(plan.requests))
        failed = [0]

        def done(rec: RequestRecord) -> None:
            failed[0] += not rec.success
            prog.update(task, advance=1, description=f"requests ({failed[0]} failed)" if failed[0] else "requests")

        run = asyncio.run(run_plan(plan, target, on_record=done))
    doc = result_document(plan, target, run)
    if json_out is not None:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
    if not quiet:
        out.print(rich_table(doc))
        for line in notes(doc):
            out.print(line, highlight=False, soft_wrap=True)
    if doc["completed"] == 0:
        reasons = ", ".join(f"{k} x{v}" for k, v in doc["failed_reasons"].items())
        fail(f"no request completed ({reasons})", code=1)
