"""Cost of the RWT estimator's queries at paper scale (80 GPUs, hundreds of groups).

    python experiments/bench_estimator.py

Measures, on the ``wa``/``wb`` clusters with every instance running a full batch:
- ``group_service``: the planner's (G, I) service matrix for G groups x every instance;
- ``queue_waits``: sampled first-token times of a whole virtual queue of n requests on one
  instance (64 samples), for several n;
- one admission (``wait_at`` for the last of n queued requests).
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
        total = 0.0
        for i in insts:
            q = [Request(f"x{j}", i.active_model or "", "interactive", 0.0, 500) for j in range(100)]
            total += timeit(partial(est.queue_waits, i, q, 10.0), reps=3)
        print(f"{name}: every instance's queue of 100 requests: {total * 1e3:.1f} ms")


if __name__ == "__main__":
    main()
