"""The broker and actors of the big-inputs example: bytes arguments over 64 KiB travel by reference.

Imported by the ``dramatiq`` worker processes, by the sender, and (by module path) by the Ray workers that run
the actor bodies, so importing it only builds objects: it connects to nothing and never touches Ray.

REDIS_URL          the broker and result backend (default redis://localhost:6379/0)
EXAMPLE_NAMESPACE  prefix of this example's Redis keys (default dramatiq-ray-big-inputs)
RESULTS_DIR        the blob store (default: dramatiq-ray-big-inputs-store in the temp dir); arguments go to its
                   args/ sub-directory while their messages wait
"""

from __future__ import annotations

import hashlib
import os
import tempfile

import dramatiq
import redis
from dramatiq.brokers.redis import RedisBroker
from dramatiq.results.backends import RedisBackend

from dramatiq_ray import FilesystemStore, RayExecutionMiddleware, Results, current_message

REDIS_URL = os.environ.get("REDIS_URL", "redis://localhost:6379/0")
NAMESPACE = os.environ.get("EXAMPLE_NAMESPACE", "dramatiq-ray-big-inputs")
STORE_DIR = os.environ.get("RESULTS_DIR") or os.path.join(tempfile.gettempdir(), "dramatiq-ray-big-inputs-store")

broker = RedisBroker(url=REDIS_URL, namespace=NAMESPACE)
broker.add_middleware(
    Results(
        backend=RedisBackend(
            client=redis.Redis.from_url(REDIS_URL, socket_timeout=None), namespace=f"{NAMESPACE}-results"
        ),
        store=FilesystemStore(STORE_DIR),
        max_inline_arg_bytes=64 * 1024,  # arguments over 64 KiB go to STORE_DIR/args, not into Redis
    )
)
broker.add_middleware(RayExecutionMiddleware())
dramatiq.set_broker(broker)


@dramatiq.actor(store_results=True, ray_options={"num_cpus": 1})
def fingerprint(image: bytes, *, label: str) -> dict[str, object]:
    """Runs in a Ray worker, which reads ``image`` from the store; the Dramatiq worker only saw a reference."""
    carried = current_message().args[0]
    return {
        "label": label,
        "bytes": len(image),
        "sha256": hashlib.sha256(image).hexdigest(),
        # {"__dramatiq_ray_arg__": "<pointer>"} for an argument sent by reference
        "worker saw": "a reference" if "__dramatiq_ray_arg__" in carried else "the value inline",
    }
