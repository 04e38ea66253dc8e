"""The broker and actors of the pipelines example.

Results larger than 1 KiB (a tiny threshold, so that every list here spills) are written to RESULTS_DIR and the
result backend keeps a pointer. When a pipeline passes such a result to its next step, the next message carries
the pointer, and the next actor receives the original value.

REDIS_URL          the broker and result backend (default redis://localhost:6379/0)
EXAMPLE_NAMESPACE  prefix of this example's Redis keys (default dramatiq-ray-example-pipelines)
RESULTS_DIR        where large results are written (default: dramatiq-ray-example-results in the temp dir)
"""

from __future__ import annotations

import os
import tempfile

import dramatiq
import redis
from dramatiq.brokers.redis import RedisBroker
from dramatiq.results.backends import RedisBackend

from dramatiq_ray import FilesystemStore, RayExecutionMiddleware, Results

REDIS_URL = os.environ.get("REDIS_URL", "redis://localhost:6379/0")
NAMESPACE = os.environ.get("EXAMPLE_NAMESPACE", "dramatiq-ray-example-pipelines")
RESULTS_DIR = os.environ.get("RESULTS_DIR") or os.path.join(tempfile.gettempdir(), "dramatiq-ray-example-results")

broker = RedisBroker(url=REDIS_URL, namespace=NAMESPACE)
broker.add_middleware(
    Results(
        # No socket timeout: blocking get_result calls wait longer than redis-py's default 5 s.
        backend=RedisBackend(client=redis.Redis.from_url(REDIS_URL, socket_timeout=None), namespace=f"{NAMESPACE}-r"),
        store=FilesystemStore(RESULTS_DIR),
        max_inline_bytes=1024,
    )
)
broker.add_middleware(RayExecutionMiddleware())
dramatiq.set_broker(broker)


@dramatiq.actor(store_results=True)
def generate(count: int) -> list[int]:
    """Step 1: a list of ``count`` numbers (spilled: larger than 1 KiB)."""
    return list(range(count))


@dramatiq.actor(store_results=True)
def square(values: list[int]) -> list[int]:
    """Step 2: receives step 1's list itself, not its pointer; returns another large list."""
    if not isinstance(values, list):
        raise TypeError(f"expected the list itself, got {values!r}")
    return [value * value for value in values]


@dramatiq.actor(store_results=True)
def summarize(values: list[int]) -> dict[str, int]:
    """Step 3: a small result (kept inline in Redis)."""
    return {"count": len(values), "total": sum(values)}


@dramatiq.actor(store_results=True)
def tile(index: int, size: int) -> list[int]:
    """A member of the group: each returns a large list."""
    return [index] * size
