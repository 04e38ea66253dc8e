"""A worker killed (SIGKILL) while it POSTs a webhook: the delivery is not lost. It runs again on a new worker
once the dead one's lease on it expires, with the same webhook-id: the one case where a receiver sees the
same webhook twice (it may have acted on the first), which is why it deduplicates on that key."""

from __future__ import annotations

from typing import Any

import dramatiq
import pytest
from dramatiq.brokers.redis import RedisBroker

from dramatiq_ray.delivery.ledger import RedisLedger
from dramatiq_ray.webhooks import ATTEMPT_HEADER, ID_HEADER, verify
from tests._services import wait_until
from tests.delivery.conftest import SECRET, Receiver

pytestmark = pytest.mark.cli


@pytest.mark.timeout(240)
def test_webhook_being_posted_by_a_killed_worker_is_posted_again_with_the_same_idempotency_key(
    dramatiq_cli: Any, redis_url: str, redis_namespace: str, redis_client: Any, receiver: Receiver
) -> None:
    env = {
        "DRAMATIQ_RAY_TEST_BROKER_URL": redis_url,
        "DRAMATIQ_RAY_TEST_NAMESPACE": redis_namespace,
        "DRAMATIQ_RAY_TEST_WEBHOOK_URL": receiver.url(),
    }
    args = ("tests.delivery.app", "--processes", "1", "--threads", "2")
    # Given a worker whose webhook POST gets no answer
    receiver.script("hang")
    first = dramatiq_cli(*args, env=env)
    first.wait_ready()
    producer = RedisBroker(url=redis_url, namespace=redis_namespace)
    try:
        producer.declare_queue("default")
        message = producer.enqueue(
            dramatiq.Message(queue_name="default", actor_name="render", args=(21,), kwargs={}, options={})
        )
        receiver.wait_for(1)
        # When the worker is killed in the middle of that POST, and another one starts
        first.kill()
        killed_at = receiver.requests[0].at
        second = dramatiq_cli(*args, env=env)
        second.wait_ready()

        # Then the delivery runs again once the dead worker's lease expires, and is answered
        requests = receiver.wait_for(2, timeout=120)
        ledger = RedisLedger(redis_client, prefix=f"{redis_namespace}:dramatiq-ray-webhooks")
        wait_until(lambda: ledger.settled(message.message_id) == "delivered", timeout=30, what="the webhook to settle")
    finally:
        producer.close()

    assert [r.answer for r in requests] == ["hang", 200]
    assert requests[1].at > killed_at
    assert {r.headers[ID_HEADER] for r in requests} == {message.message_id}
    assert [r.headers[ATTEMPT_HEADER] for r in requests] == ["1", "1"]
    assert verify(requests[1].body, requests[1].headers, [SECRET])["result"] == {"value": 42}
