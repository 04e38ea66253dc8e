"""An app for the CLI tests of warm replicas: a Redis broker, Redis results, one actor on replicas.

DRAMATIQ_RAY_TEST_BROKER_URL   redis://...
DRAMATIQ_RAY_TEST_NAMESPACE    Redis key namespace (also names the lists the probes record into)
DRAMATIQ_RAY_TEST_QUEUE        queue name
DRAMATIQ_RAY_TEST_RAY_ADDRESS  the Ray head every worker process attaches to

Records, in Redis lists under the namespace: ``setups`` (one entry per setup run), ``starts`` (one per body
run), ``processed`` (the worker process that handled each message). A body holding for a release waits until
the key ``<namespace>:release`` exists.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from typing import Any

import dramatiq
import redis
from dramatiq.middleware import Middleware, Retries
from dramatiq.results.backends import RedisBackend

from dramatiq_ray import RayExecutionMiddleware, Replicas, Results, replica_state

SETTINGS = {name: value for name, value in os.environ.items() if name.startswith("DRAMATIQ_RAY_TEST_")}
BROKER_URL = SETTINGS.get("DRAMATIQ_RAY_TEST_BROKER_URL", "redis://127.0.0.1:6379/0")
NAMESPACE = SETTINGS.get("DRAMATIQ_RAY_TEST_NAMESPACE", "dramatiq-ray-test")
QUEUE = SETTINGS.get("DRAMATIQ_RAY_TEST_QUEUE", "default")
RAY_ADDRESS = SETTINGS.get("DRAMATIQ_RAY_TEST_RAY_ADDRESS")


def record(kind: str, entry: dict[str, Any]) -> None:
    client = redis.Redis.from_url(BROKER_URL)
    try:
        client.rpush(f"{NAMESPACE}:{kind}", json.dumps(entry))
    finally:
        client.close()


class RecordProcessed(Middleware):
    """Records which worker process handled each message."""

    def after_process_message(self, broker: Any, message: Any, *, result: Any = None, exception: Any = None) -> None:
        record("processed", {"pid": os.getpid(), "message_id": message.message_id})


def result_backend() -> RedisBackend:
    return RedisBackend(url=BROKER_URL, namespace=f"{NAMESPACE}-results")


from dramatiq.brokers.redis import RedisBroker  # noqa: E402

broker = RedisBroker(url=BROKER_URL, namespace=NAMESPACE)
for middleware in broker.middleware:
    if isinstance(middleware, Retries):
        middleware.min_backoff = middleware.max_backoff = 200
broker.add_middleware(Results(backend=result_backend()))
broker.add_middleware(RecordProcessed())
broker.add_middleware(
    RayExecutionMiddleware(
        address=RAY_ADDRESS,
        wait_slice=0.2,
        runtime_env={"env_vars": {**SETTINGS, "PYTHONPATH": os.environ.get("PYTHONPATH", "")}},
    )
)
dramatiq.set_broker(broker)


def load_model() -> dict[str, Any]:
    load_id = uuid.uuid4().hex
    record("setups", {"load_id": load_id, "pid": os.getpid()})
    return {"load_id": load_id}


@dramatiq.actor(
    queue_name=QUEUE, store_results=True, max_retries=3, replicas=Replicas(setup=load_model, max_concurrency=4)
)
def infer(value: int, hold_seconds: float = 0.0, wait_for_release: bool = False) -> dict[str, Any]:
    record("starts", {"value": value, "pid": os.getpid()})
    if wait_for_release:
        client = redis.Redis.from_url(BROKER_URL)
        try:
            while not client.exists(f"{NAMESPACE}:release"):
                time.sleep(0.05)
        finally:
            client.close()
    time.sleep(hold_seconds)
    return {"value": value * 2, "load_id": replica_state()["load_id"], "pid": os.getpid()}


@dramatiq.actor(
    queue_name=QUEUE,
    store_results=True,
    max_retries=3,
    ray_options={"num_gpus": 1},
    replicas=Replicas(min=2, max=2, version="gpu"),
)
def on_gpu(value: int, together: int = 2) -> dict[str, Any]:
    """Where a GPU replica runs: its pid and the GPU ids Ray gave it, once ``together`` bodies run at once."""
    record("gpu_starts", {"value": value})
    client = redis.Redis.from_url(BROKER_URL)
    try:
        while client.llen(f"{NAMESPACE}:gpu_starts") < together:
            time.sleep(0.05)
    finally:
        client.close()
    return {"value": value, "pid": os.getpid(), "gpus": os.environ.get("CUDA_VISIBLE_DEVICES")}


#: A custom resource each node of the two-node tests advertises once: a replica asking for it takes a node's only
#: slot, so two replicas run on two nodes.
NODE_SLOT = "dramatiq_ray_test_replica_slot"


@dramatiq.actor(
    queue_name=QUEUE,
    store_results=True,
    max_retries=3,
    ray_options={"resources": {NODE_SLOT: 1}},
    replicas=Replicas(setup=load_model, min=2, max=2, version="nodes"),
)
def on_node(value: int, together: int = 2) -> dict[str, Any]:
    """Which node and replica run a call, once ``together`` bodies run at once."""
    import ray

    record("node_starts", {"value": value})
    client = redis.Redis.from_url(BROKER_URL)
    try:
        while client.llen(f"{NAMESPACE}:node_starts") < together:
            time.sleep(0.05)
    finally:
        client.close()
    node = ray.get_runtime_context().get_node_id()
    return {"value": value, "node": node, "pid": os.getpid(), "load_id": replica_state()["load_id"]}
