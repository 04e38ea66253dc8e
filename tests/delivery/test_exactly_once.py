"""Exactly one successful delivery per message, across a worker restart, on a Redis broker: the delivery that
was waiting for its retry when the worker stopped, and the message itself run again, post nothing more once a
2xx was recorded."""

from __future__ import annotations

import logging
import time
from typing import Any

import dramatiq
import pytest
from dramatiq.brokers.redis import RedisBroker
from dramatiq.results.backends import RedisBackend

from dramatiq_ray import Results, Webhooks
from dramatiq_ray.delivery.ledger import RedisLedger
from dramatiq_ray.webhooks import ID_HEADER, verify
from tests._services import wait_until
from tests.delivery.conftest import SECRET, Receiver

#: The first POST fails; its retry is due this long after (no jitter), once the first worker has stopped.
RETRY_DELAY_MS = 1_500


def build(broker: dramatiq.Broker, redis_client: Any, namespace: str, url: str) -> dramatiq.Actor[Any, Any]:
    """One worker host's configuration: the same on both sides of the restart."""
    broker.add_middleware(Results(backend=RedisBackend(client=redis_client, namespace=f"{namespace}-results")))
    broker.add_middleware(Webhooks(secrets=[SECRET], allow_http=True, backoff=RETRY_DELAY_MS, jitter=0))

    @dramatiq.actor(broker=broker, store_results=True, webhook=url)
    def render(n: int) -> int:
        return n * 2

    return render


def test_webhook_is_delivered_exactly_once_across_a_worker_restart(
    redis_broker: RedisBroker,
    redis_url: str,
    redis_namespace: str,
    redis_client: Any,
    receiver: Receiver,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Given a worker whose first webhook POST is answered 500, so a retry is scheduled on the delivery queue
    render = build(redis_broker, redis_client, redis_namespace, receiver.url())
    receiver.script(500)
    first = dramatiq.Worker(redis_broker, worker_timeout=100, worker_threads=2)
    first.start()
    try:
        message = render.send(21)
        receiver.wait_for(1)
    finally:
        # When that worker stops (its pending retry goes back to Redis)
        first.stop()
    stopped = time.monotonic()

    # And a new worker starts, and the message itself runs again there (as after a redelivery)
    restarted = RedisBroker(url=redis_url, namespace=redis_namespace)
    restarted.emit_after("process_boot")
    build(restarted, redis_client, redis_namespace, receiver.url())
    second = dramatiq.Worker(restarted, worker_timeout=100, worker_threads=2)
    with caplog.at_level(logging.DEBUG, logger="dramatiq_ray.delivery.webhooks"):
        second.start()
        try:
            restarted.enqueue(message)
            requests = receiver.wait_for(2)
            # the retry scheduled before the restart runs after it, and finds the webhook settled
            wait_until(
                lambda: any("already settled" in r.getMessage() for r in caplog.records),
                timeout=30,
                what="the retry scheduled before the restart to run",
            )
        finally:
            second.stop()
            restarted.close()

    # Then the receiver got exactly one successful POST for the message, after the restart
    assert [r.answer for r in receiver.requests] == [500, 200]
    assert requests[1].at > stopped
    assert {r.headers[ID_HEADER] for r in requests} == {message.message_id}
    assert verify(requests[1].body, requests[1].headers, [SECRET])["result"] == {"value": 42}
    ledger = RedisLedger(redis_client, prefix=f"{redis_namespace}:dramatiq-ray-webhooks")
    assert ledger.settled(message.message_id) == "delivered"
