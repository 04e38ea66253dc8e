"""Measuring: timers, percentiles, peak RSS, Redis memory, the machine, and the result types every case fills.

A case returns a :class:`CaseReport`: the variants it measured (our path and its baselines, each a flat dict of
numbers) and the targets of the issue, each with the measured value, its baseline, their ratio and pass/short.
"""

from __future__ import annotations

import math
import os
import platform
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

import psutil

MIB = 1024 * 1024
KIB = 1024


class NotAvailable(Exception):
    """A path cannot be measured in this run (its module is missing or broken); the reason goes in the report."""


# --- numbers -------------------------------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100) of ``values``, linearly interpolated; NaN when there are none."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def latency_summary(latencies_s: Sequence[float], elapsed_s: float) -> dict[str, float]:
    """Throughput and p50/p99 latency (milliseconds) of ``len(latencies_s)`` operations done in ``elapsed_s``."""
    return {
        "count": float(len(latencies_s)),
        "elapsed_s": elapsed_s,
        "throughput_per_s": len(latencies_s) / elapsed_s if elapsed_s > 0 else math.nan,
        "p50_ms": percentile(latencies_s, 50) * 1000,
        "p99_ms": percentile(latencies_s, 99) * 1000,
    }


def run_closed_loop(operation: Callable[[int], None], *, count: int, threads: int) -> dict[str, float]:
    """Run ``operation(i)`` for ``i`` in ``range(count)`` from ``threads`` threads, each starting the next one as
    soon as its previous one finished; return throughput and latency percentiles."""
    latencies: list[float] = []
    lock = threading.Lock()
    counter = iter(range(count))
    errors: list[BaseException] = []

    def loop() -> None:
        while True:
            with lock:
                index = next(counter, None)
            if index is None or errors:
                return
            start = time.perf_counter()
            try:
                operation(index)
            except BaseException as error:
                errors.append(error)
                return
            elapsed = time.perf_counter() - start
            with lock:
                latencies.append(elapsed)

    workers = [threading.Thread(target=loop, daemon=True) for _ in range(threads)]
    started = time.perf_counter()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    elapsed = time.perf_counter() - started
    if errors:
        raise errors[0]
    return latency_summary(latencies, elapsed)


# --- memory --------------------------------------------------------------------------------------------------


class PeakRSS:
    """Sample a process's resident set size every ``interval`` seconds in a thread and keep the peak.

    Use :meth:`phase` to measure one stretch of work: it yields a dict that receives ``baseline_rss_mib`` (before
    the work), ``peak_rss_mib`` and ``peak_growth_mib`` (peak minus baseline) when the block ends.
    """

    def __init__(self, pid: int, *, interval: float = 0.005) -> None:
        self.process = psutil.Process(pid)
        self.interval = interval
        self._peak = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, name="peak-rss", daemon=True)
        self._thread.start()

    def current(self) -> int:
        return int(self.process.memory_info().rss)

    def _sample(self) -> None:
        while not self._stop.is_set():
            try:
                rss = self.current()
            except psutil.Error:
                return
            with self._lock:
                self._peak = max(self._peak, rss)
            self._stop.wait(self.interval)

    @contextmanager
    def phase(self) -> Iterator[dict[str, float]]:
        numbers: dict[str, float] = {}
        baseline = self.current()
        with self._lock:
            self._peak = baseline
        yield numbers
        with self._lock:
            peak = max(self._peak, self.current())
        numbers["baseline_rss_mib"] = baseline / MIB
        numbers["peak_rss_mib"] = peak / MIB
        numbers["peak_growth_mib"] = (peak - baseline) / MIB

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def redis_used_memory(client: Any) -> int:
    """Redis ``INFO memory`` ``used_memory`` in bytes (the whole server: other clients add noise)."""
    return int(client.info("memory")["used_memory"])


# --- the machine ---------------------------------------------------------------------------------------------


def describe_machine() -> dict[str, Any]:
    """What the numbers were measured on: CPU, memory, OS, and the versions that matter."""
    import dramatiq

    try:
        from importlib.metadata import version

        ray_version = version("ray")
    except Exception:
        ray_version = "not installed"
    cpu_model = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    cpu_model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {
        "cpu_model": cpu_model,
        "logical_cpus": os.cpu_count(),
        "physical_cores": psutil.cpu_count(logical=False),
        "memory_gib": round(psutil.virtual_memory().total / 1024**3, 1),
        "os": f"{platform.system()} {platform.release()}",
        "python": sys.version.split()[0],
        "dramatiq": dramatiq.__version__,
        "ray": ray_version,
        "load_average_at_start": [round(value, 2) for value in os.getloadavg()],
    }


# --- what a case reports -------------------------------------------------------------------------------------


@dataclass
class Target:
    """One target of the issue: ``measured`` against ``baseline`` (the value the target derives from).

    ``passed`` is computed from ``ratio`` and ``goal`` (``ratio >= goal`` when ``higher_is_better``, else
    ``ratio <= goal``); ``None`` when the value could not be measured.
    """

    name: str
    measured: float | None
    baseline: float | None
    goal: float
    unit: str
    higher_is_better: bool = True
    ratio: float | None = None
    passed: bool | None = None
    note: str = ""

    def __post_init__(self) -> None:
        if self.ratio is None and self.measured is not None and self.baseline:
            self.ratio = self.measured / self.baseline
        if self.ratio is not None and not math.isnan(self.ratio):
            self.passed = self.ratio >= self.goal if self.higher_is_better else self.ratio <= self.goal


@dataclass
class CaseReport:
    """Everything one benchmark case measured."""

    name: str
    title: str
    description: str
    variants: dict[str, dict[str, float]] = field(default_factory=dict)
    targets: list[Target] = field(default_factory=list)
    unavailable: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    chart_metrics: tuple[str, ...] = ("throughput_per_s", "p50_ms", "p99_ms")

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["chart_metrics"] = list(self.chart_metrics)
        return data


def measure_variant(report: CaseReport, name: str, measure: Callable[[], dict[str, float]]) -> dict[str, float] | None:
    """Run ``measure`` and record its numbers under ``name``; a :class:`NotAvailable` is recorded as such."""
    try:
        numbers = measure()
    except NotAvailable as error:
        report.unavailable[name] = str(error)
        print(f"  {name}: not available ({error})", flush=True)
        return None
    report.variants[name] = numbers
    shown = ", ".join(f"{key}={value:.4g}" for key, value in numbers.items())
    print(f"  {name}: {shown}", flush=True)
    return numbers
