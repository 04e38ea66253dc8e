"""Warm replicas (#23): a "model" that takes seconds to load and 20 ms per call, on a Ray head with 2 logical
GPUs. As GPU tasks, Ray runs every message in a fresh process (``max_calls=1`` for GPU remote functions), so the
model loads for every message; on two replicas it loads twice in all.

All messages are sent at once; the time is from the first send to the last result. The replicas' pool is warmed
(started, setup run) before the clock starts, as a deployed pool would be; the tasks get one warm-up message too.
"""

from __future__ import annotations

import time
from typing import Any

from ._app import MODEL_CALL_S, build
from ._harness import CaseReport, Target, measure_variant
from ._run import Run
from ._services import RayCluster

GPUS = 2
THREADS = 8
WAIT_MS = 900_000


def wait_for(backend: Any, message: Any) -> Any:
    """The message's result, polled: a blocking read would outlast the Redis client's socket timeout while GPU
    tasks load their model."""
    from dramatiq.results import ResultMissing

    deadline = time.monotonic() + WAIT_MS / 1000
    while True:
        try:
            return backend.get_result(message)
        except ResultMissing:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.005)


def measure(run: Run, cluster: RayCluster, *, actor: str, count: int, setup_s: float) -> dict[str, float]:
    config = run.config(execution="ray", model_setup_s=str(setup_s))
    app = build(config)
    worker = run.start_worker(config, label=f"replicas-{actor}", threads=THREADS, cluster=cluster)
    try:
        target = app.actors[actor]
        # Warm up until both GPUs have answered: the pool has started both replicas (or Ray its first processes).
        seen: set[int] = set()
        for _ in range(200):
            seen |= {wait_for(app.backend, message) for message in [target.send() for _ in range(GPUS)]}
            if len(seen) >= GPUS:
                break
        started = time.perf_counter()
        messages = [target.send() for _ in range(count)]
        loads = {wait_for(app.backend, message) for message in messages}
        elapsed = time.perf_counter() - started
        return {
            "count": float(count),
            "elapsed_s": elapsed,
            "throughput_per_s": count / elapsed,
            "model_loads": float(len(loads)),
        }
    finally:
        run.stop_worker(worker)
        app.broker.close()


def measure_noop(run: Run, *, actor: str, count: int) -> dict[str, float]:
    """Throughput of ``count`` empty bodies sent at once, after a warm-up."""
    config = run.config(execution="ray")
    app = build(config)
    worker = run.start_worker(config, label=f"replicas-{actor}", threads=THREADS)
    try:
        target = app.actors[actor]
        for message in [target.send() for _ in range(THREADS)]:
            wait_for(app.backend, message)
        started = time.perf_counter()
        for message in [target.send() for _ in range(count)]:
            wait_for(app.backend, message)
        elapsed = time.perf_counter() - started
        return {"count": float(count), "elapsed_s": elapsed, "throughput_per_s": count / elapsed}
    finally:
        run.stop_worker(worker)
        app.broker.close()


def run_case(run: Run) -> CaseReport:
    count, setup_s = (2, 0.2) if run.quick else (50, 2.0)  # quick: each GPU task still starts a process
    report = CaseReport(
        name="replicas",
        title="Warm replicas",
        description=(
            f"A model with a {setup_s:g} s load and a {MODEL_CALL_S * 1000:.0f} ms call, num_gpus=1, on a Ray head "
            f"with {GPUS} logical GPUs; {count} messages sent at once to one worker process with {THREADS} threads. "
            "GPU tasks reload the model in a new process per message; replicas (min=max=2) load it once each."
        ),
        chart_metrics=("throughput_per_s",),
    )
    cluster = RayCluster(num_cpus=run.ray_cpus, num_gpus=GPUS)
    try:
        tasks = measure_variant(
            report,
            "GPU tasks (ray_core)",
            lambda: measure(run, cluster, actor="model_task", count=count, setup_s=setup_s),
        )
        replicas = measure_variant(
            report,
            "replicas (ours)",
            lambda: measure(run, cluster, actor="model_replica", count=count, setup_s=setup_s),
        )
    finally:
        cluster.stop()
    speedup = replicas["throughput_per_s"] / tasks["throughput_per_s"] if tasks and replicas else None
    report.targets.append(
        Target(
            name="replicas vs GPU tasks",
            measured=speedup,
            baseline=1.0,
            goal=50.0,
            unit="x throughput",
            note="throughput of replicas over GPU tasks, at least 50x",
        )
    )
    noop_count = 20 if run.quick else 500
    measure_variant(report, "no-op, Ray tasks", lambda: measure_noop(run, actor="noop", count=noop_count))
    measure_variant(report, "no-op, replicas", lambda: measure_noop(run, actor="noop_replica", count=noop_count))
    report.notes.append(
        f"No-op rows: {noop_count} messages of an empty body sent at once on the run's CPU cluster, as Ray tasks "
        "(today's path) and on one warm replica with max_concurrency=8; reported, no goal."
    )
    report.notes.append(
        "Not yet measured here: replicas against a hand-written ray.util.ActorPool, micro-batching, and time to "
        "the first result after a worker restart (warm against cold pool)."
    )
    return report
