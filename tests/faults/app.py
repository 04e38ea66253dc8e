"""The application the fault cases run in ``dramatiq`` CLI workers: Redis or RabbitMQ, results in Redis that
spill to a filesystem store, bodies on Ray, fast retries.

DRAMATIQ_RAY_TEST_BROKER_URL        redis://... or amqp://...
DRAMATIQ_RAY_TEST_RESULTS_URL       Redis URL for results and the attempt log (default: the broker URL)
DRAMATIQ_RAY_TEST_NAMESPACE         key namespace (broker, results, attempt log)
DRAMATIQ_RAY_TEST_QUEUE             queue name
DRAMATIQ_RAY_TEST_STORE_PATH        root of the filesystem store
DRAMATIQ_RAY_TEST_MAX_INLINE_BYTES  spill threshold (default 1024)
DRAMATIQ_RAY_TEST_HEARTBEAT_MS      Redis broker heartbeat timeout (default 60000, Dramatiq's)

Ray workers import this module too; the middleware's runtime_env hands them the same variables.
"""

from __future__ import annotations

import os
import time
from typing import Any

import dramatiq
import redis
from dramatiq.results.backends import RedisBackend

from dramatiq_ray import FilesystemStore, RayExecutionMiddleware, Results, Retries

SETTINGS = {name: value for name, value in os.environ.items() if name.startswith("DRAMATIQ_RAY_TEST_")}
BROKER_URL = SETTINGS.get("DRAMATIQ_RAY_TEST_BROKER_URL", "redis://127.0.0.1:6379/0")
RESULTS_URL = SETTINGS.get("DRAMATIQ_RAY_TEST_RESULTS_URL", BROKER_URL)
NAMESPACE = SETTINGS.get("DRAMATIQ_RAY_TEST_NAMESPACE", "dramatiq-ray-faults")
QUEUE = SETTINGS.get("DRAMATIQ_RAY_TEST_QUEUE", "default")
STORE_PATH = SETTINGS.get("DRAMATIQ_RAY_TEST_STORE_PATH", "")
MAX_INLINE_BYTES = int(SETTINGS.get("DRAMATIQ_RAY_TEST_MAX_INLINE_BYTES", "1024"))
HEARTBEAT_MS = int(SETTINGS.get("DRAMATIQ_RAY_TEST_HEARTBEAT_MS", "60000"))


def results_backend() -> RedisBackend:
    return RedisBackend(url=RESULTS_URL, namespace=f"{NAMESPACE}-results")


if BROKER_URL.startswith("amqp"):
    from dramatiq.brokers.rabbitmq import RabbitmqBroker

    broker: dramatiq.Broker = RabbitmqBroker(url=BROKER_URL)
else:
    from dramatiq.brokers.redis import RedisBroker

    # Maintenance on every command, so that a dead worker's messages come back as soon as its heartbeat expires.
    broker = RedisBroker(
        url=BROKER_URL, namespace=NAMESPACE, heartbeat_timeout=HEARTBEAT_MS, maintenance_chance=1_000_000
    )
broker.add_middleware(
    Results(
        backend=results_backend(),
        store=FilesystemStore(STORE_PATH) if STORE_PATH else None,
        max_inline_bytes=MAX_INLINE_BYTES,
    )
)
broker.add_middleware(Retries(max_retries=30, min_backoff=200, max_backoff=2_000))
ENV_VARS = {**SETTINGS, "PYTHONPATH": os.environ.get("PYTHONPATH", "")}
broker.add_middleware(RayExecutionMiddleware(runtime_env={"env_vars": ENV_VARS}))
dramatiq.set_broker(broker)


@dramatiq.actor(queue_name=QUEUE, store_results=True)
def work(value: int, size: int = 0, hold_seconds: float = 0.0) -> dict[str, Any]:
    """Log the attempt, hold for a while on the first attempt only (the work a fault interrupts), and return
    the value padded to ``size`` characters."""
    client = redis.Redis.from_url(RESULTS_URL)
    try:
        client.rpush(f"{NAMESPACE}:attempts", value)
        attempt = int(client.incr(f"{NAMESPACE}:attempt:{value}"))
    finally:
        client.close()
    if hold_seconds and attempt == 1:
        time.sleep(hold_seconds)
    return expected(value, size)


def expected(value: int, size: int) -> dict[str, Any]:
    """The result ``work(value, size)`` returns."""
    return {"value": value, "pad": "x" * size}
