"""Target 2, CPU-bound scaling: a pure-Python actor (~50 ms of GIL-holding work; 10 ms in quick mode) in one
worker process with 8 threads, run locally (GIL-bound) and offloaded to Ray, on one node and (full mode) on a
simulated two-node cluster.

All messages are sent at once; the time is from the first send to the last result.
"""

from __future__ import annotations

import time

from ._app import build, calibrate_burn
from ._harness import CaseReport, Target, measure_variant
from ._run import Run
from ._services import RayCluster

THREADS = 8
WAIT_MS = 600_000


def measure_batch(
    run: Run, *, execution: str, count: int, iterations: int, cluster: RayCluster | None = None
) -> dict[str, float]:
    """Send ``count`` burn messages at once and wait for every result."""
    config = run.config(execution=execution)
    app = build(config)
    label = f"cpu-{execution}-{'two-nodes' if cluster else 'one-node'}"
    worker = run.start_worker(config, label=label, threads=THREADS, cluster=cluster)
    try:
        burn = app.actors["burn"]
        for message in [burn.send(1000) for _ in range(THREADS)]:  # warm up: Ray worker processes, imports
            app.backend.get_result(message, block=True, timeout=WAIT_MS)
        started = time.perf_counter()
        messages = [burn.send(iterations) for _ in range(count)]
        for message in messages:
            app.backend.get_result(message, block=True, timeout=WAIT_MS)
        elapsed = time.perf_counter() - started
        return {"count": float(count), "elapsed_s": elapsed, "throughput_per_s": count / elapsed}
    finally:
        run.stop_worker(worker)
        app.broker.close()


def _speedup_target(name: str, plain: dict[str, float] | None, ours: dict[str, float] | None, cores: int) -> Target:
    speedup = ours["throughput_per_s"] / plain["throughput_per_s"] if plain and ours else None
    return Target(
        name=name,
        measured=speedup,
        baseline=float(cores),
        goal=0.85,
        unit="x speedup (baseline: cores Ray may use)",
        note=f"speedup over plain Dramatiq of at least 0.85 x the {cores} cores Ray may use",
    )


def run_case(run: Run) -> CaseReport:
    count = 16 if run.quick else 200
    burn_ms = 10.0 if run.quick else 50.0  # quick: the same path with a fifth of the work
    iterations = calibrate_burn(burn_ms)
    report = CaseReport(
        name="cpu_scaling",
        title="CPU-bound scaling",
        description=(
            f"Pure-Python CPU-bound actor ({iterations:,} loop iterations, about {burn_ms:.0f} ms of work on an idle "
            f"core), {count} messages sent at once, one worker process with {THREADS} threads; time from the first "
            "send to the last result."
        ),
        chart_metrics=("throughput_per_s",),
    )
    plain = measure_variant(
        report, "plain Dramatiq", lambda: measure_batch(run, execution="local", count=count, iterations=iterations)
    )
    ours = measure_variant(
        report,
        f"Ray offload, 1 node x {run.ray_cpus} CPUs (ours)",
        lambda: measure_batch(run, execution="ray", count=count, iterations=iterations),
    )
    measure_variant(report, "bare Ray, 1 node (reference)", lambda: run.bare_ray(count=count, burn=iterations))
    report.targets.append(_speedup_target("CPU-bound speedup, one node", plain, ours, run.ray_cpus))
    report.notes.append(
        "Bare Ray (the same tasks submitted at once by a plain Ray driver) is a reference, not in the issue: it "
        "shows how much of any shortfall the machine itself causes."
    )
    if run.quick:
        report.notes.append("Quick mode skips the two-node cluster.")
        return report
    per_node = max(1, run.ray_cpus // 2)
    cluster = RayCluster(num_cpus=per_node)
    try:
        cluster.add_node(num_cpus=per_node)
        two = measure_variant(
            report,
            f"Ray offload, 2 nodes x {per_node} CPUs (ours)",
            lambda: measure_batch(run, execution="ray", count=count, iterations=iterations, cluster=cluster),
        )
    finally:
        cluster.stop()
    report.targets.append(_speedup_target("CPU-bound speedup, two nodes", plain, two, cluster.num_cpus))
    report.notes.append(
        f"The two-node cluster is two `ray start` processes on this machine with {per_node} CPU(s) each."
    )
    return report
