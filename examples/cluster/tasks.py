"""The broker and actors of the cluster example.

REDIS_URL          the broker and result backend (default redis://localhost:6379/0)
EXAMPLE_NAMESPACE  prefix of this example's Redis keys (default dramatiq-ray-example-cluster)
RAY_ADDRESS        the Ray cluster to attach to, "host:port" of its head (default "auto": the cluster that
                   `ray start --head` started on this machine)
"""

from __future__ import annotations

import os

import dramatiq
import redis
from dramatiq.brokers.redis import RedisBroker
from dramatiq.results.backends import RedisBackend

from dramatiq_ray import RayExecutionMiddleware, Results

REDIS_URL = os.environ.get("REDIS_URL", "redis://localhost:6379/0")
NAMESPACE = os.environ.get("EXAMPLE_NAMESPACE", "dramatiq-ray-example-cluster")
RAY_ADDRESS = os.environ.get("RAY_ADDRESS") or "auto"
GREETING = "hello from the runtime_env"

#: What every Ray task of these actors gets, on whichever node it runs. On one machine Ray workers import this module
#: from the directory the dramatiq workers run in; on several, ship the code in the nodes' image, or add
#: "py_modules" / "working_dir" with a remote URI (s3://.../code.zip) here.
RUNTIME_ENV = {"env_vars": {"EXAMPLE_GREETING": GREETING}}

broker = RedisBroker(url=REDIS_URL, namespace=NAMESPACE)
broker.add_middleware(
    Results(
        # No socket timeout: blocking get_result calls wait longer than redis-py's default 5 s.
        backend=RedisBackend(client=redis.Redis.from_url(REDIS_URL, socket_timeout=None), namespace=f"{NAMESPACE}-r")
    )
)
broker.add_middleware(RayExecutionMiddleware(address=RAY_ADDRESS, runtime_env=RUNTIME_ENV))
dramatiq.set_broker(broker)


@dramatiq.actor(store_results=True, ray_options={"num_cpus": 1})
def where_am_i(label: str) -> dict[str, str]:
    """Report the cluster, node and environment this body ran in."""
    import ray

    context = ray.get_runtime_context()
    return {
        "label": label,
        "cluster": context.gcs_address,
        "node": context.get_node_id(),
        "greeting": os.environ.get("EXAMPLE_GREETING", "(not set)"),
        "pid": str(os.getpid()),
    }
