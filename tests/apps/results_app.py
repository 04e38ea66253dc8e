"""A Redis broker with dramatiq-ray's Results spilling to a filesystem store, for the CLI tests.

DRAMATIQ_RAY_TEST_BROKER_URL   redis://...
DRAMATIQ_RAY_TEST_NAMESPACE    key namespace
DRAMATIQ_RAY_RESULT_STORAGE_FILESYSTEM_PATH   the store root (the same setting the CLI reads)
"""

from __future__ import annotations

import os

import dramatiq
from dramatiq.brokers.redis import RedisBroker
from dramatiq.results.backends import RedisBackend

from dramatiq_ray import FilesystemStore, Results

NAMESPACE = os.environ["DRAMATIQ_RAY_TEST_NAMESPACE"]
URL = os.environ["DRAMATIQ_RAY_TEST_BROKER_URL"]

broker = RedisBroker(url=URL, namespace=NAMESPACE)
broker.add_middleware(
    Results(
        backend=RedisBackend(url=URL, namespace=f"{NAMESPACE}-results"),
        store=FilesystemStore(os.environ["DRAMATIQ_RAY_RESULT_STORAGE_FILESYSTEM_PATH"]),
        max_inline_bytes=64,
    )
)
dramatiq.set_broker(broker)


@dramatiq.actor(store_results=True)
def make(size: int) -> str:
    return "x" * size


@dramatiq.actor(store_results=True, max_retries=0)
def explode() -> None:
    raise ValueError("exploded on purpose")
