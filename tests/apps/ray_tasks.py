"""Actors in an importable module, run on Ray by importing this module in the Ray worker.

The bodies use what cannot be pickled by value (a module-level lock, another actor, the broker), and include an
``async def`` actor and a class-based ``GenericActor``. The broker is a stub broker for in-process tests.
"""

from __future__ import annotations

import asyncio
import os
import threading
from typing import Any

import dramatiq
from dramatiq.brokers.stub import StubBroker
from dramatiq.middleware import AsyncIO
from dramatiq.results import Results
from dramatiq.results.backends import StubBackend

from dramatiq_ray import RayExecutionMiddleware, current_message

broker = StubBroker()
broker.add_middleware(AsyncIO())
broker.add_middleware(Results(backend=StubBackend()))
broker.add_middleware(RayExecutionMiddleware())

_lock = threading.Lock()
_calls: list[int] = []


@dramatiq.actor(broker=broker, store_results=True)
def double(value: int) -> int:
    return value * 2


@dramatiq.actor(broker=broker, store_results=True)
def uses_module_globals(value: int) -> dict[str, Any]:
    """Holds a module-level lock and calls another actor's function: neither pickles by value."""
    with _lock:
        _calls.append(value)
        return {"pid": os.getpid(), "doubled": double(value), "broker": type(double.broker).__name__}


@dramatiq.actor(broker=broker, store_results=True)
async def async_double(value: int) -> dict[str, Any]:
    await asyncio.sleep(0)
    message = current_message()
    return {"pid": os.getpid(), "doubled": value * 2, "message_id": message.message_id if message else None}


class Triple(dramatiq.GenericActor):
    """A class-based actor."""

    class Meta:
        broker = broker
        store_results = True

    def perform(self, value: int) -> dict[str, Any]:
        return {"pid": os.getpid(), "tripled": value * 3, "helper": self.helper()}

    def helper(self) -> str:
        return "method"
