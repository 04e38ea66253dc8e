"""A ``dramatiq`` CLI app whose bodies log on Ray, for the tests of logs coming back to the worker's output.

DRAMATIQ_RAY_TEST_BROKER_URL   redis://...
DRAMATIQ_RAY_TEST_NAMESPACE    Redis key namespace
DRAMATIQ_RAY_TEST_QUEUE        queue name
"""

from __future__ import annotations

import logging
import os

import dramatiq
from dramatiq.brokers.redis import RedisBroker

from dramatiq_ray import RayExecutionMiddleware

SETTINGS = {name: value for name, value in os.environ.items() if name.startswith("DRAMATIQ_RAY_TEST_")}
QUEUE = SETTINGS.get("DRAMATIQ_RAY_TEST_QUEUE", "default")

broker = RedisBroker(
    url=SETTINGS.get("DRAMATIQ_RAY_TEST_BROKER_URL", "redis://127.0.0.1:6379/0"),
    namespace=SETTINGS.get("DRAMATIQ_RAY_TEST_NAMESPACE", "dramatiq-ray-test"),
)
ENV_VARS = {"PYTHONPATH": os.environ.get("PYTHONPATH", "")}
broker.add_middleware(RayExecutionMiddleware(runtime_env={"env_vars": ENV_VARS}))
dramatiq.set_broker(broker)

logger = logging.getLogger("tests.apps.body")


@dramatiq.actor(queue_name=QUEUE, max_retries=0)
def chatty() -> None:
    """Log the same INFO line three times: the same text from every message, as Ray would deduplicate it."""
    for _ in range(3):
        logger.info("the same line from every message")


@dramatiq.actor(queue_name=QUEUE, max_retries=0)
def chatty_fails() -> None:
    logger.info("a line before failing")
    raise RuntimeError("the body failed on purpose")
