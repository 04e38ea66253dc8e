"""A class-based actor on warm replicas (``dramatiq_ray.ReplicaActor``), in an importable module: each replica
imports it and calls ``setup()`` once. The broker is a stub broker for in-process tests."""

from __future__ import annotations

import os
from typing import Any

from dramatiq.brokers.stub import StubBroker
from dramatiq.results.backends import StubBackend

from dramatiq_ray import RayExecutionMiddleware, ReplicaActor, Replicas, Results, replica_state

broker = StubBroker()
backend = StubBackend()
broker.add_middleware(Results(backend=backend, store_results=True))
broker.add_middleware(RayExecutionMiddleware(wait_slice=0.2))


class Embed(ReplicaActor):
    """Keeps a "model" on ``self`` in setup; each message reads it."""

    class Meta:
        broker = broker
        max_retries = 0
        replicas = Replicas(min=1, max=1, version="class-form")

    setups = 0

    def setup(self) -> dict[str, Any]:
        type(self).setups += 1
        self.model = {"loaded_in": os.getpid(), "scale": 10}
        return {"state_of": os.getpid()}

    def perform(self, value: int) -> dict[str, Any]:
        return {
            "embedded": value * self.model["scale"],
            "loaded_in": self.model["loaded_in"],
            "setups": type(self).setups,
            "state": replica_state(),
            "pid": os.getpid(),
        }
