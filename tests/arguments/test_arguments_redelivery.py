"""A worker SIGKILLed in the middle of a message with arguments by reference: the redelivered message still
finds its blobs, and they go only once it is done (real RabbitMQ, Redis results, the real dramatiq CLI)."""

from __future__ import annotations

import os
import signal
import uuid
from pathlib import Path

import dramatiq
import pytest
import redis
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from dramatiq.results.backends import RedisBackend

from dramatiq_ray import FilesystemStore, Results
from tests._services import delete_rabbitmq_queues, wait_until

pytestmark = pytest.mark.cli


def arg_blobs(root: Path) -> list[Path]:
    return sorted(p for p in (root / "args").rglob("*.*") if "named" not in p.parts and ".tmp-" not in p.name)


def test_a_killed_worker_s_message_is_redelivered_with_its_argument_blobs(
    dramatiq_cli, rabbitmq_url, redis_url, redis_namespace, tmp_path
) -> None:
    import psutil

    queue = f"arguments-{uuid.uuid4().hex[:8]}"
    store_root, flags = tmp_path / "store", tmp_path / "flags"
    flags.mkdir()
    env = {
        "DRAMATIQ_RAY_TEST_BROKER_URL": rabbitmq_url,
        "DRAMATIQ_RAY_TEST_RESULTS_URL": redis_url,
        "DRAMATIQ_RAY_TEST_NAMESPACE": redis_namespace,
        "DRAMATIQ_RAY_TEST_QUEUE": queue,
        "DRAMATIQ_RAY_TEST_STORE_PATH": str(store_root),
    }
    # A producer with the same configuration as the workers
    producer = RabbitmqBroker(url=rabbitmq_url)
    producer.add_middleware(
        Results(
            backend=RedisBackend(client=redis.Redis.from_url(redis_url), namespace=redis_namespace),
            store=FilesystemStore(store_root),
            max_inline_arg_bytes=1024,
        )
    )
    dramatiq.set_broker(producer)
    try:

        @dramatiq.actor(broker=producer, actor_name="hold", queue_name=queue, store_results=True, max_retries=0)
        def hold(data: bytes, flags: str) -> int: ...

        payload = os.urandom(1024 * 1024)
        message = hold.send(payload, str(flags))
        assert len(arg_blobs(store_root)) == 1

        # Given a CLI worker busy with the message
        first = dramatiq_cli("tests.apps.arguments_app", "--processes", "1", "--threads", "1", env=env)
        first.wait_ready(processes=1)
        wait_until(lambda: (flags / "started-0").exists(), timeout=120, what="the first attempt to start")

        # When its worker process is killed with SIGKILL mid-message
        worker_pid = int((flags / "started-0").read_text())
        os.kill(worker_pid, signal.SIGKILL)
        first.proc.wait(timeout=120)
        assert not psutil.pid_exists(worker_pid) or psutil.Process(worker_pid).status() == psutil.STATUS_ZOMBIE

        # Then the blob is still there, and a new worker runs the redelivered message with it
        assert len(arg_blobs(store_root)) == 1
        (flags / "release").touch()
        second = dramatiq_cli("tests.apps.arguments_app", "--processes", "1", "--threads", "1", env=env)
        second.wait_ready(processes=1)
        assert message.get_result(block=True, timeout=120_000) == len(payload)
        assert (flags / "started-1").exists()
        # And the blob goes once the redelivered message is acked
        wait_until(lambda: not arg_blobs(store_root), timeout=60, what="the argument blob to be released")
        assert second.stop() == 0, second.output()
    finally:
        producer.close()
        delete_rabbitmq_queues(rabbitmq_url, {queue, f"{queue}.DQ", f"{queue}.XQ"})
