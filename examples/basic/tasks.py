"""The broker and actors of the basic example.

Imported by the ``dramatiq`` worker processes, by the sender, and (by module path) by the Ray workers that run
the actor bodies, so importing it only builds objects: it connects to nothing and never touches Ray.

REDIS_URL          the broker and result backend (default redis://localhost:6379/0)
EXAMPLE_NAMESPACE  prefix of this example's Redis keys (default dramatiq-ray-example)
RESULTS_DIR        where large results are written (default: dramatiq-ray-example-results in the temp dir)
"""

from __future__ import annotations

import hashlib
import os
import tempfile

import dramatiq
import redis
from dramatiq.brokers.redis import RedisBroker
from dramatiq.results.backends import RedisBackend

from dramatiq_ray import FilesystemStore, RayExecutionMiddleware, Results

REDIS_URL = os.environ.get("REDIS_URL", "redis://localhost:6379/0")
NAMESPACE = os.environ.get("EXAMPLE_NAMESPACE", "dramatiq-ray-example")
RESULTS_DIR = os.environ.get("RESULTS_DIR") or os.path.join(tempfile.gettempdir(), "dramatiq-ray-example-results")
#: Results whose JSON encoding is larger than this go to RESULTS_DIR; Redis keeps a short pointer.
MAX_INLINE_BYTES = 64 * 1024

broker = RedisBroker(url=REDIS_URL, namespace=NAMESPACE)
broker.add_middleware(
    Results(
        # redis-py reads with a 5 s socket timeout by default: a blocking get_result(timeout=...) longer than
        # that needs a client without one.
        backend=RedisBackend(
            client=redis.Redis.from_url(REDIS_URL, socket_timeout=None), namespace=f"{NAMESPACE}-results"
        ),
        store=FilesystemStore(RESULTS_DIR),
        max_inline_bytes=MAX_INLINE_BYTES,
    )
)
# No address: under the dramatiq CLI, the worker processes share one local Ray head started beside them.
broker.add_middleware(RayExecutionMiddleware())
dramatiq.set_broker(broker)


@dramatiq.actor(store_results=True)
def add(x: int, y: int) -> int:
    """A small result: stays in Redis."""
    return x + y


@dramatiq.actor(store_results=True, ray_options={"num_cpus": 1})
def count_primes(limit: int) -> dict[str, int]:
    """CPU-heavy pure Python, run in a Ray worker process (outside the Dramatiq worker's GIL)."""
    sieve = bytearray([1]) * (limit + 1)
    sieve[0:2] = b"\x00\x00"
    for number in range(2, int(limit**0.5) + 1):
        if sieve[number]:
            sieve[number * number :: number] = bytes(len(range(number * number, limit + 1, number)))
    return {"primes": sum(sieve), "pid": os.getpid()}


@dramatiq.actor(store_results=True)
def make_report(rows: int) -> list[str]:
    """A large result (about 90 bytes a row): written to RESULTS_DIR, Redis keeps only a pointer."""
    return [f"row {index:06d} {hashlib.sha256(str(index).encode()).hexdigest()}" for index in range(rows)]
