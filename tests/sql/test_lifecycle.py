"""What a message's row says as it goes through a worker: dramatiq_ray.Results forwards enqueued, running and
skipped to the SQLBackend it wraps, and stores outcomes (inline or spilled) there."""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dramatiq
import pytest
from dramatiq.middleware import Middleware, SkipMessage
from dramatiq.results import ResultFailure
from dramatiq.results import Results as DramatiqResults

from dramatiq_ray import FilesystemStore, Results, SQLBackend
from tests._services import wait_until
from tests.sql.conftest import through

WAIT_MS = 60_000


@pytest.fixture
def broker(stub_broker: Any, backend: SQLBackend) -> Any:
    stub_broker.add_middleware(Results(backend=backend))
    return stub_broker


def test_sent_message_is_recorded_as_enqueued_with_its_queue_and_actor(broker: Any, backend: SQLBackend) -> None:
    @dramatiq.actor(broker=broker, store_results=True, queue_name="renders")
    def render(frame: int) -> int:
        return frame

    message = render.send(7)

    record = backend.record(message)
    assert record is not None
    assert (record.status, record.actor_name, record.queue_name, record.attempts) == (
        "enqueued",
        "render",
        "renders",
        0,
    )
    assert record.enqueued_at is not None and record.finished_at is None
    assert record.args is None  # arguments are recorded only with record_args=True


def test_running_message_is_recorded_with_its_worker_and_attempt(
    broker: Any, backend: SQLBackend, start_worker: Callable[..., Any]
) -> None:
    release = threading.Event()

    @dramatiq.actor(broker=broker, store_results=True)
    def render(frame: int) -> int:
        release.wait(60)
        return frame * 2

    start_worker(broker, threads=1)
    message = render.send(21)
    try:
        running = wait_until(
            lambda: (record := backend.record(message)) is not None and record.status == "running" and record,
            timeout=30,
            what="the message to be recorded as running",
        )
    finally:
        release.set()

    assert (running.attempts, running.worker_host, running.worker_pid) == (1, socket.gethostname(), os.getpid())
    assert running.started_at is not None and running.started_at >= running.enqueued_at
    assert backend.get_result(message, block=True, timeout=WAIT_MS) == 42
    done = backend.record(message)
    assert done is not None and (done.status, done.attempts) == ("success", 1)
    assert done.finished_at is not None and done.finished_at >= running.started_at
    assert done.result_size == len(b"42") and done.error is None


def test_retried_message_counts_its_attempts_and_keeps_the_last_failure_out_of_a_success(
    broker: Any, backend: SQLBackend, start_worker: Callable[..., Any]
) -> None:
    failures: list[int] = []

    @dramatiq.actor(broker=broker, store_results=True, max_retries=3, min_backoff=10, max_backoff=20)
    def flaky() -> str:
        if len(failures) < 2:
            failures.append(1)
            raise ConnectionError("transient")
        return "ok"

    start_worker(broker, threads=1)
    message = flaky.send()

    assert backend.get_result(message, block=True, timeout=WAIT_MS) == "ok"
    record = backend.record(message)
    assert record is not None and (record.status, record.attempts, record.error) == ("success", 3, None)


def test_failed_message_is_recorded_with_its_error_and_traceback(
    broker: Any, backend: SQLBackend, start_worker: Callable[..., Any]
) -> None:
    @dramatiq.actor(broker=broker, store_results=True, max_retries=1, min_backoff=10, max_backoff=20)
    def explode(frame: int) -> None:
        raise ValueError(f"frame {frame} is corrupt")

    start_worker(broker, threads=1)
    message = explode.send(3)

    with pytest.raises(ResultFailure, match="frame 3 is corrupt"):
        backend.get_result(message, block=True, timeout=WAIT_MS)
    record = backend.record(message)
    assert record is not None
    assert (record.status, record.attempts, record.error) == ("failure", 2, "ValueError: frame 3 is corrupt")
    assert record.traceback is not None and 'raise ValueError(f"frame {frame} is corrupt")' in record.traceback


def test_skipped_message_is_recorded_as_skipped_and_reads_none(
    broker: Any, backend: SQLBackend, start_worker: Callable[..., Any]
) -> None:
    class SkipEverything(Middleware):
        def before_process_message(self, broker: Any, message: Any) -> None:
            raise SkipMessage("not today")

    broker.add_middleware(SkipEverything())

    @dramatiq.actor(broker=broker, store_results=True)
    def render() -> int:
        return 1

    start_worker(broker, threads=1)
    message = render.send()

    assert backend.get_result(message, block=True, timeout=WAIT_MS) is None
    record = backend.record(message)
    assert record is not None and record.status == "skipped" and record.finished_at is not None


def test_spilled_result_row_holds_the_pointer_and_the_blob_size(
    stub_broker: Any, backend: SQLBackend, start_worker: Callable[..., Any], tmp_path: Path
) -> None:
    stub_broker.add_middleware(Results(backend=backend, store=FilesystemStore(tmp_path / "blobs"), max_inline_bytes=64))

    @dramatiq.actor(broker=stub_broker, store_results=True)
    def render() -> str:
        return "x" * 1000

    start_worker(stub_broker, threads=1)
    message = render.send()

    assert message.get_result(block=True, timeout=WAIT_MS) == "x" * 1000
    assert backend.get_result(message) == "x" * 1000  # read through the SQLBackend itself, hydrated too
    record = backend.record(message)
    assert record is not None and record.pointer is not None and record.pointer.startswith("resultfs://sha256/")
    assert record.result_size == len(b'"' + b"x" * 1000 + b'"')
    assert len(list((tmp_path / "blobs").rglob("*.json"))) == 1


def test_messages_whose_results_are_not_stored_are_not_recorded(broker: Any, backend: SQLBackend) -> None:
    @dramatiq.actor(broker=broker)
    def fire_and_forget() -> None:
        return None

    message = fire_and_forget.send()

    assert backend.record(message) is None


def test_dramatiq_results_records_outcomes_only(
    stub_broker: Any, backend: SQLBackend, start_worker: Callable[..., Any]
) -> None:
    stub_broker.add_middleware(DramatiqResults(backend=backend))  # type: ignore[no-untyped-call]

    @dramatiq.actor(broker=stub_broker, store_results=True)
    def render() -> int:
        return 5

    start_worker(stub_broker, threads=1)
    message = render.send()

    assert backend.get_result(message, block=True, timeout=WAIT_MS) == 5
    record = backend.record(message)
    assert record is not None and (record.status, record.attempts) == ("success", 1)
    assert record.enqueued_at is None and record.started_at is None


def test_record_events_false_records_outcomes_only(
    stub_broker: Any, new_backend: Callable[..., SQLBackend], start_worker: Callable[..., Any]
) -> None:
    backend = new_backend(record_events=False)
    stub_broker.add_middleware(Results(backend=backend))

    @dramatiq.actor(broker=stub_broker, store_results=True)
    def render() -> int:
        return 5

    message = render.send()
    assert backend.record(message) is None
    start_worker(stub_broker, threads=1)

    assert backend.get_result(message, block=True, timeout=WAIT_MS) == 5
    record = backend.record(message)
    assert record is not None and record.status == "success" and record.enqueued_at is None


def test_worker_shutdown_closes_the_sql_backends_connections(
    stub_broker: Any, start_worker: Callable[..., Any], postgres_database: Any, proxy: Any
) -> None:
    # Given a worker whose SQL result backend reaches PostgreSQL through a proxy that counts connections
    backend = SQLBackend(url=through(proxy, postgres_database), table_prefix=postgres_database.prefix)
    stub_broker.add_middleware(Results(backend=backend))

    @dramatiq.actor(broker=stub_broker, store_results=True)
    def answer() -> int:
        return 42

    worker = start_worker(stub_broker, threads=1)
    try:
        message = answer.send()
        stub_broker.join(answer.queue_name)
        worker.join()
        assert message.get_result(backend=backend) == 42
        assert proxy.open_connections >= 1
        # When the worker shuts down, then the backend's pooled connections are closed
        worker.stop()
        wait_until(lambda: proxy.open_connections == 0, timeout=30, what="the pooled connections to close")
    finally:
        backend.close()


def test_cancelled_message_is_recorded_as_cancelled_and_its_body_never_runs(
    broker: Any, backend: SQLBackend, start_worker: Callable[..., Any]
) -> None:
    from dramatiq.results import ResultFailure

    from dramatiq_ray import CancelOutcome, cancel

    ran: list[int] = []

    @dramatiq.actor(broker=broker, store_results=True)
    def render() -> int:
        ran.append(1)
        return 1

    message = render.send_with_options(delay=100)
    assert cancel(message, broker=broker) is CancelOutcome.REQUESTED
    start_worker(broker, threads=1)

    with pytest.raises(ResultFailure) as failure:
        backend.get_result(message, block=True, timeout=WAIT_MS)
    assert failure.value.orig_exc_type == "MessageCancelledError"
    record = backend.record(message)
    assert record is not None and record.status == "cancelled"
    assert ran == []
    assert cancel(message, broker=broker) is CancelOutcome.FINISHED


def test_progress_reported_by_a_body_is_kept_in_the_database(
    broker: Any, backend: SQLBackend, start_worker: Callable[..., Any]
) -> None:
    from dramatiq_ray import get_progress, report_progress

    @dramatiq.actor(broker=broker, store_results=True)
    def render(frames: int) -> int:
        for frame in range(1, frames + 1):
            report_progress(frame, frames, note=f"frame {frame}")
        return frames

    start_worker(broker, threads=1)
    message = render.send(20)
    assert backend.get_result(message, block=True, timeout=WAIT_MS) == 20

    progress = get_progress(message, broker=broker)
    assert progress is not None and (progress.done, progress.total, progress.note) == (20, 20, "frame 20")
