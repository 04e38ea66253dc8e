"""Target 3, spill: results of 1 KiB to 64 MiB kept inline by Dramatiq's Redis backend, or spilled by ours to the
filesystem, S3 (moto's server) and GCS (the emulator); and ``bytes`` and numpy results of 1 to 256 MiB spilled by
ours with the codec layer.

The raw client (the baseline) does the same requests as the store, each put under a key or file of its own (as
each result is a new blob), kept until the size is done: Redis SET + GET, a file write (fsynced, as the filesystem
store does by default) + read, S3 put_object (a multipart upload above the store's threshold) + get_object, GCS
upload + download. See :class:`RawClient`.

Per store and size, for JSON results (a ``str`` payload, the rows named by store and size only):
  - store + get: ``backend.store_result`` then ``backend.get_result`` in the producer, against the raw client
    doing the same put + get of the same encoded bytes plus the same JSON encode + decode of the value;
  - Redis growth per result: ``MEMORY USAGE`` of each result's key, and ``INFO memory`` ``used_memory`` before and
    after a worker stored ``n`` results (results kept; server-wide, so other clients add noise);
  - worker peak RSS growth: sampled in the worker process while it produces and stores those results, after one
    result of the same size warmed it up (clients built, imports done), as in a long-lived worker.

Per spilling store and size, for ``bytes`` and numpy float64 results (rows named "bytes" and "numpy"), on the
filesystem twice (the default ``fsync=True`` against fsynced raw writes, and ``fsync=False`` against plain ones):
  - store + get through ``SpillingBackend(max_inline_bytes=0)`` (codecs raw and npy), against the raw client's
    put + get of the same bytes (for numpy: ``np.save`` to a BytesIO before the put, ``np.load`` after the get),
    taken in turns (ours, raw, ours, raw...) so that a busy moment lands on both;
  - peak RSS growth of the producer process (not a worker: the benchmarks' worker actors return strings) during
    ``store_result`` alone (what a worker does with a result) and during ``get_result`` alone (what a caller does;
    it includes the returned value itself), each over the RSS just before it, freed heap memory returned to the
    system first. A size whose measurement would take more than about a minute on a store is skipped, and the
    report says so.

Compression (zstd, gzip) and AES-GCM encryption throughput are information rows (see ``benchmarks.codecs``).
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import os
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import dramatiq

from ._app import App, build, payload
from ._harness import KIB, MIB, CaseReport, NotAvailable, PeakRSS, Target, measure_variant, redis_used_memory
from ._run import Run
from ._services import unique
from .codecs import add_codec_rows

STORES = ("inline", "fs", "s3", "gcs")
STORE_NAMES = {
    "inline": "Dramatiq Redis (inline)",
    "fs": "ours: filesystem",
    "fs-nofsync": "ours: filesystem (fsync=False)",
    "s3": "ours: S3",
    "gcs": "ours: GCS",
}
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


class RawClient:
    """The raw client of ``store`` doing a put + get of bytes with the same requests as our store, each put under
    a key (a file) of its own, as a store writes each result as a new blob; the keys and files stay until
    :meth:`delete`, as the store's blobs do.

    - Overwriting one key would be cheaper than what any store does: a file truncated and rewritten never reaches
      the disk (its dirty pages are dropped), and moto and the emulator free the old object at once.
    - Files are fsynced before they are closed when ``fsync`` is true, as the filesystem store does by default:
      a durable write against a durable write. Without it, a file write costs memory speed until the kernel's
      dirty-page limit is reached, and disk speed after.
    - On S3, payloads over ``multipart_threshold`` go up in a multipart upload of ``part_size`` parts, as the
      store sends them (moto's multipart completion costs about 1.8 s more than one PUT at 256 MiB).
    """

    def __init__(
        self,
        run: Run,
        store: str,
        *,
        fsync: bool = True,
        multipart_threshold: int = 64 * MIB,
        part_size: int = 16 * MIB,
    ) -> None:
        self.run = run
        self.store = store
        self.fsync = fsync
        self.multipart_threshold = multipart_threshold
        self.part_size = part_size
        self.prefix = f"{run.redis.namespace}:raw:{unique('blob')}"
        self.keys: list[str] = []
        if store == "fs":
            self.directory = os.path.join(run.work_dir, unique("raw"))
            os.makedirs(self.directory)
        elif store == "s3":
            self.client, self.bucket = run.s3.client(), run.s3.bucket
        elif store == "gcs":
            self.gcs_bucket = run.gcs.client().bucket(run.gcs.bucket)

    def put_get(self, data: bytes) -> bytes:
        """Put ``data`` under a new key, then get it back."""
        key = f"{self.prefix}-{len(self.keys)}"
        self.keys.append(key)
        if self.store == "inline":
            self.run.redis.client.set(key, data)
            read = self.run.redis.client.get(key)
            if not isinstance(read, bytes):
                raise AssertionError("Redis lost the raw key")
            return read
        if self.store == "fs":
            path = os.path.join(self.directory, key.rsplit(":", 1)[-1])
            with open(path, "wb") as file:
                file.write(data)
                if self.fsync:
                    file.flush()
                    os.fsync(file.fileno())
            with open(path, "rb") as file:
                return file.read()
        if self.store == "s3":
            self._s3_put(key, data)
            body: bytes = self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read()
            return body
        blob = self.gcs_bucket.blob(key)
        blob.upload_from_string(data)
        downloaded: bytes = blob.download_as_bytes()
        return downloaded

    def _s3_put(self, key: str, data: bytes) -> None:
        if len(data) <= self.multipart_threshold:
            self.client.put_object(Bucket=self.bucket, Key=key, Body=data)
            return
        upload_id = self.client.create_multipart_upload(Bucket=self.bucket, Key=key)["UploadId"]
        parts = []
        for number, start in enumerate(range(0, len(data), self.part_size), start=1):
            chunk = data[start : start + self.part_size]
            answer = self.client.upload_part(
                Bucket=self.bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=chunk
            )
            parts.append({"PartNumber": number, "ETag": answer["ETag"]})
        self.client.complete_multipart_upload(
            Bucket=self.bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts}
        )

    def delete(self) -> None:
        """Delete the keys and files written so far, so the servers (moto, the emulator) let go of their bytes."""
        for key in self.keys:
            if self.store == "inline":
                self.run.redis.client.delete(key)
            elif self.store == "fs":
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(os.path.join(self.directory, key.rsplit(":", 1)[-1]))
            elif self.store == "s3":
                self.client.delete_object(Bucket=self.bucket, Key=key)
            else:
                with contextlib.suppress(Exception):
                    self.gcs_bucket.blob(key).delete()
        self.keys.clear()


def raw_put_get(client: RawClient, data: bytes) -> Callable[[], Any]:
    """The raw client doing one put + get of ``data`` the way its store would; returns ``(_, data read)``."""
    return lambda: (None, client.put_get(data))


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
            repeats = 2 if run.quick else (3 if size >= 16 * MIB else 7)
            data = app.backend.encoder.encode(payload(size))  # type: ignore[arg-type]
            ours_ms = _timed(store_and_get(app, size), repeats, fresh_payloads(size))
            client = raw_client_for(run, store, getattr(app.backend, "store", None))
            raw = raw_put_get(client, data)
            raw_ms = _timed(_ignoring_argument(raw), repeats)
            raw_codec_ms = _timed(with_codec(app, raw, size), repeats)
            client.delete()
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
    sizes = [MIB] if run.quick else [KIB, MIB, 16 * MIB, 64 * MIB]
    results_per_size = {size: (2 if run.quick else (4 if size >= 16 * MIB else 10)) for size in sizes}
    report = CaseReport(
        name="spill",
        title="Spill",
        description=(
            "The raw client (the baseline) sends the same requests as the store, each result under a new key or "
            "file: files fsynced as the filesystem store does by default, a multipart upload on S3 above 64 MiB. "
            "JSON results of " + ", ".join(size_label(size) for size in sizes) + " (rows named by store and size): "
            "store + get_result in the producer against the raw client's put + get of the same bytes plus the same "
            "JSON encode + decode; Redis INFO used_memory growth per result and worker peak RSS growth while one "
            "worker process produces results of that size. bytes and numpy float64 results of "
            + ", ".join(size_label(size) for size in codec_sizes(run.quick))
            + " spilled by SpillingBackend(max_inline_bytes=0): store + get_result against the raw client's put + "
            "get (numpy: np.save + put + get + np.load), in turns, and the peak RSS growth of a producer process of "
            "its own during store_result and get_result (not a worker's); the filesystem rows twice, with fsync "
            "(the default, against fsynced raw writes) and with fsync=False (against plain writes). zstd, gzip and "
            "AES-GCM throughput are information rows."
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
    for store in CODEC_STORES:
        measure_codec_store(run, store, report, codec_sizes(run.quick))
    add_codec_rows(report, quick=run.quick)
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
            name=f"{name}: store + hydrate vs raw client + JSON codec",
            measured=numbers["store_get_ms"] if numbers else None,
            baseline=numbers["raw_put_get_with_codec_ms"] if numbers else None,
            goal=1.5,
            unit="ms",
            higher_is_better=False,
            note="within 1.5x of the raw client's put + get of the same bytes plus the same JSON encode + decode",
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


# --- bytes and numpy results through the codec layer --------------------------------------------------------

#: The stores of the bytes and numpy rows: the filesystem twice, durable (fsync, the default) and not.
CODEC_STORES = ("fs", "fs-nofsync", "s3", "gcs")
CODEC_KINDS = ("bytes", "numpy")
#: Goal of store + get against the raw client, per kind.
CODEC_GOALS = {"bytes": 1.2, "numpy": 1.3}
#: A size whose measurement of one variant would take longer than this (seconds) is skipped for that store.
VARIANT_BUDGET_S = 60.0
RESULT_TTL_MS = 600_000


def codec_sizes(quick: bool) -> list[int]:
    return [MIB] if quick else [MIB, 16 * MIB, 64 * MIB, 256 * MIB]


def codec_repeats(size: int, quick: bool) -> int:
    if quick:
        return 2
    if size >= 64 * MIB:
        return 3
    return 5 if size >= 16 * MIB else 7


def spilling_backend(config: Any, variant: str) -> tuple[Any, Any]:
    """Our backend over Redis and the store ``config`` names (``variant`` ``fs-nofsync``: a filesystem store with
    ``fsync=False``), spilling every result; and that store."""
    from dramatiq.results.backends.redis import RedisBackend

    from ._app import build_store

    if variant == "fs-nofsync":
        from dramatiq_ray import FilesystemStore

        store = FilesystemStore(config.store_location, fsync=False)
    else:
        store = build_store(config)
    try:
        from dramatiq_ray.results.backend import SpillingBackend
    except Exception as error:
        raise NotAvailable(f"dramatiq_ray.results.backend does not import: {error}") from error
    redis_backend = RedisBackend(url=config.redis_url, namespace=f"{config.namespace}-results")  # type: ignore[no-untyped-call]
    return SpillingBackend(redis_backend, store=store, max_inline_bytes=0), store


class Values:
    """Fresh values of one kind and size (each distinct, so each is a new blob), made outside any timing."""

    def __init__(self, kind: str, size: int) -> None:
        import numpy

        self.kind = kind
        generator = numpy.random.default_rng(size)
        self.base: Any = generator.bytes(size) if kind == "bytes" else generator.standard_normal(size // 8)
        self.count = 0

    def __call__(self) -> Any:
        self.count += 1
        if self.kind == "bytes":
            tag = unique("result").encode()
            return tag + self.base[len(tag) :]
        array = self.base.copy()
        array[0] = self.count
        return array

    def check(self, value: Any, result: Any) -> None:
        import numpy

        same = value == result if self.kind == "bytes" else numpy.array_equal(value, result)
        if not same or type(result) is not type(value):
            raise AssertionError(f"the {self.kind} result read back differs from the result stored")


def _message() -> dramatiq.Message[Any]:
    return dramatiq.Message(queue_name="bench", actor_name="payload", args=(), kwargs={}, options={})


def ours_store_get(backend: Any) -> Callable[[Any], Any]:
    def operation(value: Any) -> Any:
        message = _message()
        backend.store_result(message, value, RESULT_TTL_MS)
        return backend.get_result(message)

    return operation


def raw_baseline(raw: RawClient, kind: str) -> Callable[[Any], Any]:
    """The raw client's put + get; for numpy, ``np.save`` to a BytesIO before and ``np.load`` after."""
    if kind == "bytes":
        return raw.put_get
    import io

    import numpy

    def operation(array: Any) -> Any:
        buffer = io.BytesIO()
        numpy.save(buffer, array, allow_pickle=False)
        data = raw.put_get(buffer.getvalue())
        return numpy.load(io.BytesIO(data), allow_pickle=False)

    return operation


def timed_pair(
    ours: Callable[[Any], Any], raw: Callable[[Any], Any], values: Values, repeats: int
) -> tuple[float, float]:
    """The median times of ``ours(value)`` and ``raw(value)`` over fresh values, in milliseconds, taken in turns
    (ours, raw, ours, raw...) so that a busy moment on the machine lands on both; results are checked outside the
    timing. Stops early (at least one pair done) once the pairs took longer than twice the variant budget."""
    times: tuple[list[float], list[float]] = ([], [])
    spent = 0.0
    for _ in range(repeats):
        for operation, kept in zip((ours, raw), times, strict=True):
            value = values()
            started = time.perf_counter()
            result = operation(value)
            elapsed = time.perf_counter() - started
            values.check(value, result)
            del value, result
            kept.append(elapsed * 1000)
            spent += elapsed
        if spent > 2 * VARIANT_BUDGET_S:
            break
    return statistics.median(times[0]), statistics.median(times[1])


def release_memory() -> None:
    """Collect garbage and hand freed heap memory back to the system, so RSS growth counts new memory only."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise OSError(f"no {field} in /proc/self/status")


def peak_growth_mib(operation: Callable[[], Any]) -> tuple[float, Any]:
    """Run ``operation`` and return (this process's peak RSS growth over its RSS just before, in MiB; its result).

    The peak is the kernel's (``VmHWM``, reset through ``/proc/self/clear_refs``), so short peaks are not missed;
    where that cannot be reset, RSS is sampled in a thread instead."""
    release_memory()
    try:
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")
        before = _status_kib("VmRSS")
        result = operation()
        return (_status_kib("VmHWM") - before) / KIB, result
    except OSError:
        sampler = PeakRSS(os.getpid(), interval=0.002)
        try:
            with sampler.phase() as memory:
                result = operation()
        finally:
            sampler.close()
        return memory["peak_growth_mib"], result


def measure_rss_here(config: Any, variant: str, kind: str, size: int) -> dict[str, float]:
    """In this process: one warm-up round trip of ``size``, then the peak RSS growth of ``store_result`` alone
    and of ``get_result`` alone for a fresh value."""
    backend, _ = spilling_backend(config, variant)
    values = Values(kind, size)
    warm = values()
    values.check(warm, ours_store_get(backend)(warm))
    del warm
    value = values()
    message = _message()
    store_growth, _ = peak_growth_mib(lambda: backend.store_result(message, value, RESULT_TTL_MS))
    get_growth, result = peak_growth_mib(lambda: backend.get_result(message))
    values.check(value, result)
    return {"store_peak_growth_mib": store_growth, "get_peak_growth_mib": get_growth}


def rss_child() -> None:
    """The entry point of the process :func:`measure_rss` starts: prints its numbers, by kind, as one JSON line."""
    import json
    import sys

    from ._app import AppConfig

    config = AppConfig.from_env()
    numbers = {kind: measure_rss_here(config, sys.argv[1], kind, int(sys.argv[3])) for kind in sys.argv[2].split(",")}
    print(json.dumps(numbers), flush=True)


def measure_rss(config: Any, variant: str, kinds: Sequence[str], size: int) -> dict[str, dict[str, float]]:
    """:func:`measure_rss_here` for each of ``kinds``, one after the other, in a process of their own: the S3 and
    GCS servers run in the harness's process, so its RSS would count the servers' copies of the blob too."""
    import json
    import subprocess
    import sys

    from ._services import subprocess_env

    env = subprocess_env(**{f"BENCH_{name.upper()}": value for name, value in config.as_env().items()})
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from benchmarks.spill import rss_child; rss_child()",
            variant,
            ",".join(kinds),
            str(size),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    if result.returncode != 0:
        raise RuntimeError(
            f"the RSS measurement of {', '.join(kinds)} {size_label(size)} failed:\n{result.stderr[-4000:]}"
        )
    measured = json.loads(result.stdout.strip().splitlines()[-1])
    return {kind: {key: float(value) for key, value in numbers.items()} for kind, numbers in measured.items()}


def measure_codec_store(run: Run, store: str, report: CaseReport, sizes: list[int]) -> None:
    """The ``bytes`` and numpy rows and targets of one store, for every size it can do within the budget."""
    names = {
        (kind, size): f"{STORE_NAMES[store]}, {kind}, {size_label(size)}" for kind in CODEC_KINDS for size in sizes
    }
    try:
        config = run.config(**run.store_config(store.split("-", 1)[0]))
        backend, blob_store = spilling_backend(config, store)
        raw = raw_client_for(run, store, blob_store)
    except NotAvailable as error:
        report.unavailable.update({name: str(error) for name in names.values()})
        return
    last: tuple[int, float] | None = None  # (size, seconds of the slowest single store + get at that size)
    for size in sizes:
        repeats = codec_repeats(size, run.quick)
        if last is not None:
            projected = last[1] * size / last[0] * repeats
            if projected > VARIANT_BUDGET_S:
                reason = (
                    f"skipped: at {size_label(last[0])} one store + get took {last[1]:.1f} s on this store, so "
                    f"{repeats} at {size_label(size)} would take about {projected:.0f} s per variant, over the "
                    f"{VARIANT_BUDGET_S:.0f} s budget"
                )
                for kind in CODEC_KINDS:
                    report.unavailable[names[kind, size]] = reason
                    print(f"  {names[kind, size]}: {reason}", flush=True)
                continue
        slowest = 0.0
        # A quick run measures every kind's RSS in one process: starting one is most of what a quick size costs.
        rss_by_kind = measure_rss(config, store, CODEC_KINDS, size) if run.quick else {}
        for kind in CODEC_KINDS:
            values = Values(kind, size)
            ours_ms, raw_ms = timed_pair(ours_store_get(backend), raw_baseline(raw, kind), values, repeats)
            del values
            rss = rss_by_kind[kind] if run.quick else measure_rss(config, store, (kind,), size)[kind]
            baseline_key = "raw_put_get_ms" if kind == "bytes" else "raw_put_get_with_codec_ms"
            numbers = {
                "payload_bytes": float(size),
                "store_get_ms": ours_ms,
                baseline_key: raw_ms,
                **rss,
                "peak_growth_mib": max(rss.values()),
            }
            measure_variant(report, names[kind, size], _known(numbers))
            slowest = max(slowest, ours_ms / 1000, raw_ms / 1000)
            _clean_up(run, blob_store, raw)
        last = (size, slowest)
    for kind in CODEC_KINDS:
        for size in sizes:
            _codec_targets(report, names[kind, size], kind, size)


def raw_client_for(run: Run, store: str, blob_store: Any) -> RawClient:
    """The raw client doing what ``blob_store`` does: the same fsync, the same multipart threshold and parts."""
    return RawClient(
        run,
        store.split("-", 1)[0],
        fsync=getattr(blob_store, "fsync", True),
        multipart_threshold=getattr(blob_store, "multipart_threshold", 64 * MIB),
        part_size=getattr(blob_store, "part_size", 16 * MIB),
    )


def _clean_up(run: Run, blob_store: Any, raw: RawClient) -> None:
    """Delete the blobs and keys written so far, so the servers (moto, the emulator) and Redis let go of them."""
    cutoff = time.time() + 3600
    for info in list(blob_store.list_blobs()):
        blob_store.delete_blob(info, cutoff=cutoff)
    raw.delete()
    run.redis.flush()
    release_memory()


def _codec_targets(report: CaseReport, name: str, kind: str, size: int) -> None:
    numbers = report.variants.get(name)
    baseline_key = "raw_put_get_ms" if kind == "bytes" else "raw_put_get_with_codec_ms"
    baseline_what = "put + get of the same bytes" if kind == "bytes" else "np.save + put + get + np.load"
    goal = CODEC_GOALS[kind]
    report.targets.append(
        Target(
            name=f"{name}: store + get vs raw client",
            measured=numbers["store_get_ms"] if numbers else None,
            baseline=numbers[baseline_key] if numbers else None,
            goal=goal,
            unit="ms",
            higher_is_better=False,
            note=f"{kind} results of {size_label(size)}: within {goal}x of the raw client's {baseline_what}",
        )
    )
    report.targets.append(
        Target(
            name=f"{name}: producer peak RSS growth (store or get) vs payload",
            measured=numbers["peak_growth_mib"] if numbers else None,
            baseline=size / MIB,
            goal=1.5,
            unit="MiB",
            higher_is_better=False,
            note=(
                f"{kind} results of {size_label(size)}: peak RSS growth under 1.5x the payload, measured in a "
                "producer process of its own (not a worker) during store_result or get_result, whichever grew "
                "more; get_result's growth includes the returned value"
            ),
        )
    )
