"""Target 1, offload overhead: a no-op actor through plain Dramatiq, through our Ray offload, and bare Ray.

Each variant is a closed loop of 8 client threads, each sending one message (or submitting one task) and waiting
for its result before the next: end-to-end latency is send -> result available, throughput is messages / wall time.
The worker is one ``dramatiq`` process with 8 threads, as in the issue.

An offloaded message makes a whole Dramatiq round trip and a whole Ray round trip, and on one machine both take
CPU from the same cores. So the targets are about what our path adds on top of the two: its CPU per message
against the sum of theirs, and its throughput against the two in series, ``1 / (1/D + 1/R)`` with ``D`` and
``R`` the throughputs of plain Dramatiq and bare Ray in the same run. The ratio to bare Ray's throughput alone is
reported as information.

CPU is counted over the loaded run only (warm-up and one-client runs excluded) by a :class:`CpuMeter`: the
producer (the client threads' process; for bare Ray, the driver), the ``dramatiq`` worker processes and every
process of the Ray cluster, summed and divided by the number of messages.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from ._app import build
from ._harness import CaseReport, CpuMeter, ProcessSet, Target, measure_variant, run_closed_loop
from ._report import render_text
from ._run import Run

THREADS = 8
WAIT_MS = 120_000
#: Target (1): the CPU per message our path may spend beyond plain Dramatiq's plus bare Ray's.
CPU_ALLOWANCE_MS = 0.3


def warm_up(count: int) -> int:
    """Messages (or tasks) sent, closed loop, before the measured run, by every variant alike.

    A new driver (each variant's worker, or bare Ray's process) is a new Ray job, whose worker processes Ray starts
    as tasks come. Starting one costs about a second of CPU, so a worker started inside the measured stretch would
    bill that to whichever variant met it: a tenth of the run warms the pool first.
    """
    return max(THREADS * 2, count // 10)


#: Target (2): the share of the serial ceiling ``1 / (1/D + 1/R)`` our throughput must reach.
CEILING_SHARE = 0.9


def warm_up_count(run: Run, count: int) -> int:
    """:func:`warm_up` in a full run; a quick run (whose numbers are not compared) warms up with one message per
    client thread."""
    return THREADS if run.quick else warm_up(count)


def one_client_count(run: Run, count: int) -> int:
    """Messages of the one-client run: a tenth of the loaded run's, at least 20 (5 in a quick run)."""
    return 5 if run.quick else max(20, count // 10)


def measure_dramatiq(run: Run, *, execution: str, count: int) -> dict[str, float]:
    """Closed-loop no-op messages through a worker that runs bodies locally or on Ray, with the CPU of the
    loaded run: this process (the producer), the worker's processes and, with Ray, the cluster's processes."""
    config = run.config(execution=execution)
    app = build(config)
    worker = run.start_worker(config, label=f"offload-{execution}", threads=THREADS)
    try:
        noop = app.actors["noop"]

        def send_and_wait(_: int) -> None:
            message = noop.send()
            app.backend.get_result(message, block=True, timeout=WAIT_MS)

        run_closed_loop(send_and_wait, count=warm_up_count(run, count), threads=THREADS)  # connections, Ray's pool
        groups = {"producer": ProcessSet(pids=(os.getpid(),)), "worker": run.worker_processes(worker)}
        if execution == "ray":
            groups["ray"] = run.ray_processes()
        with CpuMeter(groups) as cpu:
            loaded = run_closed_loop(send_and_wait, count=count, threads=THREADS)
        alone = run_closed_loop(send_and_wait, count=one_client_count(run, count), threads=1)
        return {**loaded, **cpu.summary(loaded["count"]), **one_client(alone)}
    finally:
        run.stop_worker(worker)
        app.broker.close()


def one_client(summary: dict[str, float]) -> dict[str, float]:
    """The latencies of one client at a time (nothing queues), under their own names."""
    return {"p50_ms_one_client": summary["p50_ms"], "p99_ms_one_client": summary["p99_ms"]}


def serial_ceiling(dramatiq_per_s: float, ray_per_s: float) -> float:
    """The throughput of a path that makes one round trip of each, in series, on the same machine."""
    return 1 / (1 / dramatiq_per_s + 1 / ray_per_s)


def run_case(run: Run) -> CaseReport:
    count = 24 if run.quick else 2000
    report = CaseReport(
        name="offload",
        title="Offload overhead",
        description=(
            f"No-op actor, Redis broker, one worker process with {THREADS} threads, {count} messages sent by "
            f"{THREADS} closed-loop client threads; latency is send to result available. Bare Ray is {THREADS} "
            "threads doing submit + wait + get of the same no-op. The one-client latencies come from a further "
            "run with a single client thread, where nothing queues: the path's own cost. CPU per message is the "
            "user + system time of the loaded run only, summed over the producer (the client threads' process; "
            "for bare Ray, its driver), the dramatiq worker's processes and every process of the Ray cluster "
            "(GCS server, raylet, agents, Ray workers), divided by the messages; the per-group columns split it. "
            "Redis's own CPU is not counted. On one machine an offloaded message pays for a Dramatiq round trip "
            "and a Ray round trip on the same cores, so the targets compare our path with the two together. "
            f"Every variant first sends {warm_up_count(run, count)} messages (tasks) the same way, unmeasured, so "
            "that Ray's worker processes are started before the measured run."
        ),
        chart_metrics=("throughput_per_s", "p50_ms", "p99_ms", "cpu_ms_per_msg"),
    )
    processes: dict[str, tuple[int, int]] = {}

    def counted(name: str, measure: Callable[[], dict[str, float]]) -> dict[str, float] | None:
        def measure_and_count() -> dict[str, float]:
            numbers = measure()
            processes[name] = (int(numbers.pop("cpu_processes")), int(numbers.pop("cpu_processes_exited")))
            return numbers

        return measure_variant(report, name, measure_and_count)

    plain = counted("plain Dramatiq", lambda: measure_dramatiq(run, execution="local", count=count))
    ours = counted("Ray offload (ours)", lambda: measure_dramatiq(run, execution="ray", count=count))
    bare = counted(
        "bare Ray",
        lambda: run.bare_ray(
            count=count,
            threads=THREADS,
            warm_up=warm_up_count(run, count),
            one_client=one_client_count(run, count),
        ),
    )

    allowed_cpu = plain["cpu_ms_per_msg"] + bare["cpu_ms_per_msg"] + CPU_ALLOWANCE_MS if plain and bare else None
    report.targets.append(
        Target(
            name=f"offload CPU per message vs plain Dramatiq + bare Ray + {CPU_ALLOWANCE_MS} ms",
            measured=ours["cpu_ms_per_msg"] if ours else None,
            baseline=allowed_cpu,
            goal=1.0,
            unit="ms CPU/message",
            higher_is_better=False,
            note=f"(b) spends at most (a)'s plus (c)'s CPU per message plus {CPU_ALLOWANCE_MS} ms",
        )
    )
    ceiling = serial_ceiling(plain["throughput_per_s"], bare["throughput_per_s"]) if plain and bare else None
    report.targets.append(
        Target(
            name="offload throughput vs plain Dramatiq and bare Ray in series, 1/(1/D + 1/R)",
            measured=ours["throughput_per_s"] if ours else None,
            baseline=ceiling,
            goal=CEILING_SHARE,
            unit="messages/s",
            note=f"(b) reaches at least {CEILING_SHARE:.0%} of the ceiling 1/(1/D + 1/R) of (a) and (c) in series",
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
    if ours and bare and ceiling:
        share, ceiling_share = ours["throughput_per_s"] / bare["throughput_per_s"], ceiling / bare["throughput_per_s"]
        report.notes.append(
            f"Information, not a target: (b)'s throughput is {share:.2f} of (c)'s "
            f"({ours['throughput_per_s']:,.0f} against {bare['throughput_per_s']:,.0f} messages/s); the serial "
            f"ceiling of (a) and (c) is {ceiling_share:.2f} of (c)'s."
        )
    if processes:
        counts = "; ".join(f"{name}: {seen} ({gone} exited during the run)" for name, (seen, gone) in processes.items())
        report.notes.append(f"Processes whose CPU was counted: {counts}.")
    print(render_text(report.to_json()), flush=True)
    return report
