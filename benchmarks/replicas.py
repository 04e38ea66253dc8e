"""Warm replicas (#23), against what a user has without them, each baseline measured in the same run:

- **GPU tasks**: a "model" that takes seconds to load and 20 ms per call, on a Ray head with 2 logical GPUs. As
  GPU tasks, Ray runs every message in a fresh process (``max_calls=1`` for GPU remote functions), so the model
  loads for every message; on two replicas it loads twice in all.
- **A hand-written ActorPool**: the same model as two plain Ray actors (one GPU each) in a ``ray.util.ActorPool``
  that the worker's threads call directly from a local body. Replicas should cost no throughput and at most
  2 ms of latency over it.
- **Batching**: a body costing 20 ms per call plus 0.5 ms per item, on one replica, from 32 concurrent senders:
  with ``Batch(max_size=32)`` against one message per call.
- **No-op**: empty bodies through replicas and as Ray tasks (information).
- **A worker restart**: time to the first result when the pool is still warm (it outlives the worker) against a
  cold pool (a new version: the pool, its replica and setup start with the first message).

Bursts are sent at once and timed from the first send to the last result; pools are warmed (started, setup
run) before the clock starts, as a deployed pool would be. Every worker polls Redis at least every
``IDLE_POLL_MS`` when idle (``worker_timeout``): with Dramatiq's default, 1000 ms, a burst sent after an idle
stretch (a warm-up waiting on a replica's start) waits up to a second for the consumer's backoff, which made
small no-op bursts through replicas look several times slower than Ray tasks.
"""

from __future__ import annotations

import time
from typing import Any

from ._app import BATCH_CALL_S, BATCH_ITEM_S, MODEL_CALL_S, MODEL_GPUS, build
from ._harness import CaseReport, Target, measure_variant, run_closed_loop
from ._run import Run
from ._services import RayCluster, unique

GPUS = MODEL_GPUS
THREADS = 8
#: Concurrent senders of the batching rows (and threads of their worker, so that all are in flight).
SENDERS = 32
IDLE_POLL_MS = 10
WAIT_MS = 900_000
#: Replicas may add at most this much to the ActorPool's one-client p50 latency (ms).
LATENCY_ALLOWANCE_MS = 2.0


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


def get(backend: Any, message: Any) -> Any:
    """The message's result, read blocking in one-second slices: a longer block would outlast the Redis
    client's socket timeout while a replica starts."""
    from dramatiq.results import ResultTimeout

    deadline = time.monotonic() + WAIT_MS / 1000
    while True:
        try:
            return backend.get_result(message, block=True, timeout=1000)
        except ResultTimeout:
            if time.monotonic() > deadline:
                raise


def measure(
    run: Run, cluster: RayCluster, *, actor: str, count: int, setup_s: float, latency_count: int = 0
) -> dict[str, float]:
    """A burst of ``count`` model calls (throughput, model loads), then ``latency_count`` calls one at a time
    (``p50_ms_one_client``: send to result, nothing queued)."""
    config = run.config(execution="ray", model_setup_s=str(setup_s))
    app = build(config)
    worker = run.start_worker(
        config, label=f"replicas-{actor}", threads=THREADS, cluster=cluster, idle_poll_ms=IDLE_POLL_MS
    )
    try:
        target = app.actors[actor]
        # Warm up until both GPUs have answered: both replicas or actors started (or Ray its first processes).
        seen: set[int] = set()
        for _ in range(200):
            seen |= {wait_for(app.backend, message) for message in [target.send() for _ in range(GPUS)]}
            if len(seen) >= GPUS:
                break
        started = time.perf_counter()
        messages = [target.send() for _ in range(count)]
        loads = {wait_for(app.backend, message) for message in messages}
        elapsed = time.perf_counter() - started
        numbers = {
            "count": float(count),
            "elapsed_s": elapsed,
            "throughput_per_s": count / elapsed,
            "model_loads": float(len(loads)),
        }
        if latency_count:

            def send_and_wait(_: int) -> None:
                get(app.backend, target.send())

            alone = run_closed_loop(send_and_wait, count=latency_count, threads=1)
            numbers.update(p50_ms_one_client=alone["p50_ms"], p99_ms_one_client=alone["p99_ms"])
        return numbers
    finally:
        run.stop_worker(worker)
        app.broker.close()


def measure_noop(run: Run, *, actor: str, count: int) -> dict[str, float]:
    """Throughput of ``count`` empty bodies sent at once, after a warm-up."""
    config = run.config(execution="ray")
    app = build(config)
    worker = run.start_worker(config, label=f"replicas-{actor}", threads=THREADS, idle_poll_ms=IDLE_POLL_MS)
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


def measure_senders(run: Run, *, actor: str, count: int) -> dict[str, float]:
    """``count`` messages from ``SENDERS`` closed-loop senders (each sends one message and waits for its result
    before the next) to a worker with as many threads: throughput and latency percentiles."""
    config = run.config(execution="ray")
    app = build(config)
    worker = run.start_worker(config, label=f"replicas-{actor}", threads=SENDERS, idle_poll_ms=IDLE_POLL_MS)
    try:
        target = app.actors[actor]

        def send_and_wait(index: int) -> None:
            get(app.backend, target.send(index))

        run_closed_loop(send_and_wait, count=SENDERS, threads=SENDERS)  # warm up: the replica starts
        return run_closed_loop(send_and_wait, count=count, threads=SENDERS)
    finally:
        run.stop_worker(worker)
        app.broker.close()


def measure_restart(run: Run, *, setup_s: float) -> tuple[dict[str, float], dict[str, float]]:
    """Time to the first result of a freshly started worker: with a pool nobody started yet (a new version: the
    pool, its replica and setup start with that message), then, after that worker stopped, with the pool it
    left warm. Each is timed from the send, once the worker is ready (attached to Ray)."""
    config = run.config(execution="ray", model_setup_s=str(setup_s), replica_version=unique("restart"))
    app = build(config)
    try:
        timings = []
        for state in ("cold", "warm"):
            worker = run.start_worker(config, label=f"replicas-restart-{state}", idle_poll_ms=IDLE_POLL_MS)
            try:
                started = time.perf_counter()
                get(app.backend, app.actors["model_restart"].send())
                timings.append({"first_result_ms": (time.perf_counter() - started) * 1000})
            finally:
                run.stop_worker(worker)
        return timings[0], timings[1]
    finally:
        app.broker.close()


def _ratio(numerator: dict[str, float] | None, denominator: dict[str, float] | None, key: str) -> float | None:
    return numerator[key] / denominator[key] if numerator and denominator else None


def run_case(run: Run) -> CaseReport:
    # quick: each GPU task still starts a process; a replica or ActorPool burst costs little
    count, pool_count, latency_count, setup_s = (2, 10, 5, 0.2) if run.quick else (50, 400, 100, 2.0)
    report = CaseReport(
        name="replicas",
        title="Warm replicas",
        description=(
            f"A model with a {setup_s:g} s load and a {MODEL_CALL_S * 1000:.0f} ms call, num_gpus=1, on a Ray head "
            f"with {GPUS} logical GPUs, sent at once to one worker process with {THREADS} threads: {count} "
            f"messages as GPU tasks (which reload the model in a new process per message), {pool_count} through a "
            f"hand-written ray.util.ActorPool of {GPUS} actors and on {GPUS} replicas (which load it once each); "
            f"then {latency_count} messages one at a time. Batching: {BATCH_CALL_S * 1000:.0f} ms + "
            f"{BATCH_ITEM_S * 1000:g} ms per item on one replica, {SENDERS} closed-loop senders. No-op and restart "
            "rows on the run's CPU cluster."
        ),
        chart_metrics=("throughput_per_s", "p50_ms_one_client"),
    )
    cluster = RayCluster(num_cpus=run.ray_cpus, num_gpus=GPUS)
    try:
        tasks = measure_variant(
            report,
            "GPU tasks (ray_core)",
            lambda: measure(run, cluster, actor="model_task", count=count, setup_s=setup_s),
        )
        # Before the replicas: the ActorPool's actors end with its worker, a pool of replicas keeps its GPUs.
        pool = measure_variant(
            report,
            "hand-written ActorPool",
            lambda: measure(
                run, cluster, actor="model_actor_pool", count=pool_count, setup_s=setup_s, latency_count=latency_count
            ),
        )
        replicas = measure_variant(
            report,
            "replicas (ours)",
            lambda: measure(
                run, cluster, actor="model_replica", count=pool_count, setup_s=setup_s, latency_count=latency_count
            ),
        )
    finally:
        cluster.stop()
    report.targets.append(
        Target(
            name="replicas vs GPU tasks",
            measured=_ratio(replicas, tasks, "throughput_per_s"),
            baseline=1.0,
            goal=50.0,
            unit="x throughput",
            note="throughput of replicas over GPU tasks, at least 50x",
        )
    )
    report.targets.append(
        Target(
            name="replicas vs a hand-written ActorPool, throughput",
            measured=replicas["throughput_per_s"] if replicas else None,
            baseline=pool["throughput_per_s"] if pool else None,
            goal=0.9,
            unit="messages/s",
            note="replicas reach at least 0.9x the throughput of the same actors in a hand-written ActorPool",
        )
    )
    report.targets.append(
        Target(
            name=f"replicas vs a hand-written ActorPool, p50 latency + {LATENCY_ALLOWANCE_MS:g} ms",
            measured=replicas["p50_ms_one_client"] if replicas else None,
            baseline=pool["p50_ms_one_client"] + LATENCY_ALLOWANCE_MS if pool else None,
            goal=1.0,
            unit="ms",
            higher_is_better=False,
            note=f"one client at a time, replicas' p50 within {LATENCY_ALLOWANCE_MS:g} ms of the ActorPool's",
        )
    )

    batch_count = 64 if run.quick else 1000
    plain = measure_variant(
        report, "one message per call", lambda: measure_senders(run, actor="score_one", count=batch_count)
    )
    batched = measure_variant(
        report, "batched (ours)", lambda: measure_senders(run, actor="score_batch", count=batch_count)
    )
    report.targets.append(
        Target(
            name="batching vs one message per call",
            measured=_ratio(batched, plain, "throughput_per_s"),
            baseline=1.0,
            goal=5.0,
            unit="x throughput",
            note=f"Batch(max_size=32) on one replica, {SENDERS} senders: at least 5x the throughput without it",
        )
    )

    noop_count = 20 if run.quick else 500
    measure_variant(report, "no-op, Ray tasks", lambda: measure_noop(run, actor="noop", count=noop_count))
    measure_variant(report, "no-op, replicas", lambda: measure_noop(run, actor="noop_replica", count=noop_count))
    report.notes.append(
        f"No-op rows: {noop_count} messages of an empty body sent at once on the run's CPU cluster, as Ray tasks "
        "(today's path) and on one warm replica with max_concurrency=8; reported, no goal."
    )

    cold, warm = measure_restart(run, setup_s=setup_s)
    report.variants["first result after a worker restart, cold pool"] = cold
    report.variants["first result after a worker restart, warm pool (ours)"] = warm
    print(f"  restart: cold {cold['first_result_ms']:.4g} ms, warm {warm['first_result_ms']:.4g} ms", flush=True)
    report.targets.append(
        Target(
            name="(extra) first result after a worker restart, warm pool vs cold",
            measured=warm["first_result_ms"],
            baseline=cold["first_result_ms"],
            goal=0.5,
            unit="ms",
            higher_is_better=False,
            note=(
                "a restarted worker's first result with the pool it left warm takes at most half the time of one "
                f"with a cold pool (whose replica starts and loads the {setup_s:g} s model first); not in the issue"
            ),
        )
    )
    return report
