"""Big inputs by reference: a 16 or 64 MiB bytes argument on the Redis broker, plain Dramatiq (the bytes as a
base64 string argument, the only way JSON carries them) against ours (``max_inline_arg_bytes``: the bytes go to a
filesystem store at send, the message carries a reference).

- Round trip: send -> body (returns the argument's size) -> result, one message at a time, local execution.
- Broker memory: Redis ``MEMORY USAGE`` of the queue's keys per queued message, with no worker running.
- Worker peak RSS growth for an actor on Ray (ours reads the argument inside the Ray task), against plain
  Dramatiq's local worker, which decodes the whole message.
"""

from __future__ import annotations

import base64
import os
import time
from typing import Any

import redis

from ._app import App, build
from ._harness import MIB, CaseReport, PeakRSS, Target, latency_summary, measure_variant
from ._run import Run

WAIT_MS = 600_000


def _argument(size: int, *, by_reference: bool) -> Any:
    data = os.urandom(size)
    return data if by_reference else base64.b64encode(data).decode("ascii")


def _config(run: Run, *, by_reference: bool, execution: str = "local") -> Any:
    if not by_reference:
        return run.config(execution=execution)
    return run.config(execution=execution, max_inline_arg_bytes=str(64 * 1024), **run.store_config("fs"))


def round_trip(run: Run, *, by_reference: bool, size: int, count: int, execution: str = "local") -> dict[str, float]:
    config = _config(run, by_reference=by_reference, execution=execution)
    app = build(config)
    worker = run.start_worker(config, label=f"arguments-{execution}-{'ref' if by_reference else 'b64'}", threads=2)
    rss = PeakRSS(worker.worker_pid)
    try:
        consume = app.actors["consume"]
        argument = _argument(size, by_reference=by_reference)
        expected = len(argument)
        _wait(app, consume.send(argument))  # warm up (and, on Ray, start a Ray worker)
        latencies = []
        with rss.phase() as memory:
            started = time.perf_counter()
            for _ in range(count):
                argument = _argument(size, by_reference=by_reference)  # a new blob each time
                sent = time.perf_counter()
                if _wait(app, consume.send(argument)) != expected:
                    raise AssertionError("the body saw an argument of the wrong size")
                latencies.append(time.perf_counter() - sent)
            elapsed = time.perf_counter() - started
        return {**latency_summary(latencies, elapsed), **memory, "payload_mib": size / MIB}
    finally:
        rss.close()
        run.stop_worker(worker)
        app.broker.close()


def _wait(app: App, message: Any) -> Any:
    return message.get_result(backend=app.backend, block=True, timeout=WAIT_MS)


def broker_memory(run: Run, *, by_reference: bool, size: int, count: int) -> dict[str, float]:
    """What the queued messages take in Redis: ``MEMORY USAGE`` of the queue's keys (the message hash and the
    queue list), so other clients of the same server add no noise (``used_memory`` growth would count theirs)."""
    config = _config(run, by_reference=by_reference)
    app = build(config)
    client = redis.Redis.from_url(config.redis_url)
    keys = (f"{config.namespace}:{config.queue}.msgs", f"{config.namespace}:{config.queue}")
    try:
        consume = app.actors["consume"]
        for _ in range(count):
            consume.send(_argument(size, by_reference=by_reference))
        bodies = client.hvals(keys[0])
        held = sum(client.memory_usage(key, samples=0) or 0 for key in keys)
        return {
            "bytes_per_message": held / count,
            "message_bytes": max(len(body) for body in bodies),
            "payload_mib": size / MIB,
        }
    finally:
        app.broker.flush_all()
        client.close()
        app.broker.close()


def run_case(run: Run) -> CaseReport:
    sizes = (1 * MIB,) if run.quick else (16 * MIB, 64 * MIB)
    count = 2 if run.quick else 5
    report = CaseReport(
        name="arguments",
        title="Big inputs by reference",
        description=(
            f"A bytes argument of {', '.join(f'{size // MIB} MiB' for size in sizes)} on the Redis broker, {count} "
            "messages one at a time: plain Dramatiq with the bytes as a base64 string, against ours with "
            "max_inline_arg_bytes (the bytes go to a filesystem store at send). Broker memory is Redis MEMORY USAGE "
            "of the queue's keys per queued message, with no worker running."
        ),
        chart_metrics=("p50_ms", "peak_growth_mib"),
    )
    for size in sizes:
        label = f"{size // MIB} MiB"
        plain = measure_variant(
            report,
            f"plain Dramatiq, base64, local, {label}",
            lambda s=size: round_trip(run, by_reference=False, size=s, count=count),
        )
        ours = measure_variant(
            report,
            f"by reference (ours), local, {label}",
            lambda s=size: round_trip(run, by_reference=True, size=s, count=count),
        )
        on_ray = measure_variant(
            report,
            f"by reference (ours), on Ray, {label}",
            lambda s=size: round_trip(run, by_reference=True, size=s, count=count, execution="ray"),
        )
        measure_variant(
            report,
            f"plain Dramatiq, queued, {label}",
            lambda s=size: broker_memory(run, by_reference=False, size=s, count=count),
        )
        ours_memory = measure_variant(
            report,
            f"by reference (ours), queued, {label}",
            lambda s=size: broker_memory(run, by_reference=True, size=s, count=count),
        )
        if size == sizes[-1]:
            report.targets.append(
                Target(
                    name=f"round trip, {label}: ours / plain Dramatiq",
                    measured=ours["p50_ms"] if ours else None,
                    baseline=plain["p50_ms"] if plain else None,
                    goal=0.5,
                    unit="ms (p50)",
                    higher_is_better=False,
                    note="at most half of plain Dramatiq's",
                )
            )
        report.targets.append(
            Target(
                name=f"broker memory per queued message, {label}",
                measured=ours_memory["bytes_per_message"] / 1024 if ours_memory else None,
                baseline=1.0,
                goal=1.0,
                unit="KiB (baseline: the 1 KiB bound; plain Dramatiq's is in the variants)",
                higher_is_better=False,
                note="under 1 KiB per queued message",
            )
        )
        report.targets.append(
            Target(
                name=f"worker peak RSS growth on Ray, {label}, / payload",
                measured=on_ray["peak_growth_mib"] if on_ray else None,
                baseline=size / MIB,
                goal=0.1,
                unit="MiB (baseline: the payload)",
                higher_is_better=False,
                note="the Dramatiq worker never holds the payload: at most 0.1x of it",
            )
        )
    return report
