"""Target 1, offload overhead: a no-op actor through plain Dramatiq, through our Ray offload, and bare Ray.

Each variant is a closed loop of 8 client threads, each sending one message (or submitting one task) and waiting
for its result before the next: end-to-end latency is send -> result available, throughput is messages / wall time.
The worker is one ``dramatiq`` process with 8 threads, as in the issue.
"""

from __future__ import annotations

from ._app import build
from ._harness import CaseReport, Target, measure_variant, run_closed_loop
from ._run import Run

THREADS = 8
WAIT_MS = 120_000


def measure_dramatiq(run: Run, *, execution: str, count: int) -> dict[str, float]:
    """Closed-loop no-op messages through a worker that runs bodies locally or on Ray."""
    config = run.config(execution=execution)
    app = build(config)
    worker = run.start_worker(config, label=f"offload-{execution}", threads=THREADS)
    try:
        noop = app.actors["noop"]

        def send_and_wait(_: int) -> None:
            message = noop.send()
            app.backend.get_result(message, block=True, timeout=WAIT_MS)

        run_closed_loop(send_and_wait, count=THREADS * 2, threads=THREADS)  # warm up: connections, Ray workers
        loaded = run_closed_loop(send_and_wait, count=count, threads=THREADS)
        return {**loaded, **one_client(run_closed_loop(send_and_wait, count=max(20, count // 10), threads=1))}
    finally:
        run.stop_worker(worker)
        app.broker.close()


def one_client(summary: dict[str, float]) -> dict[str, float]:
    """The latencies of one client at a time (nothing queues), under their own names."""
    return {"p50_ms_one_client": summary["p50_ms"], "p99_ms_one_client": summary["p99_ms"]}


def run_case(run: Run) -> CaseReport:
    count = 50 if run.quick else 2000
    report = CaseReport(
        name="offload",
        title="Offload overhead",
        description=(
            f"No-op actor, Redis broker, one worker process with {THREADS} threads, {count} messages sent by "
            f"{THREADS} closed-loop client threads; latency is send to result available. Bare Ray is {THREADS} "
            "threads doing submit + wait + get of the same no-op. The one-client latencies come from a further "
            "run with a single client thread, where nothing queues: the path's own cost."
        ),
    )
    plain = measure_variant(report, "plain Dramatiq", lambda: measure_dramatiq(run, execution="local", count=count))
    ours = measure_variant(report, "Ray offload (ours)", lambda: measure_dramatiq(run, execution="ray", count=count))
    bare = measure_variant(report, "bare Ray", lambda: run.bare_ray(count=count, threads=THREADS))
    report.targets.append(
        Target(
            name="offload throughput vs bare Ray",
            measured=ours["throughput_per_s"] if ours else None,
            baseline=bare["throughput_per_s"] if bare else None,
            goal=0.8,
            unit="messages/s",
            note="(b) reaches at least 80% of (c)'s throughput",
        )
    )
    allowed = bare["p50_ms"] + plain["p50_ms"] + 1.0 if bare and plain else None
    report.targets.append(
        Target(
            name="offload p50 latency vs bare Ray + plain Dramatiq + 1 ms",
            measured=ours["p50_ms"] if ours else None,
            baseline=allowed,
            goal=1.0,
            unit="ms",
            higher_is_better=False,
            note="(b) p50 within 1 ms of (c) p50 plus (a) p50",
        )
    )
    allowed_alone = bare["p50_ms_one_client"] + plain["p50_ms_one_client"] + 1.0 if bare and plain else None
    report.targets.append(
        Target(
            name="(extra) offload p50 latency with one client vs bare Ray + plain Dramatiq + 1 ms",
            measured=ours["p50_ms_one_client"] if ours else None,
            baseline=allowed_alone,
            goal=1.0,
            unit="ms",
            higher_is_better=False,
            note="the same latency target with one client at a time, where nothing queues (not in the issue)",
        )
    )
    return report
