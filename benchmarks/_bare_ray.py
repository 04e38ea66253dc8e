"""Bare Ray baselines, in a process of their own (attached to ``RAY_ADDRESS``); each prints its summary as JSON.

python -m benchmarks._bare_ray --count 2000 --threads 8 --ray-node-pid PID --ray-temp-dir DIR
    the offload case: ``threads`` threads each doing submit + wait + get of a no-op task, ``count`` times in
    all (after an unmeasured tenth, ``--warm-up`` sets another), then one thread alone for a tenth of that (the
    one-client latencies; ``--one-client`` sets another). The CPU of the loaded run is
    measured here, where it starts and ends: this process and its children, plus the cluster's processes (the
    trees of the ``ray start`` processes ``--ray-node-pid`` names and any process naming ``--ray-temp-dir``);
python -m benchmarks._bare_ray --count 200 --burn 650000
    the CPU-bound case: ``count`` burn tasks submitted at once, then every result gathered.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from typing import Any

from ._app import burn, noop
from ._harness import CpuMeter, ProcessSet, run_closed_loop


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--burn", type=int, default=0, help="iterations of burn per task (the CPU-bound case)")
    parser.add_argument("--warm-up", type=int, default=None, help="no-op tasks before the measured run")
    parser.add_argument("--one-client", type=int, default=None, help="no-op tasks of the one-thread run")
    parser.add_argument(
        "--ray-node-pid", type=int, action="append", default=[], help="a node's `ray start` process (repeatable)"
    )
    parser.add_argument("--ray-temp-dir", default=None, help="the cluster's temp dir, named by its daemons")
    args = parser.parse_args()

    import ray

    ray.init(log_to_driver=False, logging_level=logging.WARNING)
    if args.burn:
        print(json.dumps(burn_batch(ray, count=args.count, iterations=args.burn)), flush=True)
        ray.shutdown()
        return
    remote_noop = ray.remote(noop)

    def submit_wait_get(_: int) -> None:
        ref = remote_noop.remote()
        ray.wait([ref], timeout=60)
        ray.get(ref, timeout=60)

    # The same closed-loop warm-up as the Dramatiq variants (benchmarks.offload.warm_up): Ray's worker pool.
    warm_up = max(args.threads * 2, args.count // 10) if args.warm_up is None else args.warm_up
    run_closed_loop(submit_wait_get, count=warm_up, threads=args.threads)

    groups = {  # this process names the temp dir too, in its arguments: the first group claims it
        "producer": ProcessSet(trees=(os.getpid(),)),
        "ray": ProcessSet(trees=tuple(args.ray_node_pid), marker=args.ray_temp_dir),
    }
    with CpuMeter(groups) as cpu:
        summary = run_closed_loop(submit_wait_get, count=args.count, threads=args.threads)
    summary.update(cpu.summary(summary["count"]))
    one_client = max(20, args.count // 10) if args.one_client is None else args.one_client
    alone = run_closed_loop(submit_wait_get, count=one_client, threads=1)
    summary.update(p50_ms_one_client=alone["p50_ms"], p99_ms_one_client=alone["p99_ms"])
    print(json.dumps(summary), flush=True)
    ray.shutdown()


def burn_batch(ray: Any, *, count: int, iterations: int) -> dict[str, float]:
    remote_burn = ray.remote(burn)
    ray.get([remote_burn.remote(1000) for _ in range(8)])  # warm the worker pool
    started = time.perf_counter()
    ray.get([remote_burn.remote(iterations) for _ in range(count)])
    elapsed = time.perf_counter() - started
    return {"count": float(count), "elapsed_s": elapsed, "throughput_per_s": count / elapsed}


if __name__ == "__main__":
    main()
