"""Sends the demo's messages, shows progress while they run, then a table of what happened."""

from __future__ import annotations

import argparse
import functools
import importlib
import logging
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import IO, Any

EXPECTED_PRIMES_BELOW_2M = 148_933


@dataclass
class Case:
    """One message of the demo and what it should end as."""

    label: str
    send: Callable[[], Any]
    check: Callable[[Any, BaseException | None, int], str | None]
    message: Any = None
    sent_at: float = 0.0
    done_at: float | None = None
    value: Any = None
    error: BaseException | None = None
    where: str = ""
    attempts: int = 0
    problems: list[str] = field(default_factory=list)


def _expect_value(expected: Any) -> Callable[[Any, BaseException | None, int], str | None]:
    def check(value: Any, error: BaseException | None, attempts: int) -> str | None:
        if error is not None:
            return f"expected {expected!r}, got {error!r}"
        return None if value == expected else f"expected {expected!r}, got {value!r}"

    return check


def _expect_failure(type_name: str, attempts: int) -> Callable[[Any, BaseException | None, int], str | None]:
    def check(value: Any, error: BaseException | None, seen_attempts: int) -> str | None:
        got = getattr(error, "orig_exc_type", None)
        if got != type_name:
            return f"expected a {type_name} failure, got {got or value!r}"
        if seen_attempts != attempts:
            return f"expected {attempts} attempt(s), saw {seen_attempts}"
        return None

    return check


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m dramatiq_ray.demo",
        description=(
            "Send a realistic mix of messages through Dramatiq with dramatiq-ray: small results, CPU-heavy work on "
            "Ray, a multi-MB result that spills to a blob store and comes back, a task that fails twice then "
            "succeeds, a task with a denylisted error, and a task that hits its time limit. Exits 0 only when "
            "every outcome is the expected one."
        ),
    )
    parser.add_argument(
        "--broker",
        default="stub",
        metavar="URL",
        help="'stub' (default: in memory, no services) or a Redis URL such as redis://localhost:6379/0",
    )
    parser.add_argument(
        "--store", metavar="DIR", help="where spilled results go (default: a new temporary directory, removed after)"
    )
    parser.add_argument("--threads", type=int, default=8, help="worker threads (default 8)")
    parser.add_argument("--no-progress", action="store_true", help="do not draw the progress bar")
    return parser


class _Progress:
    """A progress bar redrawn in place on a terminal; on anything else, one line whenever the count changes."""

    def __init__(self, out: IO[str], total: int, enabled: bool) -> None:
        self.out, self.total, self.enabled = out, total, enabled
        self.live = enabled and out.isatty()
        self.started = time.monotonic()
        self.last: int | None = None

    def update(self, done: int) -> None:
        if not self.enabled or (not self.live and done == self.last):
            return
        self.last = done
        width = 30
        filled = width * done // self.total
        bar = f"[{'#' * filled}{'.' * (width - filled)}] {done}/{self.total} messages done"
        elapsed = time.monotonic() - self.started
        self.out.write(f"\r  {bar}  {elapsed:5.1f}s" if self.live else f"  {bar}  {elapsed:5.1f}s\n")
        self.out.flush()

    def close(self) -> None:
        if self.live:
            self.out.write("\n")


def _table(cases: list[Case], out: IO[str]) -> None:
    headers = ("message", "actor", "attempts", "outcome", "result lives", "time")
    rows = []
    for case in cases:
        if case.error is not None:
            outcome = f"failed: {getattr(case.error, 'orig_exc_type', type(case.error).__name__)}"
        else:
            outcome = "ok"
        elapsed = f"{(case.done_at or case.sent_at) - case.sent_at:.2f}s"
        rows.append((case.label, case.message.actor_name, str(case.attempts), outcome, case.where, elapsed))
    widths = [max(len(row[i]) for row in [headers, *rows]) for i in range(len(headers))]
    line = "  ".join(f"{{:<{width}}}" for width in widths)
    out.write(line.format(*headers) + "\n")
    out.write("  ".join("-" * width for width in widths) + "\n")
    for row in rows:
        out.write(line.format(*row) + "\n")


def main(argv: Sequence[str] | None = None, out: IO[str] | None = None) -> int:
    """Run the demo; returns 0 when every message ended as expected."""
    out = out or sys.stdout
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.CRITICAL)  # the table tells the story; the worker's tracebacks would not
    store_dir = args.store or tempfile.mkdtemp(prefix="dramatiq-ray-demo-")
    os.environ["DRAMATIQ_RAY_DEMO_BROKER"] = args.broker
    os.environ["DRAMATIQ_RAY_DEMO_STORE"] = store_dir
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")

    import dramatiq
    from dramatiq.results import ResultFailure, ResultMissing

    from ..results import get_pointer

    tasks = importlib.import_module("dramatiq_ray.demo.tasks")
    out.write(f"dramatiq-ray demo: broker {args.broker}, spilled results in {store_dir}\n")
    out.write("  starting an in-process Dramatiq worker and a local Ray (the first start takes a few seconds)...\n")
    if args.broker != "stub":
        tasks.broker.flush_all()
    # What the dramatiq CLI does in each worker process; starts, among others, the time limit watcher.
    tasks.broker.emit_after("process_boot")
    worker = dramatiq.Worker(tasks.broker, worker_timeout=100, worker_threads=args.threads)
    worker.start()

    demo_pid = os.getpid()

    def primes_on_ray(value: Any, error: BaseException | None, attempts: int) -> str | None:
        if error is not None:
            return f"failed: {error!r}"
        if value["primes"] != EXPECTED_PRIMES_BELOW_2M:
            return f"wrong prime count {value['primes']}"
        if value["ray_worker_pid"] == demo_pid:
            return "ran in the demo's own process, not on Ray"
        return None

    def big_report(value: Any, error: BaseException | None, attempts: int) -> str | None:
        if error is not None:
            return f"failed: {error!r}"
        return None if len(value) == 60_000 and value[-1].startswith("row 0059999 ") else "report came back wrong"

    cases = [
        *(Case(f"add #{i}", functools.partial(tasks.add.send, i, 10 * i), _expect_value(11 * i)) for i in range(1, 5)),
        *(Case(f"primes #{i}", lambda: tasks.count_primes.send(2_000_000), primes_on_ray) for i in range(1, 5)),
        Case("report (~5 MB)", lambda: tasks.render_report.send(60_000), big_report),
        Case("flaky", lambda: tasks.flaky_fetch.send("inventory"), _expect_value("inventory fetched on attempt 3")),
        Case("declined", lambda: tasks.charge_card.send(42), _expect_failure(tasks.PermanentError.__qualname__, 1)),
        Case("stuck", lambda: tasks.stuck_job.send(60), _expect_failure("TimeLimitExceeded", 1)),
    ]
    for case in cases:
        case.sent_at = time.monotonic()
        case.message = case.send()
    pending = list(cases)
    progress = _Progress(out, len(cases), enabled=not args.no_progress)
    try:
        while pending:
            for case in list(pending):
                try:
                    case.value = case.message.get_result(block=False)
                except ResultMissing:
                    continue
                except ResultFailure as failure:
                    case.error = failure
                case.done_at = time.monotonic()
                pending.remove(case)
            progress.update(len(cases) - len(pending))
            if pending:
                time.sleep(0.05)
        progress.close()
        for case in cases:
            case.attempts = tasks.attempt_log.attempts.get(case.message.message_id, 0)
            if case.error is not None:
                case.where = "failure stored"
            else:
                pointer = get_pointer(case.message, backend=tasks.results.backend)
                case.where = "inline" if pointer is None else pointer.split("?")[0][:24] + "… (spilled)"
            problem = case.check(case.value, case.error, case.attempts)
            if problem:
                case.problems.append(problem)
    finally:
        worker.stop()
        tasks.broker.close()
        if args.store is None:
            shutil.rmtree(store_dir, ignore_errors=True)

    out.write("\n")
    _table(cases, out)
    wrong = [case for case in cases if case.problems]
    out.write("\n")
    if wrong:
        for case in wrong:
            out.write(f"UNEXPECTED {case.label}: {'; '.join(case.problems)}\n")
        out.write(f"{len(wrong)} of {len(cases)} messages did not end as expected.\n")
        return 1
    out.write(
        f"All {len(cases)} messages ended as expected: small results stayed inline, the prime counts ran in Ray "
        "worker processes, the ~5 MB report was spilled to the store and came back intact, the flaky task "
        "succeeded on its third attempt, the denylisted error failed at once, and the stuck task was stopped by "
        "its time limit.\n"
    )
    return 0
