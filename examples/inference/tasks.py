"""The broker and actor of the inference example: a numpy "model" loaded once per warm replica.

Imported by the ``dramatiq`` worker processes, by the sender, and by the replicas (by module path), so importing
it only builds objects: it connects to nothing and never touches Ray.

REDIS_URL          the broker and result backend (default redis://localhost:6379/0)
EXAMPLE_NAMESPACE  prefix of this example's Redis keys (default dramatiq-ray-inference)
"""

from __future__ import annotations

import os
import time
import uuid
from typing import Any

import dramatiq
import numpy as np
import redis
from dramatiq.brokers.redis import RedisBroker
from dramatiq.results.backends import RedisBackend

import dramatiq_ray
from dramatiq_ray import RayExecutionMiddleware, Replicas, Results

REDIS_URL = os.environ.get("REDIS_URL", "redis://localhost:6379/0")
NAMESPACE = os.environ.get("EXAMPLE_NAMESPACE", "dramatiq-ray-inference")
#: The "model": a fixed random projection from FEATURES inputs to CLASSES scores.
FEATURES, CLASSES, SEED = 64, 10, 2024

broker = RedisBroker(url=REDIS_URL, namespace=NAMESPACE)
broker.add_middleware(
    Results(
        backend=RedisBackend(
            client=redis.Redis.from_url(REDIS_URL, socket_timeout=None), namespace=f"{NAMESPACE}-results"
        )
    )
)
broker.add_middleware(RayExecutionMiddleware())
dramatiq.set_broker(broker)


def weights() -> np.ndarray:
    """The model's weights (the sender recomputes them to check the answers)."""
    return np.random.default_rng(SEED).standard_normal((CLASSES, FEATURES))


def load_model() -> dict[str, Any]:
    """Runs once per replica: a real model would read weights from disk or download them here."""
    time.sleep(1.0)  # what a slow load costs, paid once per replica instead of once per message
    return {"weights": weights(), "replica": uuid.uuid4().hex[:8], "loaded_at": time.time()}


@dramatiq.actor(
    store_results=True,
    ray_options={"num_cpus": 1},
    replicas=Replicas(setup=load_model, min=1, max=2, max_concurrency=2, idle_timeout_s=60, version="2024-1"),
)
def classify(features: list[float]) -> dict[str, Any]:
    """Runs on a warm replica, with the model that replica loaded."""
    model = dramatiq_ray.replica_state()
    scores = model["weights"] @ np.asarray(features)
    return {"label": int(np.argmax(scores)), "replica": model["replica"]}
