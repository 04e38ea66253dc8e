"""The SQL result backend against Dramatiq's RedisBackend: a blocking get's round trip, writes per second into
SQLite (WAL), and how closely a blocking get's timeout is kept.

Round trip: a thread blocks in ``get_result(block=True)`` for a message with no result yet; 2 ms later another
thread stores it; the latency is from the start of the store to the waiter's return (Redis: LPUSH wakes a
BRPOPLPUSH; PostgreSQL: the store's NOTIFY wakes the LISTEN thread, which wakes the waiter, which reads; SQLite:
the waiter's polling finds it). One pair of threads at a time, so nothing queues. "store then get" is the same
client storing and then reading (no waiting).

PostgreSQL commits wait for the write-ahead log to reach the disk (``synchronous_commit=on``, its default) and
Redis never does; the ``synchronous_commit=off`` variant (set in the URL, see docs/sql-results.md) is the same
trade Redis makes, and is reported beside it.

Writes: 8 threads of one process storing results as fast as they can into one SQLite file (WAL), and the same into
PostgreSQL for comparison.
"""

from __future__ import annotations

import os
import statistics
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import dramatiq

from ._harness import CaseReport, NotAvailable, Target, latency_summary, measure_variant, percentile, run_closed_loop
from ._report import render_text
from ._run import Run
from ._services import unique

WRITE_THREADS = 8
#: Goals of the issue: PostgreSQL's round trip p50 within 3x Redis's; at least 1,000 results/s into SQLite.
ROUND_TRIP_RATIO = 3.0
SQLITE_WRITES_PER_S = 1000.0
#: The longest a blocking get may overrun its timeout.
TIMEOUT_SLACK_MS = 50.0
PAUSE_BEFORE_STORE = 0.002


def _message() -> dramatiq.Message[Any]:
    return dramatiq.Message(queue_name="bench", actor_name="bench", args=(), kwargs={}, options={})


def postgres_url() -> str:
    """``DRAMATIQ_RAY_POSTGRES_URL``, else the local server (database ``test``); NotAvailable otherwise."""
    try:
        import psycopg
    except ImportError as error:
        raise NotAvailable('psycopg is not installed: pip install ".[sql]"') from error
    candidates = [os.environ["DRAMATIQ_RAY_POSTGRES_URL"]] if os.environ.get("DRAMATIQ_RAY_POSTGRES_URL") else []
    candidates += [f"postgresql://{user}@127.0.0.1:5432/test" for user in ("postgres", "root")]
    for url in candidates:
        try:
            with psycopg.connect(url, connect_timeout=2):
                return url
        except Exception:
            continue
    raise NotAvailable("no PostgreSQL at 127.0.0.1:5432 (database test) and DRAMATIQ_RAY_POSTGRES_URL is unset")


class Backends:
    """The backends of the case, each on a table prefix (or key namespace) of its own, removed at the end."""

    def __init__(self, run: Run) -> None:
        self.run = run
        self.prefix = f"bench_{uuid.uuid4().hex[:8]}_"
        self._built: list[Any] = []
        self._postgres: str | None = None

    def redis(self) -> Any:
        from dramatiq.results.backends import RedisBackend

        return RedisBackend(url=self.run.redis.url, namespace=unique(f"{self.run.redis.namespace}-sql"))

    def sqlite(self) -> Any:
        from dramatiq_ray import SQLBackend

        path = os.path.join(self.run.work_dir, unique("results") + ".db")
        return self._keep(SQLBackend(url=f"sqlite:///{path}", table_prefix=self.prefix))

    def postgres(self, *, synchronous_commit: bool = True) -> Any:
        from dramatiq_ray import SQLBackend

        if self._postgres is None:
            self._postgres = postgres_url()
        url = self._postgres if synchronous_commit else f"{self._postgres}?options=-csynchronous_commit%3Doff"
        return self._keep(SQLBackend(url=url, table_prefix=self.prefix))

    def _keep(self, backend: Any) -> Any:
        backend.migrate()
        self._built.append(backend)
        return backend

    def close(self) -> None:
        for backend in self._built:
            backend.close()
        if self._postgres is not None:
            import psycopg

            with psycopg.connect(self._postgres, autocommit=True) as connection:
                connection.execute(f'DROP TABLE IF EXISTS "{self.prefix}results", "{self.prefix}schema_version"')


def round_trips(backend: Any, count: int) -> dict[str, float]:
    """Blocking-get round trips (waiter blocked first), then store-then-get by one client."""
    woken: list[float] = []
    for _ in range(5):  # warm up: connections, the listener, compiled statements
        message = _message()
        backend.store_result(message, 0, 60_000)
        backend.get_result(message, block=True, timeout=10_000)
    started = time.perf_counter()
    for index in range(count):
        message = _message()
        done = threading.Event()
        ended: list[float] = []

        def wait(message: Any = message, done: threading.Event = done, ended: list[float] = ended) -> None:
            backend.get_result(message, block=True, timeout=10_000)
            ended.append(time.perf_counter())
            done.set()

        waiter = threading.Thread(target=wait)
        waiter.start()
        time.sleep(PAUSE_BEFORE_STORE)
        stored_at = time.perf_counter()
        backend.store_result(message, {"index": index}, 60_000)
        if not done.wait(30):
            raise RuntimeError(f"{backend!r}: a blocked get_result was not woken by a store within 30 s")
        waiter.join()
        woken.append(ended[0] - stored_at)
    summary = latency_summary(woken, time.perf_counter() - started)
    sequential: list[float] = []
    for index in range(count):
        message = _message()
        start = time.perf_counter()
        backend.store_result(message, {"index": index}, 60_000)
        backend.get_result(message, block=True, timeout=10_000)
        sequential.append(time.perf_counter() - start)
    return {
        "p50_ms": summary["p50_ms"],
        "p99_ms": summary["p99_ms"],
        "store_then_get_p50_ms": percentile(sequential, 50) * 1000,
    }


def writes_per_second(backend: Any, count: int) -> dict[str, float]:
    """``count`` results stored by 8 closed-loop threads."""

    def store(index: int) -> None:
        backend.store_result(_message(), {"index": index, "payload": "x" * 64}, 600_000)

    summary = run_closed_loop(store, count=count, threads=WRITE_THREADS)
    return {"writes_per_s": summary["throughput_per_s"], "write_p50_ms": summary["p50_ms"]}


def timeout_overrun(backend: Any, count: int, timeout_ms: int = 100) -> dict[str, float]:
    """How far past ``timeout_ms`` a blocking get for a result never stored raises ResultTimeout."""
    from dramatiq.results import ResultTimeout

    overruns = []
    for _ in range(count):
        start = time.perf_counter()
        try:
            backend.get_result(_message(), block=True, timeout=timeout_ms)
        except ResultTimeout:
            overruns.append((time.perf_counter() - start) * 1000 - timeout_ms)
    return {
        "timeout_overrun_p50_ms": statistics.median(overruns),
        "timeout_overrun_max_ms": max(overruns),
    }


def run_case(run: Run) -> CaseReport:
    trips, writes, timeouts = (10, 100, 3) if run.quick else (500, 10_000, 30)
    report = CaseReport(
        name="sql",
        title="SQL result backend",
        description=(
            f"A blocking get's round trip, {trips} times per backend: a thread waits in get_result(block=True), "
            f"{PAUSE_BEFORE_STORE * 1000:.0f} ms later another stores the result; latency is from the start of the "
            "store to the waiter's return (p50/p99), one pair of threads at a time. store then get p50 is one "
            "client storing then reading. Writes: "
            f"{writes} results stored by {WRITE_THREADS} threads of one process (SQLite: one file in WAL mode). "
            f"Timeout overrun: {timeouts} blocking gets of a result never stored, timeout 100 ms. PostgreSQL is "
            "the local server (durable commits by default; the synchronous_commit=off row makes Redis's trade: "
            "no wait for the disk), Redis the run's."
        ),
        chart_metrics=("p50_ms", "p99_ms", "store_then_get_p50_ms"),
    )
    backends = Backends(run)
    try:

        def variant(name: str, build: Callable[[], Any], *, write: bool = False) -> dict[str, float] | None:
            def measure() -> dict[str, float]:
                backend = build()
                numbers = round_trips(backend, trips)
                if type(backend).__name__ == "SQLBackend":
                    numbers.update(timeout_overrun(backend, timeouts))
                if write:
                    numbers.update(writes_per_second(backend, writes))
                return numbers

            return measure_variant(report, name, measure)

        redis = variant("RedisBackend", backends.redis, write=True)
        sqlite = variant("SQLBackend, SQLite (WAL)", backends.sqlite, write=True)
        durable = variant("SQLBackend, PostgreSQL", backends.postgres, write=True)
        relaxed = variant(
            "SQLBackend, PostgreSQL, synchronous_commit=off", lambda: backends.postgres(synchronous_commit=False)
        )
    finally:
        backends.close()

    redis_p50 = redis["p50_ms"] if redis else None
    report.targets.append(
        Target(
            name=f"PostgreSQL blocking-get round trip p50 vs Redis x {ROUND_TRIP_RATIO:g}",
            measured=durable["p50_ms"] if durable else None,
            baseline=redis_p50 * ROUND_TRIP_RATIO if redis_p50 else None,
            goal=1.0,
            unit="ms",
            higher_is_better=False,
            note=f"PostgreSQL's p50 at most {ROUND_TRIP_RATIO:g}x Redis's (durable commits, PostgreSQL's default)",
        )
    )
    report.targets.append(
        Target(
            name=f"(extra) PostgreSQL synchronous_commit=off round trip p50 vs Redis x {ROUND_TRIP_RATIO:g}",
            measured=relaxed["p50_ms"] if relaxed else None,
            baseline=redis_p50 * ROUND_TRIP_RATIO if redis_p50 else None,
            goal=1.0,
            unit="ms",
            higher_is_better=False,
            note="the same with commits that do not wait for the disk, as Redis's writes never do",
        )
    )
    report.targets.append(
        Target(
            name="(extra) SQLite blocking-get round trip p50 vs Redis x 3",
            measured=sqlite["p50_ms"] if sqlite else None,
            baseline=redis_p50 * ROUND_TRIP_RATIO if redis_p50 else None,
            goal=1.0,
            unit="ms",
            higher_is_better=False,
            note="SQLite's waiter polls with a capped backoff: its p50 against the same bound",
        )
    )
    report.targets.append(
        Target(
            name=f"SQLite (WAL) results stored per second, {WRITE_THREADS} threads",
            measured=sqlite["writes_per_s"] if sqlite else None,
            baseline=SQLITE_WRITES_PER_S,
            goal=1.0,
            unit="results/s",
            note=f"at least {SQLITE_WRITES_PER_S:,.0f} results/s sustained into SQLite in WAL mode",
        )
    )
    worst = max((numbers["timeout_overrun_max_ms"] for numbers in (sqlite, durable) if numbers), default=None)
    report.targets.append(
        Target(
            name="(extra) blocking get overruns its timeout by at most 50 ms (worst of SQLite, PostgreSQL)",
            measured=worst,
            baseline=TIMEOUT_SLACK_MS,
            goal=1.0,
            unit="ms",
            higher_is_better=False,
            note=f"a blocking get raises ResultTimeout within {TIMEOUT_SLACK_MS:g} ms of its timeout",
        )
    )
    print(render_text(report.to_json()), flush=True)
    return report
