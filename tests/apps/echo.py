"""A tiny app for the CLI tests: a Redis or RabbitMQ broker chosen by environment variables.

DRAMATIQ_RAY_TEST_BROKER_URL   redis://... or amqp://...
DRAMATIQ_RAY_TEST_NAMESPACE    Redis key namespace (also used for the record key)
DRAMATIQ_RAY_TEST_QUEUE        queue name
"""

from __future__ import annotations

import os

import dramatiq
import redis

BROKER_URL = os.environ["DRAMATIQ_RAY_TEST_BROKER_URL"]
NAMESPACE = os.environ.get("DRAMATIQ_RAY_TEST_NAMESPACE", "dramatiq-ray-test")
QUEUE = os.environ.get("DRAMATIQ_RAY_TEST_QUEUE", "default")
RECORD_URL = os.environ.get("DRAMATIQ_RAY_TEST_RECORD_URL", BROKER_URL)

if BROKER_URL.startswith("amqp"):
    from dramatiq.brokers.rabbitmq import RabbitmqBroker

    broker: dramatiq.Broker = RabbitmqBroker(url=BROKER_URL)
else:
    from dramatiq.brokers.redis import RedisBroker

    broker = RedisBroker(url=BROKER_URL, namespace=NAMESPACE)
dramatiq.set_broker(broker)


@dramatiq.actor(queue_name=QUEUE)
def record(value: int) -> None:
    """Push ``value`` and this process's pid onto a Redis list the test reads."""
    client = redis.Redis.from_url(RECORD_URL)
    client.rpush(f"{NAMESPACE}:records", f"{value}:{os.getpid()}")
