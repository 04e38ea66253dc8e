"""Target 4, big results from Ray: a 64 MiB result spilled inside the Ray task (only a pointer travels back)
against the same result returned through ``ray.get`` and spilled in the worker. Both use our filesystem store.

Messages go one at a time; the time is send -> result available (hydrated by the caller), and the worker's peak
RSS growth is sampled while they run.
"""

from __future__ import annotations

import time

from ._app import build
from ._harness import MIB, CaseReport, PeakRSS, Target, latency_summary, measure_variant
from ._run import Run
from ._services import unique

WAIT_MS = 600_000


def measure(run: Run, *, spill_in_task: bool, size: int, count: int) -> dict[str, float]:
    config = run.config(execution="ray", spill_in_task="1" if spill_in_task else "0", **run.store_config("fs"))
    app = build(config)
    label = "big-in-task" if spill_in_task else "big-in-worker"
    worker = run.start_worker(config, label=label, threads=8)
    rss = PeakRSS(worker.worker_pid)
    try:
        produce = app.actors["payload"]
        produce.send(size, unique("result")).get_result(backend=app.backend, block=True, timeout=WAIT_MS)  # warm up
        latencies = []
        with rss.phase() as memory:
            started = time.perf_counter()
            for _ in range(count):
                sent = time.perf_counter()
                if (
                    len(
                        produce.send(size, unique("result")).get_result(
                            backend=app.backend, block=True, timeout=WAIT_MS
                        )
                    )
                    != size
                ):
                    raise AssertionError("the result has the wrong size")
                latencies.append(time.perf_counter() - sent)
            elapsed = time.perf_counter() - started
        return {**latency_summary(latencies, elapsed), **memory}
    finally:
        rss.close()
        run.stop_worker(worker)
        app.broker.close()


def run_case(run: Run) -> CaseReport:
    size = 4 * MIB if run.quick else 64 * MIB
    count = 2 if run.quick else 10
    report = CaseReport(
        name="big_results",
        title="Big results from Ray",
        description=(
            f"A {size // MIB} MiB result of an actor run on Ray, {count} messages one at a time: spilled to the "
            "filesystem store inside the Ray task, or returned through ray.get and spilled in the worker."
        ),
        chart_metrics=("p50_ms", "peak_growth_mib"),
    )
    in_task = measure_variant(
        report, "spilled in the Ray task (ours)", lambda: measure(run, spill_in_task=True, size=size, count=count)
    )
    in_worker = measure_variant(
        report, "ray.get, spilled in the worker", lambda: measure(run, spill_in_task=False, size=size, count=count)
    )
    report.targets.append(
        Target(
            name="speedup of spilling in the task",
            measured=in_worker["p50_ms"] if in_worker else None,
            baseline=in_task["p50_ms"] if in_task else None,
            goal=1.3,
            unit="ms (p50, ray.get path / in-task path)",
            note="spilling inside the Ray task at least 1.3x faster",
        )
    )
    report.targets.append(
        Target(
            name="worker peak RSS growth, in-task vs ray.get path",
            measured=in_task["peak_growth_mib"] if in_task else None,
            baseline=in_worker["peak_growth_mib"] if in_worker else None,
            goal=1.0,
            unit="MiB",
            higher_is_better=False,
            note="lower worker peak RSS when spilling inside the task",
        )
    )
    return report
