"""Cost of the RWT estimator's queries at paper scale (80 GPUs, hundreds of groups).

    python experiments/bench_estimator.py

Measures, on the ``wa``/``wb`` clusters with every instance running a full batch:
- ``group_service``: the planner's (G, I) service matrix for G groups x every instance;
- ``queue_waits``: sampled first-token times of a whole virtual queue of n requests on one
  instance (64 samples), for several n (the prediction without load balancing);
- ``dispatch_wait``: a request dispatched to an engine with 10 prompts still to prefill
  (the chunked-prefill replay);
- ``replay_wait``: a request queued behind n others of its model under load balancing, the
  pulling rule replayed over every instance (``replays`` scenarios), built from scratch;
  and ``resume_wait``: the next arrival of the same group, resumed.
Wall-clock medians over repetitions; numbers depend on the machine (stated in the output).
"""

from __future__ import annotations

import platform
import statistics
import time
from collections.abc import Callable
from functools import partial

from qlm.domain.request import Request, RequestState
from qlm.estimator import GroupLoad, RWTEstimator
from qlm.estimator.rwt import PoolMember
from qlm.perf.catalog import default_catalog
from qlm.runtime.clock import VirtualClock
from qlm.sim.simulator import EventHeap, build_engines
from qlm.workload.cluster import build_cluster
from qlm.workload.scenario import load_scenario


def timeit(fn: Callable[[], object], reps: int = 20) -> float:
    fn()
    xs = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        xs.append(time.perf_counter() - t)
    return statistics.median(xs)


def bench_replay(est: RWTEstimator, members: list[PoolMember], model: str, n: int) -> tuple[float, float]:
    """Milliseconds of a replay built for the last of ``n + 1`` queued requests (median), and
    of resuming it for each of 20 later arrivals at the tail of its group (mean)."""
    q = [Request(f"w{n}-{j}", model, "batch-2", 0.0, 500) for j in range(n + 1)]
    groups = [(f"g{k}", q[k:k + 64]) for k in range(0, n + 1, 64)]
    order = list(range(len(groups)))
    key = ("bench", n)
    build = timeit(partial(est.replay_wait, members, groups, order, q[-1], 10.0, key), reps=5 if n > 500 else 10)
    gid, last = groups[-1]
    t = time.perf_counter()
    for j in range(20):
        r = Request(f"x{n}-{j}", model, "batch-2", 0.0, 500)
        last.append(r)  # joins the tail of the same group
        assert est.resume_wait(r, gid, 10.0, key) is not None
    return build * 1e3, (time.perf_counter() - t) / 20 * 1e3


def main() -> None:
    print(f"python {platform.python_version()} on {platform.processor() or platform.machine()}")
    for name in ("wa", "wb"):
        sc = load_scenario(name)
        cluster = build_cluster(sc, default_catalog())
        _, views = build_engines(cluster, EventHeap(VirtualClock()), {}, "fcfs")
        insts = list(views.values())
        est = RWTEstimator()
        k = 0
        for inst in insts:  # a full running batch everywhere
            m = inst.active_model
            assert m is not None
            for _ in range(est.capacity(inst, m)):
                r = Request(f"r{k}", m, "batch-2", 0.0, 600, state=RequestState.RUNNING,
                            dispatched_s=0.0, first_token_s=0.5)
                inst.outstanding[r.id] = r
                k += 1
        models = sorted({m for i in insts for m in i.profiles})
        classes = [c.name for c in sc.slo_classes]
        for g in (100, 300, 1000):
            groups = [GroupLoad(models[j % len(models)], classes[j % len(classes)], 64)
                      for j in range(g)]
            t = timeit(partial(est.group_service, groups, insts))
            print(f"{name}: group_service {g} groups x {len(insts)} instances "
                  f"({cluster.total_gpus} GPUs): {t * 1e3:.2f} ms")
        inst = insts[0]
        m = inst.active_model
        assert m is not None
        for n in (1, 10, 100, 1000, 3500):
            q = [Request(f"q{j}", m, "interactive", 0.0, 500) for j in range(n)]
            t = timeit(partial(est.queue_waits, inst, q, 10.0), reps=5 if n > 500 else 20)
            print(f"{name}: queue_waits n={n} on {inst.id} "
                  f"({len(inst.outstanding)} running): {t * 1e3:.2f} ms")
        pend = [Request(f"p{j}", m, "interactive", 9.0, 1000, state=RequestState.DISPATCHED,
                        dispatched_s=9.0) for j in range(10)]
        for r in pend:
            inst.outstanding[r.id] = r
        probe = Request("probe", m, "interactive", 10.0, 800)
        t = timeit(partial(est.dispatch_wait, inst, probe, 10.0))
        print(f"{name}: dispatch_wait on {inst.id} (10 prompts to prefill): {t * 1e3:.2f} ms")
        for r in pend:
            del inst.outstanding[r.id]
        members = [PoolMember(i) for i in insts if i.active_model == m]
        for n in (10, 100, 1000):
            build_ms, resume_ms = bench_replay(est, members, m, n)
            print(f"{name}: replay_wait, {n} queued ahead, {len(members)} instances of {m} "
                  f"({est.config.replays} scenarios): {build_ms:.2f} ms; resume_wait for a next "
                  f"arrival: {resume_ms:.3f} ms")
        total = 0.0
        for i in insts:
            q = [Request(f"x{j}", i.active_model or "", "interactive", 0.0, 500) for j in range(100)]
            total += timeit(partial(est.queue_waits, i, q, 10.0), reps=3)
        print(f"{name}: every instance's queue of 100 requests: {total * 1e3:.1f} ms")


if __name__ == "__main__":
    main()
