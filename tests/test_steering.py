"""Cancel and progress (``dramatiq_ray.cancel``, ``report_progress``, ``get_progress``) on a real Redis broker
and result backend, with bodies in the worker thread and in real Ray tasks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from typing import Any

import dramatiq
import pytest
from dramatiq.results import ResultFailure, ResultMissing
from dramatiq.results.backends import RedisBackend

from dramatiq_ray import (
    CancelOutcome,
    ConfigurationError,
    RayExecutionMiddleware,
    Results,
    cancel,
    get_progress,
    get_progress_async,
    report_progress,
)
from tests._services import wait_until

pytestmark = pytest.mark.timeout(300)

RESULT_TIMEOUT_MS = 120_000


def results_for(redis_url: str, redis_namespace: str) -> Results:
    return Results(backend=RedisBackend(url=redis_url, namespace=f"{redis_namespace}-results"), store_results=True)


@pytest.fixture
def broker(redis_broker: Any, redis_url: str, redis_namespace: str) -> Any:
    """A Redis broker with dramatiq_ray.Results over a Redis result backend (bodies in the worker thread)."""
    redis_broker.add_middleware(results_for(redis_url, redis_namespace))
    return redis_broker


@pytest.fixture
def ray_broker(broker: Any, ray_local: Any) -> Any:
    """The same, with bodies on the test run's local Ray."""
    broker.add_middleware(RayExecutionMiddleware(wait_slice=0.2))
    return broker


def process_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_cancel_before_start_skips_a_delayed_message_and_its_body_never_runs(broker, start_worker) -> None:
    ran: list[int] = []

    @dramatiq.actor(broker=broker)
    def work(value: int) -> int:
        ran.append(value)
        return value

    message = work.send_with_options(args=(1,), delay=300)
    assert cancel(message) is CancelOutcome.REQUESTED
    start_worker(broker)

    with pytest.raises(ResultFailure) as failure:
        message.get_result(block=True, timeout=RESULT_TIMEOUT_MS)
    assert failure.value.orig_exc_type == "MessageCancelledError"
    assert ran == []


def test_cancel_of_a_finished_message_is_a_no_op_that_says_so(broker, start_worker) -> None:
    @dramatiq.actor(broker=broker)
    def work(value: int) -> int:
        return value * 2

    start_worker(broker)
    message = work.send(21)
    assert message.get_result(block=True, timeout=RESULT_TIMEOUT_MS) == 42
    wait_until(lambda: cancel(message) is CancelOutcome.FINISHED, timeout=30, what="the message to be finished")

    assert message.get_result() == 42


def test_cancel_of_an_unknown_message_is_a_no_op_that_says_so(broker) -> None:
    assert cancel("00000000-0000-0000-0000-000000000000", broker=broker) is CancelOutcome.UNKNOWN


def test_cancel_without_a_redis_result_backend_says_what_to_add(stub_broker) -> None:
    with pytest.raises(ConfigurationError, match="Redis result backend"):
        cancel("some-id", broker=stub_broker)


def test_cancel_stops_a_running_ray_task_and_kills_its_process(ray_broker, start_worker) -> None:
    @dramatiq.actor(broker=ray_broker, max_retries=3)
    def sleeper() -> None:
        report_progress(0, note=str(os.getpid()))
        time.sleep(600)

    start_worker(ray_broker, threads=1)
    message = sleeper.send()
    progress = wait_until(lambda: get_progress(message), timeout=120, what="the Ray task to start")
    pid = int(progress.note)

    assert cancel(message) is CancelOutcome.REQUESTED
    with pytest.raises(ResultFailure) as failure:
        message.get_result(block=True, timeout=RESULT_TIMEOUT_MS)
    assert failure.value.orig_exc_type == "MessageCancelledError"
    wait_until(lambda: process_gone(pid), timeout=60, what="the Ray worker process to be gone")
    assert cancel(message) is CancelOutcome.FINISHED  # and not retried: nothing runs it again


def test_cancel_stops_a_body_in_the_worker_thread_at_its_next_progress_report(broker, start_worker) -> None:
    @dramatiq.actor(broker=broker, max_retries=3)
    def loop() -> None:
        done = 0
        while True:
            report_progress(done)
            done += 1
            time.sleep(0.01)

    start_worker(broker, threads=1)
    message = loop.send()
    wait_until(lambda: get_progress(message), timeout=30, what="the body to report")
    cancel(message)

    with pytest.raises(ResultFailure) as failure:
        message.get_result(block=True, timeout=RESULT_TIMEOUT_MS)
    assert failure.value.orig_exc_type == "MessageCancelledError"


def test_cancel_of_a_pipeline_step_stops_the_pipeline(broker, start_worker) -> None:
    ran: list[str] = []

    @dramatiq.actor(broker=broker)
    def first() -> int:
        ran.append("first")
        return 1

    @dramatiq.actor(broker=broker)
    def second(value: int) -> int:
        ran.append("second")
        return value + 1

    pipe = dramatiq.pipeline([first.message(), second.message()], broker=broker).run(delay=200)
    cancel(pipe.messages[0])
    worker = start_worker(broker)

    with pytest.raises(ResultFailure):
        pipe.messages[0].get_result(block=True, timeout=RESULT_TIMEOUT_MS)
    broker.join(first.queue_name)
    worker.join()
    assert ran == []
    with pytest.raises(ResultMissing):
        pipe.messages[1].get_result()


def test_cancel_of_a_group_member_fails_that_member_only(broker, start_worker) -> None:
    @dramatiq.actor(broker=broker)
    def double(value: int) -> int:
        return value * 2

    group = dramatiq.group([double.message(1), double.message(2)], broker=broker).run(delay=200)
    cancel(group.children[1])  # type: ignore[arg-type]
    start_worker(broker)

    assert group.children[0].get_result(block=True, timeout=RESULT_TIMEOUT_MS) == 2  # type: ignore[union-attr]
    with pytest.raises(ResultFailure):
        group.wait(timeout=RESULT_TIMEOUT_MS)


def test_progress_from_a_ray_task_is_read_by_another_process(
    ray_broker, start_worker, redis_url, redis_namespace, python_subprocess_env
) -> None:
    @dramatiq.actor(broker=ray_broker)
    def steps(count: int) -> int:
        for step in range(1, count + 1):
            report_progress(step, count, note=f"step {step}")
        return count

    start_worker(ray_broker, threads=1)
    message = steps.send(50)
    assert message.get_result(block=True, timeout=RESULT_TIMEOUT_MS) == 50

    reader = (
        "import json, sys\n"
        "from dramatiq.brokers.stub import StubBroker\n"
        "from dramatiq.results.backends import RedisBackend\n"
        "from dramatiq_ray import Results, get_progress\n"
        "broker = StubBroker()\n"
        "broker.add_middleware(Results(backend=RedisBackend(url=sys.argv[1], namespace=sys.argv[2])))\n"
        "p = get_progress(sys.argv[3], broker=broker)\n"
        "print(json.dumps([p.done, p.total, p.note]))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", reader, redis_url, f"{redis_namespace}-results", message.message_id],
        env=python_subprocess_env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert json.loads(out) == [50, 50, "step 50"]  # the last value is always written


def test_get_progress_is_none_before_any_report(broker) -> None:
    assert get_progress("no-such-message", broker=broker) is None


def test_get_progress_async_reads_the_latest_progress(broker, start_worker) -> None:
    import asyncio

    @dramatiq.actor(broker=broker)
    def one() -> None:
        report_progress(1, 1)

    start_worker(broker)
    message = one.send()
    message.get_result(block=True, timeout=RESULT_TIMEOUT_MS)
    progress = asyncio.run(get_progress_async(message, broker=broker))
    assert progress is not None and (progress.done, progress.total) == (1, 1)


def test_report_progress_outside_a_body_records_nothing() -> None:
    assert report_progress(1, 2) is False
