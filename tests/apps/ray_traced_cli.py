"""A ``dramatiq`` CLI app traced with OpenTelemetry: the worker process and its Ray workers export their spans over
OTLP/HTTP to ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` (the test's receiver).

DRAMATIQ_RAY_TEST_BROKER_URL   redis://...
DRAMATIQ_RAY_TEST_NAMESPACE    Redis key namespace
DRAMATIQ_RAY_TEST_QUEUE        queue name
"""

from __future__ import annotations

import os

import dramatiq
from dramatiq.brokers.redis import RedisBroker
from dramatiq.middleware import AgeLimit

from dramatiq_ray import RayExecutionMiddleware, Tracing
from tests.apps import otel_setup

otel_setup.setup("dramatiq-worker")

SETTINGS = {name: value for name, value in os.environ.items() if name.startswith("DRAMATIQ_RAY_TEST_")}
broker = RedisBroker(
    url=SETTINGS.get("DRAMATIQ_RAY_TEST_BROKER_URL", "redis://127.0.0.1:6379/0"),
    namespace=SETTINGS.get("DRAMATIQ_RAY_TEST_NAMESPACE", "dramatiq-ray-test"),
)
broker.add_middleware(Tracing(), before=AgeLimit)
ENV_VARS = {
    "PYTHONPATH": os.environ.get("PYTHONPATH", ""),
    "DRAMATIQ_RAY_OTEL_SETUP": "tests.apps.otel_setup:setup",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": os.environ["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"],
}
broker.add_middleware(RayExecutionMiddleware(runtime_env={"env_vars": ENV_VARS}))
dramatiq.set_broker(broker)


@dramatiq.actor(queue_name=SETTINGS.get("DRAMATIQ_RAY_TEST_QUEUE", "default"), max_retries=0)
def traced(value: int) -> int:
    return value * 2
