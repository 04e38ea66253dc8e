"""The broker and actors of the S3 example.

REDIS_URL          the broker and result backend (default redis://localhost:6379/0)
EXAMPLE_NAMESPACE  prefix of this example's Redis keys (default dramatiq-ray-example-s3)
S3_BUCKET          the bucket large results go to; it must exist (default dramatiq-ray-example)
S3_PREFIX          the key prefix inside the bucket (default dramatiq-ray/examples)
S3_ENDPOINT_URL    an S3-compatible endpoint such as MinIO's http://localhost:9000 (default: AWS S3)

Credentials come from boto3's usual sources (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, a profile, an IAM role).
The Ray task writes the large result to S3 itself, so Ray workers need the same credentials: locally they inherit
this environment; on a cluster, give them a role or pass the variables in a runtime_env.
"""

from __future__ import annotations

import os

import dramatiq
import redis
from dramatiq.brokers.redis import RedisBroker
from dramatiq.results.backends import RedisBackend

from dramatiq_ray import RayExecutionMiddleware, Results, S3Store

REDIS_URL = os.environ.get("REDIS_URL", "redis://localhost:6379/0")
NAMESPACE = os.environ.get("EXAMPLE_NAMESPACE", "dramatiq-ray-example-s3")
S3_BUCKET = os.environ.get("S3_BUCKET", "dramatiq-ray-example")
S3_PREFIX = os.environ.get("S3_PREFIX", "dramatiq-ray/examples")
S3_ENDPOINT_URL = os.environ.get("S3_ENDPOINT_URL") or None

store = S3Store(S3_BUCKET, S3_PREFIX, endpoint_url=S3_ENDPOINT_URL)
broker = RedisBroker(url=REDIS_URL, namespace=NAMESPACE)
broker.add_middleware(
    Results(
        # No socket timeout: blocking get_result calls wait longer than redis-py's default 5 s.
        backend=RedisBackend(client=redis.Redis.from_url(REDIS_URL, socket_timeout=None), namespace=f"{NAMESPACE}-r"),
        store=store,
        max_inline_bytes=64 * 1024,
    )
)
broker.add_middleware(RayExecutionMiddleware())
dramatiq.set_broker(broker)


@dramatiq.actor(store_results=True)
def measurements(sensor: str, count: int) -> dict[str, object]:
    """A large result (about 30 bytes a reading): written to S3 by the Ray task, Redis keeps a pointer."""
    readings = [{"t": second, "v": round((second * 7919) % 1000 / 10, 1)} for second in range(count)]
    return {"sensor": sensor, "readings": readings}
