"""The success webhook of a message whose outcome could not be stored at first is sent once, after its outcome is
stored (see tests/results/test_unstored_outcome.py for the pipeline and callback cases)."""

from __future__ import annotations

import dramatiq
from dramatiq.results.backends import RedisBackend

from dramatiq_ray import Webhooks
from dramatiq_ray.webhooks import DELIVERY_ACTOR
from tests._services import wait_until
from tests.delivery.conftest import SECRET, Receiver
from tests.results._unstored import WAIT_S, install


def test_unstored_outcome_success_webhook_is_sent_once_after_the_outcome_is_stored(
    redis_broker, redis_client, redis_namespace, queue_name, start_worker, receiver: Receiver
) -> None:
    _, tally = install(redis_broker, redis_client, redis_namespace)
    redis_broker.add_middleware(Webhooks(secrets=[SECRET], allow_http=True, url=receiver.url(), backoff=10))

    @dramatiq.actor(broker=redis_broker, queue_name=queue_name, store_results=True, min_backoff=10, max_backoff=50)
    def work() -> int:
        return 7

    start_worker(redis_broker)
    message = work.send()
    tally.watched = (RedisBackend(client=redis_client, namespace=redis_namespace, use_namespace_prefix_keys=True),
                     message)  # fmt: skip
    assert message.get_result(block=True, timeout=WAIT_S * 1000) == 7
    wait_until(lambda: tally.acked["work"] >= 2, timeout=WAIT_S, what="work to run twice")
    receiver.wait_for(1, timeout=WAIT_S)
    wait_until(lambda: tally.settled(DELIVERY_ACTOR), timeout=WAIT_S, what="every delivery to be processed")

    assert tally.stored_when_delivery_enqueued == [True]
    assert len(receiver.requests) == 1
