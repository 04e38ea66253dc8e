"""Target 3, spill: results of 1 KiB to 64 MiB kept inline by Dramatiq's Redis backend, or spilled by ours to the
filesystem, S3 (moto's server) and GCS (the emulator).

Per store and size:
  - store + get: ``backend.store_result`` then ``backend.get_result`` in the producer, against the raw client
    doing the same put + get of the same encoded bytes (Redis SET + GET, a file write + read, S3 put_object +
    get_object, GCS upload + download);
  - Redis growth per result: ``MEMORY USAGE`` of each result's key, and ``INFO memory`` ``used_memory`` before and
    after a worker stored ``n`` results (results kept; server-wide, so other clients add noise);
  - worker peak RSS growth: sampled in the worker process while it produces and stores those results, after one
    result of the same size warmed it up (clients built, imports done), as in a long-lived worker.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from typing import Any

import dramatiq

from ._app import App, build, payload
from ._harness import KIB, MIB, CaseReport, NotAvailable, PeakRSS, Target, measure_variant, redis_used_memory
from ._run import Run
from ._services import unique

STORES = ("inline", "fs", "s3", "gcs")
STORE_NAMES = {"inline": "Dramatiq Redis (inline)", "fs": "ours: filesystem", "s3": "ours: S3", "gcs": "ours: GCS"}
WAIT_MS = 300_000


def size_label(size: int) -> str:
    return f"{size // MIB} MiB" if size >= MIB else f"{size // KIB} KiB"


def _timed(operation: Callable[[Any], Any], repeats: int, prepare: Callable[[], Any] = lambda: None) -> float:
    """The median time of ``operation(prepare())``, in milliseconds; ``prepare`` is not timed."""
    times = []
    for _ in range(repeats):
        prepared = prepare()
        started = time.perf_counter()
        operation(prepared)
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def raw_put_get(run: Run, store: str, data: bytes) -> Callable[[], Any]:
    """The raw client doing one put + get of ``data`` the way ``store`` would; returns ``(_, data read)``."""
    key = f"{run.redis.namespace}:raw:{unique('blob')}"
    if store == "inline":
        return lambda: (run.redis.client.set(key, data), run.redis.client.get(key))
    if store == "fs":
        path = os.path.join(run.work_dir, unique("raw"))

        def file_put_get() -> tuple[None, bytes]:
            with open(path, "wb") as file:
                file.write(data)
            with open(path, "rb") as file:
                return None, file.read()

        return file_put_get
    if store == "s3":
        client, bucket = run.s3.client(), run.s3.bucket
        return lambda: (
            client.put_object(Bucket=bucket, Key=key, Body=data),
            client.get_object(Bucket=bucket, Key=key)["Body"].read(),
        )
    blob = run.gcs.client().bucket(run.gcs.bucket).blob(key)
    return lambda: (blob.upload_from_string(data), blob.download_as_bytes())


def _ignoring_argument(operation: Callable[[], Any]) -> Callable[[Any], Any]:
    return lambda _: operation()


def with_codec(app: App, put_get: Callable[[], Any], size: int) -> Callable[[Any], Any]:
    """The raw put + get plus what any result backend also does: encode the value before, decode it after."""
    value = payload(size)

    def operation(_: Any) -> Any:
        app.backend.encoder.encode(value)  # type: ignore[arg-type]
        _, data = put_get()
        return app.backend.encoder.decode(data)

    return operation


def fresh_payloads(size: int) -> Callable[[], str]:
    """Payloads of ``size`` bytes, each distinct, so each is a new blob."""
    return lambda: payload(size, unique("result"))


def store_and_get(app: App, size: int) -> Callable[[str], Any]:
    """Our (or Dramatiq's) backend storing then reading one result of ``size`` bytes, as a worker and a caller do."""

    def operation(value: str) -> None:
        message: dramatiq.Message[Any] = dramatiq.Message(
            queue_name="bench", actor_name="payload", args=(size,), kwargs={}, options={}
        )
        app.backend.store_result(message, value, 600_000)
        if app.backend.get_result(message) != value:
            raise AssertionError("the result read back differs from the result stored")

    return operation


def measure_store(
    run: Run, store: str, sizes: list[int], results_per_size: dict[int, int]
) -> dict[int, dict[str, float]]:
    config = run.config(**run.store_config(store))
    app = build(config)
    numbers: dict[int, dict[str, float]] = {}
    worker = run.start_worker(config, label=f"spill-{store}", threads=8)
    rss = PeakRSS(worker.worker_pid)
    try:
        for size in sizes:
            repeats = 3 if size >= 16 * MIB else 7
            data = app.backend.encoder.encode(payload(size))  # type: ignore[arg-type]
            ours_ms = _timed(store_and_get(app, size), repeats, fresh_payloads(size))
            raw = raw_put_get(run, store, data)
            raw_ms = _timed(_ignoring_argument(raw), repeats)
            raw_codec_ms = _timed(with_codec(app, raw, size), repeats)
            count = results_per_size[size]
            produce = app.actors["payload"]
            # One result of this size first: clients, imports and allocator arenas are warm, as in a long-lived worker.
            produce.send(size, unique("result")).get_result(backend=app.backend, block=True, timeout=WAIT_MS)
            before = redis_used_memory(run.redis.client)
            keys = []
            with rss.phase() as memory:
                for _ in range(count):
                    message = produce.send(size, unique("result"))
                    if len(message.get_result(backend=app.backend, block=True, timeout=WAIT_MS)) != size:
                        raise AssertionError("the worker's result has the wrong size")
                    keys.append(app.backend.build_message_key(message))
            growth = (redis_used_memory(run.redis.client) - before) / count
            key_bytes = sum(run.redis.client.memory_usage(key, samples=0) or 0 for key in keys) / count
            numbers[size] = {
                "payload_bytes": float(len(data)),
                "store_get_ms": ours_ms,
                "raw_put_get_ms": raw_ms,
                "raw_put_get_with_codec_ms": raw_codec_ms,
                "redis_growth_per_result_bytes": growth,
                "redis_key_bytes_per_result": key_bytes,
                **memory,
            }
            run.redis.flush()
    finally:
        rss.close()
        run.stop_worker(worker)
        app.broker.close()
    return numbers


def run_case(run: Run) -> CaseReport:
    sizes = [KIB, MIB] if run.quick else [KIB, MIB, 16 * MIB, 64 * MIB]
    results_per_size = {size: (3 if run.quick else (4 if size >= 16 * MIB else 10)) for size in sizes}
    report = CaseReport(
        name="spill",
        title="Spill",
        description=(
            "Results of " + ", ".join(size_label(size) for size in sizes) + ": store + get_result in the producer "
            "against the raw client's put + get of the same bytes; Redis INFO used_memory growth per result and "
            "worker peak RSS growth while one worker process produces results of that size."
        ),
        chart_metrics=("store_get_ms", "raw_put_get_ms", "raw_put_get_with_codec_ms", "peak_growth_mib"),
    )
    for store in STORES:
        names = {size: f"{STORE_NAMES[store]}, {size_label(size)}" for size in sizes}
        try:
            measured = measure_store(run, store, sizes, results_per_size)
        except NotAvailable as error:
            report.unavailable.update({name: str(error) for name in names.values()})
        else:
            for size, name in names.items():
                measure_variant(report, name, _known(measured[size]))
        if store != "inline":
            for size in sizes:
                _spill_targets(report, store, size)
    return report


def _known(numbers: dict[str, float]) -> Callable[[], dict[str, float]]:
    return lambda: numbers


def _spill_targets(report: CaseReport, store: str, size: int) -> None:
    name = f"{STORE_NAMES[store]}, {size_label(size)}"
    numbers = report.variants.get(name)
    if size < MIB:
        return  # kept inline under the default 1 MiB threshold: nothing spills
    report.targets.append(
        Target(
            name=f"{name}: Redis growth per spilled result",
            measured=numbers["redis_key_bytes_per_result"] if numbers else None,
            baseline=512.0,
            goal=1.0,
            unit="bytes",
            higher_is_better=False,
            note=(
                "under 512 bytes of Redis memory per spilled result (MEMORY USAGE of the result's key; the INFO "
                "used_memory growth is reported too, but it is server-wide and other clients add noise)"
            ),
        )
    )
    report.targets.append(
        Target(
            name=f"{name}: store + hydrate vs raw client",
            measured=numbers["store_get_ms"] if numbers else None,
            baseline=numbers["raw_put_get_ms"] if numbers else None,
            goal=1.5,
            unit="ms",
            higher_is_better=False,
            note="within 1.5x of the raw client's put + get of the same bytes",
        )
    )
    report.targets.append(
        Target(
            name=f"{name}: worker peak RSS growth vs payload",
            measured=numbers["peak_growth_mib"] if numbers else None,
            baseline=numbers["payload_bytes"] / MIB if numbers else None,
            goal=3.0,
            unit="MiB",
            higher_is_better=False,
            note="worker peak RSS growth under 3x the payload",
        )
    )
