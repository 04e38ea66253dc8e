"""The broker and actor of the cancel-and-progress example.

Imported by the ``dramatiq`` worker processes, by the web app, and (by module path) by the Ray workers that run
the actor bodies, so importing it only builds objects: it connects to nothing and never touches Ray.

REDIS_URL          the broker and result backend (default redis://localhost:6379/0); cancel marks and progress
                   live in the result backend's Redis too
EXAMPLE_NAMESPACE  prefix of this example's Redis keys (default dramatiq-ray-example)
"""

from __future__ import annotations

import os
import time

import dramatiq
import redis
from dramatiq.brokers.redis import RedisBroker
from dramatiq.results.backends import RedisBackend

from dramatiq_ray import RayExecutionMiddleware, Results, report_progress

REDIS_URL = os.environ.get("REDIS_URL", "redis://localhost:6379/0")
NAMESPACE = os.environ.get("EXAMPLE_NAMESPACE", "dramatiq-ray-example")

broker = RedisBroker(url=REDIS_URL, namespace=NAMESPACE)
broker.add_middleware(
    Results(
        backend=RedisBackend(
            client=redis.Redis.from_url(REDIS_URL, socket_timeout=None), namespace=f"{NAMESPACE}-results"
        ),
        store_results=True,
    )
)
broker.add_middleware(RayExecutionMiddleware())
dramatiq.set_broker(broker)


@dramatiq.actor(max_retries=0)
def render(frames: int, seconds_per_frame: float) -> dict[str, int]:
    """Long work on Ray that says how far it got: one progress report per frame."""
    for frame in range(1, frames + 1):
        time.sleep(seconds_per_frame)
        report_progress(frame, frames, note=f"frame {frame} of {frames}")
    return {"frames": frames, "pid": os.getpid()}
