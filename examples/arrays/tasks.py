"""The broker and actors of the arrays example: numpy arrays computed in Ray workers come back as arrays.

Imported by the ``dramatiq`` worker processes, by the sender, and (by module path) by the Ray workers that run
the actor bodies, so importing it only builds objects: it connects to nothing and never touches Ray.

REDIS_URL          the broker and result backend (default redis://localhost:6379/0)
EXAMPLE_NAMESPACE  prefix of this example's Redis keys (default dramatiq-ray-arrays)
RESULTS_DIR        where large results are written (default: dramatiq-ray-arrays-results in the temp dir)
"""

from __future__ import annotations

import os
import tempfile

import dramatiq
import numpy as np
import redis
from dramatiq.brokers.redis import RedisBroker
from dramatiq.results.backends import RedisBackend

from dramatiq_ray import FilesystemStore, RayExecutionMiddleware, Results

REDIS_URL = os.environ.get("REDIS_URL", "redis://localhost:6379/0")
NAMESPACE = os.environ.get("EXAMPLE_NAMESPACE", "dramatiq-ray-arrays")
RESULTS_DIR = os.environ.get("RESULTS_DIR") or os.path.join(tempfile.gettempdir(), "dramatiq-ray-arrays-results")

broker = RedisBroker(url=REDIS_URL, namespace=NAMESPACE)
broker.add_middleware(
    Results(
        backend=RedisBackend(
            client=redis.Redis.from_url(REDIS_URL, socket_timeout=None), namespace=f"{NAMESPACE}-results"
        ),
        store=FilesystemStore(RESULTS_DIR),
        max_inline_bytes=64 * 1024,  # arrays larger than 64 KiB go to RESULTS_DIR as .npy blobs
        compression="gzip",  # only where it saves at least 10%
    )
)
broker.add_middleware(RayExecutionMiddleware())
dramatiq.set_broker(broker)


@dramatiq.actor(store_results=True, ray_options={"num_cpus": 1})
def simulate(size: int, seed: int) -> np.ndarray:
    """A size x size float64 field, computed in a Ray worker; written to the store from there as .npy."""
    rng = np.random.default_rng(seed)
    field = rng.standard_normal((size, size))
    for _ in range(10):
        field = (field + np.roll(field, 1, axis=0) + np.roll(field, 1, axis=1)) / 3
    return field


@dramatiq.actor(store_results=True)
def summarize(field: np.ndarray) -> dict[str, float]:
    """Receives the previous step's array itself (read from the store where this body runs)."""
    return {"shape": list(field.shape), "dtype": str(field.dtype), "mean": float(field.mean())}


@dramatiq.actor(store_results=True)
def thumbnail(size: int) -> np.ndarray:
    """A small uint8 array: stays inline in Redis (in a tagged envelope) and still comes back as an array."""
    return (np.arange(size * size) % 256).astype(np.uint8).reshape(size, size)
