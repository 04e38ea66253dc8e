"""A CLI worker app whose actor holds until told: for the kill-and-redeliver test of arguments by reference.

Configured by environment: ``DRAMATIQ_RAY_TEST_BROKER_URL`` (RabbitMQ), ``DRAMATIQ_RAY_TEST_RESULTS_URL`` (Redis),
``DRAMATIQ_RAY_TEST_NAMESPACE``, ``DRAMATIQ_RAY_TEST_QUEUE`` and ``DRAMATIQ_RAY_TEST_STORE_PATH``.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import dramatiq
import redis
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from dramatiq.results.backends import RedisBackend

from dramatiq_ray import FilesystemStore, Results

broker = RabbitmqBroker(url=os.environ["DRAMATIQ_RAY_TEST_BROKER_URL"])
broker.add_middleware(
    Results(
        backend=RedisBackend(
            client=redis.Redis.from_url(os.environ["DRAMATIQ_RAY_TEST_RESULTS_URL"]),
            namespace=os.environ["DRAMATIQ_RAY_TEST_NAMESPACE"],
        ),
        store=FilesystemStore(os.environ["DRAMATIQ_RAY_TEST_STORE_PATH"]),
        max_inline_arg_bytes=1024,
    )
)
dramatiq.set_broker(broker)


@dramatiq.actor(queue_name=os.environ["DRAMATIQ_RAY_TEST_QUEUE"], store_results=True, max_retries=0)
def hold(data: bytes, flags: str) -> int:
    """Record the attempt, then wait until the test creates ``flags/release`` (another process: a file is the
    signal it can see)."""
    directory = Path(flags)
    attempt = len(list(directory.glob("started-*")))
    (directory / f"started-{attempt}").write_text(str(os.getpid()))
    while not (directory / "release").exists():
        time.sleep(0.02)
    return len(data)
