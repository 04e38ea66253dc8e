"""A worker app for the CLI test of webhook delivery: a Redis broker that notices a dead worker within seconds.

DRAMATIQ_RAY_TEST_BROKER_URL   redis://...
DRAMATIQ_RAY_TEST_NAMESPACE    Redis key namespace
DRAMATIQ_RAY_TEST_WEBHOOK_URL  where the webhooks go
"""

from __future__ import annotations

import os

import dramatiq
from dramatiq.brokers.redis import MAINTENANCE_SCALE, RedisBroker
from dramatiq.results.backends import RedisBackend

from dramatiq_ray import Results, Webhooks

BROKER_URL = os.environ["DRAMATIQ_RAY_TEST_BROKER_URL"]
NAMESPACE = os.environ["DRAMATIQ_RAY_TEST_NAMESPACE"]
WEBHOOK_URL = os.environ["DRAMATIQ_RAY_TEST_WEBHOOK_URL"]
SECRET = "whsec_ZHJhbWF0aXEtcmF5IHRlc3Qga2V5IDAxMjM0NTY3ODk="

# Every command may run maintenance, and a worker silent for 3 s is dead: its unacked messages are requeued.
broker = RedisBroker(url=BROKER_URL, namespace=NAMESPACE, heartbeat_timeout=3_000, maintenance_chance=MAINTENANCE_SCALE)
broker.add_middleware(Results(backend=RedisBackend(url=BROKER_URL, namespace=f"{NAMESPACE}-results")))
# A POST lasts at most 0.5 + 2 s, so its lease ends 4.5 s after it was taken.
broker.add_middleware(Webhooks(secrets=[SECRET], allow_http=True, connect_timeout=500, read_timeout=2_000, backoff=100))
dramatiq.set_broker(broker)


@dramatiq.actor(store_results=True, webhook=WEBHOOK_URL)
def render(n: int) -> int:
    return n * 2
