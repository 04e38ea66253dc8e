"""An app for the CLI tests of RayExecutionMiddleware: Redis or RabbitMQ chosen by environment variables.

DRAMATIQ_RAY_TEST_BROKER_URL   redis://... or amqp://...
DRAMATIQ_RAY_TEST_NAMESPACE    Redis key namespace (also names the list the probes record into)
DRAMATIQ_RAY_TEST_QUEUE        queue name
DRAMATIQ_RAY_TEST_RECORD_URL   Redis URL the probes record into (default: the broker URL)
DRAMATIQ_RAY_TEST_PYTHONPATH   import path for the Ray workers (default: this process's PYTHONPATH)

Ray workers import this module too; the middleware's runtime_env hands them the same variables.
"""

from __future__ import annotations

import json
import os
import time

import dramatiq
import redis
from dramatiq.middleware import Retries

from dramatiq_ray import RayExecutionMiddleware

SETTINGS = {name: value for name, value in os.environ.items() if name.startswith("DRAMATIQ_RAY_TEST_")}
BROKER_URL = SETTINGS.get("DRAMATIQ_RAY_TEST_BROKER_URL", "redis://127.0.0.1:6379/0")
NAMESPACE = SETTINGS.get("DRAMATIQ_RAY_TEST_NAMESPACE", "dramatiq-ray-test")
QUEUE = SETTINGS.get("DRAMATIQ_RAY_TEST_QUEUE", "default")
RECORD_URL = SETTINGS.get("DRAMATIQ_RAY_TEST_RECORD_URL", BROKER_URL)

if BROKER_URL.startswith("amqp"):
    from dramatiq.brokers.rabbitmq import RabbitmqBroker

    broker: dramatiq.Broker = RabbitmqBroker(url=BROKER_URL)
else:
    from dramatiq.brokers.redis import RedisBroker

    broker = RedisBroker(url=BROKER_URL, namespace=NAMESPACE)
for middleware in broker.middleware:
    if isinstance(middleware, Retries):
        # Fast retries so that a message failed by a lost Ray connection is retried within the test.
        middleware.min_backoff = middleware.max_backoff = 200
# With Ray Client the Ray workers do not inherit this process's import path: the test hands it over.
ENV_VARS = {**SETTINGS, "PYTHONPATH": SETTINGS.get("DRAMATIQ_RAY_TEST_PYTHONPATH", os.environ.get("PYTHONPATH", ""))}
broker.add_middleware(RayExecutionMiddleware(runtime_env={"env_vars": ENV_VARS}))
dramatiq.set_broker(broker)


@dramatiq.actor(queue_name=QUEUE, max_retries=20)
def probe(value: int, hold_seconds: float = 0.0) -> None:
    """Record where this body ran: pid, the Ray cluster (GCS address), node and job (one per worker process)."""
    import ray

    context = ray.get_runtime_context()
    time.sleep(hold_seconds)
    record = {
        "value": value,
        "pid": os.getpid(),
        "gcs": context.gcs_address,
        "node": context.get_node_id(),
        "job": context.get_job_id(),
    }
    client = redis.Redis.from_url(RECORD_URL)
    try:
        client.rpush(f"{NAMESPACE}:records", json.dumps(record))
    finally:
        client.close()
