"""Cancelling a message whose body runs on a warm replica (``dramatiq_ray.cancel``) and reading its progress
(``report_progress``), on a real Redis broker and result backend (where marks and progress live) and the test
run's local Ray."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import dramatiq
import pytest
from dramatiq.results import ResultFailure
from dramatiq.results.backends import RedisBackend

from dramatiq_ray import (
    CancelOutcome,
    RayExecutionMiddleware,
    Replicas,
    Results,
    cancel,
    get_progress,
    replica_cancelled,
    report_progress,
)
from tests._services import wait_until

pytestmark = pytest.mark.timeout(300)

RESULT_TIMEOUT_MS = 120_000


def test_cancel_stops_a_call_running_on_a_replica_and_fails_it_as_cancelled(
    redis_broker: Any,
    redis_url: str,
    redis_namespace: str,
    ray_local: Any,
    no_lingering_replicas: None,
    start_worker: Any,
    tmp_path: Path,
) -> None:
    # Given a replica body that says it started, then runs until its call is cancelled
    redis_broker.add_middleware(
        Results(backend=RedisBackend(url=redis_url, namespace=f"{redis_namespace}-results"), store_results=True)
    )
    redis_broker.add_middleware(RayExecutionMiddleware(wait_slice=0.2))
    started, stopped = tmp_path / "started", tmp_path / "stopped"

    @dramatiq.actor(broker=redis_broker, max_retries=3, replicas=Replicas(min=1, max=1, version="cancel"))
    def render() -> str:
        started.write_text("yes")
        deadline = time.monotonic() + 240
        while not replica_cancelled() and time.monotonic() < deadline:
            time.sleep(0.05)
        written = stopped.with_suffix(".tmp")
        written.write_text("cancelled" if replica_cancelled() else "ran out")
        written.rename(stopped)  # whole, so the test never reads it half-written
        return "finished"

    start_worker(redis_broker, threads=1)
    message = render.send()
    wait_until(started.exists, timeout=180, what="the replica call to start")

    # When the message is cancelled while its call runs
    assert cancel(message) is CancelOutcome.REQUESTED

    # Then it fails as cancelled, the replica's call saw the cancellation, and nothing runs it again
    with pytest.raises(ResultFailure) as failure:
        message.get_result(block=True, timeout=RESULT_TIMEOUT_MS)
    assert failure.value.orig_exc_type == "MessageCancelledError"
    wait_until(stopped.exists, timeout=60, what="the replica's call to stop")
    assert stopped.read_text() == "cancelled"
    assert cancel(message) is CancelOutcome.FINISHED


def test_progress_reported_on_a_replica_is_read_with_get_progress(
    redis_broker: Any,
    redis_url: str,
    redis_namespace: str,
    ray_local: Any,
    no_lingering_replicas: None,
    start_worker: Any,
) -> None:
    # Given a replica body that reports its progress step by step, and returns whether each report was recorded
    redis_broker.add_middleware(
        Results(backend=RedisBackend(url=redis_url, namespace=f"{redis_namespace}-results"), store_results=True)
    )
    redis_broker.add_middleware(RayExecutionMiddleware(wait_slice=0.2))

    @dramatiq.actor(broker=redis_broker, max_retries=0, replicas=Replicas(min=1, max=1, version="progress"))
    def steps(count: int) -> list[bool]:
        return [report_progress(step, count, note=f"step {step}") for step in range(1, count + 1)]

    start_worker(redis_broker, threads=1)

    # When a message runs on its replica
    message = steps.send(20)
    recorded = message.get_result(block=True, timeout=RESULT_TIMEOUT_MS)

    # Then every report was recorded, and the last one is what any process reads
    assert recorded == [True] * 20
    progress = get_progress(message, broker=redis_broker)
    assert progress is not None and (progress.done, progress.total, progress.note) == (20, 20, "step 20")
