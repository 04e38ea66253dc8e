"""Fault cases 2 and 3: Ray fails under a running worker.

2. The Ray worker process running a body is killed: the message fails as a retryable Ray system failure and
   succeeds on retry.
3. No Ray at worker start: an ERROR naming the address, messages fail retryably (``RayUnavailableError``) and
   back off, and run once Ray appears; the Ray head restarted mid-run: in-flight messages are retried, later ones
   succeed, in the same worker process.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dramatiq
import pytest
from dramatiq.middleware import Middleware
from dramatiq.results.backends import StubBackend

from dramatiq_ray import RayExecutionMiddleware, RayWorkerCrashedError, Results, Retries
from dramatiq_ray.execution.connection import check_reachable
from dramatiq_ray.execution.local_head import LocalHead
from tests._services import free_port, wait_until
from tests.faults.conftest import alive, assert_all_gone, cli_worker_pids

RESULT_TIMEOUT_MS = 240_000


class FailureLog(Middleware):
    """Records the exception of every failed attempt (in-process workers only)."""

    def __init__(self) -> None:
        self.failures: list[BaseException] = []

    def after_process_message(self, broker: Any, message: Any, *, result: Any = None, exception: Any = None) -> None:
        if exception is not None:
            self.failures.append(exception)


# --- 2. the Ray worker process dies --------------------------------------------------------------------------


def test_killed_ray_worker_fails_the_message_retryably_and_the_retry_succeeds(
    stub_broker, ray_local, start_worker, tmp_path: Path
) -> None:
    # Given a broker running bodies on Ray, with results and fast retries
    failures = FailureLog()
    stub_broker.add_middleware(failures)
    stub_broker.add_middleware(Results(backend=StubBackend()))
    stub_broker.add_middleware(Retries(max_retries=3, min_backoff=100, max_backoff=500))
    stub_broker.add_middleware(RayExecutionMiddleware())
    release = tmp_path / "release"

    @dramatiq.actor(broker=stub_broker, store_results=True)
    def slow_square(value: int) -> int:
        import time

        (tmp_path / f"attempt-{os.getpid()}").write_text("")
        while not release.exists():
            time.sleep(0.05)
        return value * value

    start_worker(stub_broker, threads=2)
    message = slow_square.send(7)
    [first] = wait_until(lambda: list(tmp_path.glob("attempt-*")), timeout=120, what="the body to start on Ray")
    ray_pid = int(first.name.split("-")[1])

    # When the Ray worker process running it is killed
    os.kill(ray_pid, signal.SIGKILL)
    wait_until(lambda: failures.failures, timeout=120, what="the attempt to fail")
    release.write_text("")

    # Then the first attempt failed as a crashed Ray worker, and the retry, in another process, succeeded
    assert message.get_result(block=True, timeout=RESULT_TIMEOUT_MS) == 49
    assert [type(error) for error in failures.failures] == [RayWorkerCrashedError]
    assert len(list(tmp_path.glob("attempt-*"))) == 2
    assert not alive(ray_pid)


# --- 3. Ray is not there, or its head restarts ---------------------------------------------------------------


@pytest.fixture
def absent_head() -> Iterator[LocalHead]:
    """A Ray head with a reserved address that is not started yet; stopped by pid at the end."""
    temp_dir = tempfile.mkdtemp(prefix="drf-")
    head = LocalHead(temp_dir=temp_dir, num_cpus=2, port=free_port())
    yield head
    head.stop()
    leftovers = head.pids()
    shutil.rmtree(temp_dir, ignore_errors=True)
    assert not leftovers, f"Ray head processes left behind: {sorted(leftovers)}"


def test_check_reachable_refuses_an_address_where_nothing_answers_at_once() -> None:
    with pytest.raises(ConnectionError, match="nothing answers"):
        check_reachable(f"127.0.0.1:{free_port()}")
    check_reachable("auto")  # left to ray.init


def test_runtime_recognises_an_error_naming_its_own_node_as_a_lost_connection(ray_local) -> None:
    from dramatiq_ray.execution.connection import RayRuntime

    runtime = RayRuntime()
    own = ray_local.get_runtime_context().get_node_id()
    assert runtime.names_local_node(f"Task failed because the node it was running on is dead. node ID: {own}.")
    assert not runtime.names_local_node(f"Task failed because the node it was running on is dead. node ID: {'0' * 56}")


@pytest.mark.cli
def test_worker_started_without_ray_logs_the_address_and_runs_messages_once_ray_appears(
    dramatiq_cli, fault_env, redis_url, redis_namespace, queue_name, ledger, messages_of, absent_head
) -> None:
    from dramatiq.brokers.redis import RedisBroker

    # Given a CLI worker started while nothing answers at its Ray address
    cli = dramatiq_cli(
        "tests.faults.app", "--processes", "1", "--threads", "2", env={**fault_env, "RAY_ADDRESS": absent_head.address}
    )
    cli.wait_ready(processes=1)
    [worker_pid] = cli_worker_pids(cli)
    assert (
        f"[dramatiq_ray.execution.connection] [ERROR] Could not attach to Ray at {absent_head.address}" in cli.output()
    )

    # When messages arrive, they fail retryably while Ray is absent
    producer = RedisBroker(url=redis_url, namespace=redis_namespace)
    batch = messages_of(queue_name, range(4))
    try:
        for message, _ in batch:
            producer.enqueue(message)
        wait_until(
            lambda: cli.output().count("RayUnavailableError") >= 2, timeout=120, what="messages to fail retryably"
        )
        assert not ledger.attempts()

        # And once the head appears, every message completes in the same worker process
        absent_head.start()
        assert ledger.assert_every_outcome(batch) == 4
    finally:
        producer.close()
    assert cli_worker_pids(cli) == {worker_pid}
    assert cli.stop() == 0, cli.output()
    assert_all_gone({worker_pid}, what="the worker process")


@pytest.mark.cli
def test_ray_head_restart_mid_run_retries_in_flight_messages_without_a_worker_restart(
    dramatiq_cli, fault_env, redis_url, redis_namespace, queue_name, ledger, messages_of, ray_head
) -> None:
    from dramatiq.brokers.redis import RedisBroker

    # Given a CLI worker attached to a head, busy with messages whose bodies hold for a while
    cli = dramatiq_cli(
        "tests.faults.app", "--processes", "1", "--threads", "2", env={**fault_env, "RAY_ADDRESS": ray_head.address}
    )
    cli.wait_ready(processes=1)
    [worker_pid] = cli_worker_pids(cli)
    producer = RedisBroker(url=redis_url, namespace=redis_namespace)
    in_flight = messages_of(queue_name, range(2), hold_seconds=120.0)
    try:
        for message, _ in in_flight:
            producer.enqueue(message)
        wait_until(lambda: len(ledger.attempts()) >= 2, timeout=240, what="both bodies to start")

        # When the head dies (every process of it SIGKILLed: a plain stop drains running tasks first) and comes
        # back on the same address
        for pid in ray_head.pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        ray_head.stop()
        ray_head.start()
        later = messages_of(queue_name, range(2, 6))
        for message, _ in later:
            producer.enqueue(message)

        # Then the in-flight messages ran again and succeeded, and so did the later ones
        assert ledger.assert_every_outcome(in_flight + later) == 6
    finally:
        producer.close()
    # Both in-flight messages were interrupted (their bodies hold for two minutes on a first attempt) and ran again
    assert ledger.attempts().count(0) == 2 and ledger.attempts().count(1) == 2
    # as a retryable failure of the dead node (node died; on a busy machine Ray may notice the task's worker dying,
    # or the lost connection, first); the worker then re-attached instead of waiting on a dead connection
    dead_node = ("RayNodeDiedError", "RayWorkerCrashedError", "RayUnavailableError")
    assert sum(cli.output().count(f"dramatiq_ray.errors.{name}") for name in dead_node) >= 2, cli.output()
    assert "dramatiq_ray.errors.RayNodeDiedError" in cli.output()
    assert "Re-attaching to Ray after a lost connection" in cli.output()
    assert cli_worker_pids(cli) == {worker_pid}
    assert cli.stop() == 0, cli.output()
    assert_all_gone({worker_pid}, what="the worker process")
