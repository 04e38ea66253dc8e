"""Warm replicas on a Ray cluster of two nodes (a head and a second ``ray start`` joining it, on this machine):
one pool places its replicas on both nodes, and one worker is served by both."""

from __future__ import annotations

import dramatiq
import pytest
from dramatiq.results import ResultMissing
from dramatiq.results.backends import RedisBackend

from tests._services import wait_until

pytestmark = [pytest.mark.cli, pytest.mark.slow, pytest.mark.timeout(600)]

WAIT = 300


def test_replicas_run_on_both_nodes_and_serve_one_worker(
    two_node_head, dramatiq_cli, redis_url, redis_namespace, queue_name
) -> None:
    # Given a worker attached to the head, and an actor whose two replicas each take a node's only slot
    env = {
        "DRAMATIQ_RAY_TEST_BROKER_URL": redis_url,
        "DRAMATIQ_RAY_TEST_NAMESPACE": redis_namespace,
        "DRAMATIQ_RAY_TEST_QUEUE": queue_name,
        "DRAMATIQ_RAY_TEST_RAY_ADDRESS": two_node_head.address,
    }
    cli = dramatiq_cli("tests.apps.replicas_app", "--processes", "1", "--threads", "2", env=env)
    cli.wait_ready()

    # When two messages run at once (each body waits for the other, so each holds its replica)
    from dramatiq.brokers.redis import RedisBroker

    producer = RedisBroker(url=redis_url, namespace=redis_namespace)
    messages = [
        dramatiq.Message(queue_name=queue_name, actor_name="on_node", args=(value,), kwargs={}, options={})
        for value in range(2)
    ]
    for message in messages:
        producer.enqueue(message)
    backend = RedisBackend(url=redis_url, namespace=f"{redis_namespace}-results")

    def result(message: dramatiq.Message) -> dict | None:
        try:
            return backend.get_result(message)  # polled: a blocking read would outlast the socket timeout
        except ResultMissing:
            return None

    results = [wait_until(lambda m=m: result(m), timeout=WAIT, interval=0.1, what="a result") for m in messages]
    producer.close()

    # Then the two calls ran on two replicas, on two nodes, each after its own setup
    assert sorted(r["value"] for r in results) == [0, 1]
    assert len({r["node"] for r in results}) == 2
    assert len({r["load_id"] for r in results}) == 2
    assert cli.stop() == 0, cli.output()
