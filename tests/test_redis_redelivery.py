"""How Dramatiq's Redis broker gives a dead consumer's unacked messages to another: only during queue maintenance,
which runs on a command with probability ``maintenance_chance`` per million, for consumers whose heartbeat is older
than ``heartbeat_timeout`` (docs/reliability.md). A real Redis; the dead consumer is one that took a message and
stopped calling Redis without acking it, as a SIGKILLed worker does."""

from __future__ import annotations

import time
from typing import Any

import dramatiq
from dramatiq.brokers.redis import RedisBroker


def test_redis_broker_tuned_for_maintenance_redelivers_a_dead_consumers_message(
    redis_url: str, redis_namespace: str, queue_name: str
) -> None:
    # Given two brokers (two worker processes) that run maintenance on every command, with a 300 ms heartbeat
    tuned: dict[str, Any] = {"url": redis_url, "namespace": redis_namespace, "heartbeat_timeout": 300,
                             "maintenance_chance": 1_000_000}  # fmt: skip
    dead, alive = RedisBroker(**tuned), RedisBroker(**tuned)
    try:
        for broker in (dead, alive):
            broker.declare_queue(queue_name)
        sent = dead.enqueue(dramatiq.Message(queue_name=queue_name, actor_name="work", args=(), kwargs={}, options={}))
        # When one of them takes the message and dies without acking it (it stops sending heartbeats)
        taken = next(iter(dead.consume(queue_name, prefetch=1, timeout=1_000)))
        assert taken is not None and taken.message_id == sent.message_id

        # Then the other one gets it once the dead one's heartbeat is older than heartbeat_timeout
        consumer = alive.consume(queue_name, prefetch=1, timeout=100)
        deadline = time.monotonic() + 60
        received = None
        while received is None and time.monotonic() < deadline:
            received = next(consumer)
        assert received is not None and received.message_id == sent.message_id
        consumer.ack(received)
    finally:
        for broker in (dead, alive):
            broker.close()
