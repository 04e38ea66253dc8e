"""Helpers of the tests of a message whose outcome could not be stored: a real Redis result backend whose first
store raises ``ConnectionError`` (a fault injected in this process: a real outage cannot be timed to hit exactly
one store), and a middleware that counts what was enqueued and acked."""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any

import dramatiq
from dramatiq.common import q_name
from dramatiq.middleware import Middleware
from dramatiq.results import ResultMissing
from dramatiq.results.backends import RedisBackend

from dramatiq_ray import Results
from dramatiq_ray.webhooks import DELIVERY_ACTOR

WAIT_S = 60


class FailsFirstStore(RedisBackend):
    """A real Redis result backend whose first store raises ``ConnectionError`` (an injected fault, see above)."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self._lock = threading.Lock()
        self.stores = 0

    def _store(self, message_key: str, result: Any, ttl: int) -> None:
        with self._lock:
            self.stores += 1
            first = self.stores == 1
        if first:
            raise ConnectionError("injected: the result backend did not answer")
        super()._store(message_key, result, ttl)


class Tally(Middleware):
    """Counts, per actor, the messages enqueued and acked (on their real queue, not a delay queue's hop), and
    whether ``watched``'s result was readable when each delivery of a webhook was enqueued."""

    def __init__(self) -> None:
        self.enqueued: Counter[str] = Counter()
        self.acked: Counter[str] = Counter()
        self.watched: tuple[RedisBackend, dramatiq.Message[Any]] | None = None
        self.stored_when_delivery_enqueued: list[bool] = []
        self._lock = threading.Lock()

    def before_enqueue(self, broker: dramatiq.Broker, message: dramatiq.Message[Any], delay: int) -> None:
        stored = None
        if message.actor_name == DELIVERY_ACTOR and self.watched is not None:
            backend, watched = self.watched
            try:
                backend.get_result(watched)
                stored = True
            except ResultMissing:
                stored = False
        with self._lock:
            self.enqueued[message.actor_name] += 1
            if stored is not None:
                self.stored_when_delivery_enqueued.append(stored)

    def after_ack(self, broker: dramatiq.Broker, message: dramatiq.MessageProxy) -> None:
        if message.queue_name == q_name(message.queue_name):
            with self._lock:
                self.acked[message.actor_name] += 1

    def settled(self, actor_name: str) -> bool:
        with self._lock:
            return self.acked[actor_name] >= self.enqueued[actor_name] > 0


def install(broker: dramatiq.Broker, redis_client: Any, namespace: str) -> tuple[FailsFirstStore, Tally]:
    backend = FailsFirstStore(client=redis_client, namespace=namespace, use_namespace_prefix_keys=True)
    tally = Tally()
    broker.add_middleware(tally)
    broker.add_middleware(Results(backend=backend))
    return backend, tally
