"""Measuring: timers, percentiles, peak RSS, CPU time of process trees, Redis memory, the machine, and the result
types every case fills.

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


# --- CPU time ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProcessSet:
    """The processes one group of a :class:`CpuMeter` counts: ``pids`` alone, ``trees`` with all their descendants
    (their children, grandchildren, ...), and any other process whose command line contains ``marker`` (a Ray
    cluster's temp dir, which its daemons name: they are still found if they ever leave the tree)."""

    pids: tuple[int, ...] = ()
    trees: tuple[int, ...] = ()
    marker: str | None = None


@dataclass
class _Tracked:
    process: psutil.Process
    group: str
    baseline: float
    latest: float
    exited: bool = False


class CpuMeter:
    """User + system CPU seconds spent by groups of processes between :meth:`start` and :meth:`stop` (or the
    ``with`` block), e.g. ``{"producer": ..., "worker": ..., "ray": ...}``.

    How it counts:

    - At the start it finds every process of every group (see :class:`ProcessSet`; a process belongs to the first
      group that names it) and reads its cumulative user + system time (psutil's ``cpu_times()``: the process's
      own time, all its threads included). That reading is the process's baseline.
    - While the block runs, a thread looks again every ``interval`` seconds: it reads every known process's times
      again (its latest reading) and adds the processes that appeared since, with a baseline of zero: they
      started during the measured stretch, so all of their time counts.
    - At the stop it reads and looks once more. A process's share is its latest reading minus its baseline.
    - A process that exits during the block is not dropped: it keeps the last reading taken while it lived, so
      at most ``interval`` seconds of its end are lost. Its parent's children times are deliberately not used:
      added to the periodic readings they would count the same process twice. A process that starts and exits
      between two looks is not seen; ``exited`` says how many exits were seen, so a surprise shows up.
    - The sampling thread's own CPU (it reads ``/proc``) is subtracted from the group of the process it runs in,
      so the meter does not bill its own work to the producer.
    """

    def __init__(self, groups: dict[str, ProcessSet], *, interval: float = 0.1) -> None:
        self.groups = groups
        self.interval = interval
        self.seconds: dict[str, float] = {}
        self.exited = 0
        self._tracked: dict[tuple[int, float], _Tracked] = {}
        self._unmatched: set[tuple[str, tuple[int, float]]] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._sampler_cpu = 0.0

    @property
    def processes(self) -> int:
        """How many processes were counted."""
        return len(self._tracked)

    def start(self) -> CpuMeter:
        with self._lock:
            self._look(at_start=True)
        self._thread = threading.Thread(target=self._sample, name="cpu-meter", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> dict[str, float]:
        """Stop, and return the CPU seconds of each group (also kept in :attr:`seconds`)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        with self._lock:
            self._read_known()  # first: the known processes' readings are then the closest to the end
            self._look(at_start=False)
        seconds = dict.fromkeys(self.groups, 0.0)
        for tracked in self._tracked.values():
            seconds[tracked.group] += tracked.latest - tracked.baseline
        own = self._own_group()
        if own is not None:
            seconds[own] -= self._sampler_cpu
        self.seconds = seconds
        self.exited = sum(tracked.exited for tracked in self._tracked.values())
        return seconds

    def __enter__(self) -> CpuMeter:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def summary(self, count: float) -> dict[str, float]:
        """CPU milliseconds per operation for ``count`` operations: all groups (``cpu_ms_per_msg``) and each group
        (``cpu_ms_per_msg_<group>``), plus how many processes were counted and how many exited meanwhile."""
        numbers = {"cpu_ms_per_msg": sum(self.seconds.values()) / count * 1000 if count else math.nan}
        for name, seconds in self.seconds.items():
            numbers[f"cpu_ms_per_msg_{name}"] = seconds / count * 1000 if count else math.nan
        numbers["cpu_processes"] = float(self.processes)
        numbers["cpu_processes_exited"] = float(self.exited)
        return numbers

    # --- inside ------------------------------------------------------------------------------------------------

    def _sample(self) -> None:
        began = time.thread_time()
        try:
            while not self._stop.wait(self.interval):
                with self._lock:
                    self._read_known()
                    self._look(at_start=False)
        finally:
            self._sampler_cpu = time.thread_time() - began

    def _own_group(self) -> str | None:
        for (pid, _), tracked in self._tracked.items():
            if pid == os.getpid():
                return tracked.group
        return None

    def _read_known(self) -> None:
        for tracked in self._tracked.values():
            if not tracked.exited:
                reading = _cpu_seconds(tracked.process)
                if reading is None:
                    tracked.exited = True
                else:
                    tracked.latest = reading

    def _look(self, *, at_start: bool) -> None:
        """Add the processes of every group that are not tracked yet."""
        children: dict[int, list[int]] = {}
        processes: dict[int, tuple[psutil.Process, tuple[int, float]]] = {}
        for process in psutil.process_iter(["ppid", "create_time"]):
            if process.info["ppid"] is None or process.info["create_time"] is None:
                continue
            processes[process.pid] = (process, (process.pid, process.info["create_time"]))
            children.setdefault(process.info["ppid"], []).append(process.pid)
        for group, wanted in self.groups.items():
            pids = {pid for pid in wanted.pids if pid in processes}
            pending = [pid for pid in wanted.trees if pid in processes]
            while pending:
                pid = pending.pop()
                if pid not in pids:
                    pids.add(pid)
                    pending.extend(children.get(pid, ()))
            if wanted.marker:
                pids |= {pid for pid, (process, key) in processes.items() if self._names(process, key, wanted.marker)}
            for pid in pids:
                process, key = processes[pid]
                if key in self._tracked:
                    continue
                reading = _cpu_seconds(process)
                if reading is not None:
                    self._tracked[key] = _Tracked(process, group, reading if at_start else 0.0, reading)

    def _names(self, process: psutil.Process, key: tuple[int, float], marker: str) -> bool:
        """Whether ``process``'s command line contains ``marker`` (read once per process: it is a file read)."""
        if key in self._tracked:
            return True
        if (marker, key) in self._unmatched:
            return False
        try:
            if marker in " ".join(process.cmdline()):
                return True
        except psutil.Error:
            pass
        self._unmatched.add((marker, key))
        return False


def _cpu_seconds(process: psutil.Process) -> float | None:
    """User + system seconds of ``process`` itself, or ``None`` once it is gone."""
    try:
        times = process.cpu_times()
    except psutil.Error:
        return None
    return float(times.user + times.system)


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
