"""Bare Ray, the baseline of the offload case, in a process of its own: ``threads`` threads each doing
submit + wait + get of a no-op task, ``count`` times in all, then one thread alone for a tenth of that (the
one-client latencies). Prints the summary as JSON.

    python -m benchmarks._bare_ray --count 2000 --threads 8   (attaches to RAY_ADDRESS)
"""

from __future__ import annotations

import argparse
import json
import logging

from ._app import noop
from ._harness import run_closed_loop


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--threads", type=int, default=8)
    args = parser.parse_args()

    import ray

    ray.init(log_to_driver=False, logging_level=logging.WARNING)
    remote_noop = ray.remote(noop)
    ray.get([remote_noop.remote() for _ in range(args.threads * 2)])  # warm the worker pool

    def submit_wait_get(_: int) -> None:
        ref = remote_noop.remote()
        ray.wait([ref], timeout=60)
        ray.get(ref, timeout=60)

    summary = run_closed_loop(submit_wait_get, count=args.count, threads=args.threads)
    alone = run_closed_loop(submit_wait_get, count=max(20, args.count // 10), threads=1)
    summary.update(p50_ms_one_client=alone["p50_ms"], p99_ms_one_client=alone["p99_ms"])
    print(json.dumps(summary), flush=True)
    ray.shutdown()


if __name__ == "__main__":
    main()
