"""The broker and actors of the webhooks example.

Every message's outcome is POSTed, signed, to WEBHOOK_URL once it is done: a success, or a failure after its last
retry. Delivery runs from its own queue on the same workers, and is retried when the receiver does not answer 2xx.
No Ray here: webhooks, presigned URLs and async waiting work with or without it.

REDIS_URL          the broker, result backend and delivery ledger (default redis://localhost:6379/0)
EXAMPLE_NAMESPACE  prefix of this example's Redis keys (default dramatiq-ray-example-webhooks)
RESULTS_DIR        where large results are written (default: dramatiq-ray-example-results in the temp dir)
WEBHOOK_URL        where webhooks go (default http://127.0.0.1:8765/hooks/dramatiq: the example's receiver)
WEBHOOK_SECRET     the shared signing secret, whsec_<base64> (default: a fixed example secret; make your own with
                   python -c "from dramatiq_ray.webhooks import new_secret; print(new_secret())")
"""

from __future__ import annotations

import os
import tempfile

import dramatiq
import redis
from dramatiq.brokers.redis import RedisBroker
from dramatiq.results.backends import RedisBackend

from dramatiq_ray import FilesystemStore, Results, Retries, Webhooks

REDIS_URL = os.environ.get("REDIS_URL", "redis://localhost:6379/0")
NAMESPACE = os.environ.get("EXAMPLE_NAMESPACE", "dramatiq-ray-example-webhooks")
RESULTS_DIR = os.environ.get("RESULTS_DIR") or os.path.join(tempfile.gettempdir(), "dramatiq-ray-example-results")
WEBHOOK_URL = os.environ.get("WEBHOOK_URL", "http://127.0.0.1:8765/hooks/dramatiq")
WEBHOOK_SECRET = os.environ.get("WEBHOOK_SECRET", "whsec_ZHJhbWF0aXEtcmF5IGV4YW1wbGUga2V5OiBjaGFuZ2UgbWUh")

broker = RedisBroker(url=REDIS_URL, namespace=NAMESPACE)
broker.add_middleware(
    Results(
        backend=RedisBackend(client=redis.Redis.from_url(REDIS_URL, socket_timeout=None), namespace=f"{NAMESPACE}-r"),
        store=FilesystemStore(RESULTS_DIR),
        max_inline_bytes=16 * 1024,
    )
)
broker.add_middleware(Retries(max_attempts=2, backoff=100))
# The receiver is local, so plain http is allowed here; in production webhooks go to https URLs only.
# Retries of a delivery start after 200 ms here (5 s by default).
broker.add_middleware(Webhooks(secrets=[WEBHOOK_SECRET], url=WEBHOOK_URL, allow_http=True, backoff=200))
dramatiq.set_broker(broker)


@dramatiq.actor(store_results=True)
def render(frame: int) -> dict[str, int]:
    """A small result: the webhook carries the value itself."""
    return {"frame": frame, "pixels": frame * 1000}


@dramatiq.actor(store_results=True)
def report(rows: int) -> list[str]:
    """A large result: spilled to RESULTS_DIR; the webhook carries its pointer and SHA-256."""
    return [f"row {index:06d}" for index in range(rows)]


@dramatiq.actor(store_results=True)
def divide(a: int, b: int) -> float:
    """Fails on b=0 on both attempts: the webhook reports the failure once, after the last retry."""
    return a / b
