"""Fault case 1: a ``dramatiq`` CLI worker process is killed with SIGKILL in the middle of its work.

Its unacknowledged messages come back (RabbitMQ: when the connection drops; Redis: once the dead worker's
heartbeat expires) and a restarted worker completes them; every result is stored once, none is lost.
"""

from __future__ import annotations

import os
import signal
from typing import Any

import pytest

from tests import _services
from tests._services import wait_until
from tests.faults.conftest import alive, assert_all_gone, cli_worker_pids, descendants

pytestmark = pytest.mark.cli

MESSAGES = 6
HOLD_SECONDS = 2.0


def kill_a_busy_worker_then_restart(dramatiq_cli, env, producer, queue_name, ledger, messages_of) -> None:
    # Given one CLI worker process busy with a batch of messages (each body holds for a while on Ray)
    first = dramatiq_cli("tests.faults.app", "--processes", "1", "--threads", "2", env=env)
    first.wait_ready(processes=1)
    [worker_pid] = cli_worker_pids(first)
    batch = messages_of(queue_name, range(MESSAGES), hold_seconds=HOLD_SECONDS)
    for message, _ in batch:
        producer.enqueue(message)
    wait_until(lambda: ledger.attempts(), timeout=240, what="the first body to start")
    doomed = {worker_pid, *descendants(worker_pid)}

    # When that worker process is killed with SIGKILL mid-task
    os.kill(worker_pid, signal.SIGKILL)
    first.proc.wait(timeout=120)  # the CLI shuts its other processes down when a worker dies
    assert_all_gone(doomed, what="the killed worker and its children")

    # And a new worker is started
    second = dramatiq_cli("tests.faults.app", "--processes", "1", "--threads", "2", env=env)
    second.wait_ready(processes=1)

    # Then every message completes with its own result, stored once; none is lost
    checked = ledger.assert_every_outcome(batch)
    assert checked == MESSAGES
    assert set(ledger.attempts()) == set(range(MESSAGES))
    # The body the kill interrupted ran again (at least once: make actors idempotent)
    assert len(ledger.attempts()) > MESSAGES
    assert second.stop() == 0, second.output()
    assert not alive(first.proc.pid)


def test_killed_cli_worker_messages_are_redelivered_over_redis(
    dramatiq_cli, fault_env, redis_url, redis_namespace, queue_name, ledger, messages_of, ray_head
) -> None:
    from dramatiq.brokers.redis import RedisBroker

    # A short heartbeat timeout so that the restarted worker requeues the dead one's messages within the test.
    env = {**fault_env, "DRAMATIQ_RAY_TEST_HEARTBEAT_MS": "3000", "RAY_ADDRESS": ray_head.address}
    producer = RedisBroker(url=redis_url, namespace=redis_namespace)
    try:
        kill_a_busy_worker_then_restart(dramatiq_cli, env, producer, queue_name, ledger, messages_of)
    finally:
        producer.close()


def test_killed_cli_worker_messages_are_redelivered_over_rabbitmq(
    dramatiq_cli, fault_env, rabbitmq_url, queue_name, ledger, messages_of, ray_head
) -> None:
    from dramatiq.brokers.rabbitmq import RabbitmqBroker

    env = {**fault_env, "DRAMATIQ_RAY_TEST_BROKER_URL": rabbitmq_url, "RAY_ADDRESS": ray_head.address}
    producer: Any = RabbitmqBroker(url=rabbitmq_url)
    try:
        kill_a_busy_worker_then_restart(dramatiq_cli, env, producer, queue_name, ledger, messages_of)
    finally:
        producer.close()
        _services.delete_rabbitmq_queues(rabbitmq_url, {queue_name})
