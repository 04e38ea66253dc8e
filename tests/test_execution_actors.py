"""Which actors run on Ray and how Ray workers find them: by importing their module, else by value."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from typing import Any

import dramatiq
import pytest
from dramatiq.middleware import AsyncIO
from dramatiq.results import Results
from dramatiq.results.backends import StubBackend

from dramatiq_ray import RayExecutionMiddleware
from dramatiq_ray.callpath.body import Target, target_for

RESULT_TIMEOUT_MS = 120_000


@pytest.fixture
def app(ray_local: Any) -> Iterator[Any]:
    """The importable app module, its stub broker flushed afterwards."""
    from tests.apps import ray_tasks

    dramatiq.set_broker(ray_tasks.broker)
    yield ray_tasks
    ray_tasks.broker.flush_all()


def test_importable_actor_is_found_by_module_and_name(app) -> None:
    target = target_for(app.uses_module_globals)

    assert target == Target("uses_module_globals", module="tests.apps.ray_tasks", qualname="uses_module_globals")


def test_actor_defined_in_a_function_is_shipped_by_value(stub_broker) -> None:
    stub_broker.add_middleware(RayExecutionMiddleware())

    @dramatiq.actor(broker=stub_broker)
    def nested() -> None: ...

    assert target_for(nested).by_value


def test_importable_actor_body_can_use_module_globals_and_other_actors(app, start_worker) -> None:
    # Given a body that holds a module-level lock and calls another actor (neither pickles by value)
    start_worker(app.broker)

    outcome = app.uses_module_globals.send(5).get_result(block=True, timeout=RESULT_TIMEOUT_MS)

    # Then it ran in a Ray worker, which imported the module
    assert outcome == {"pid": outcome["pid"], "doubled": 10, "broker": "StubBroker"}
    assert outcome["pid"] != os.getpid()
    assert app._calls == []


def test_async_actor_runs_on_ray_with_its_current_message(app, start_worker) -> None:
    start_worker(app.broker)

    message = app.async_double.send(4)
    outcome = message.get_result(block=True, timeout=RESULT_TIMEOUT_MS)

    assert outcome["doubled"] == 8
    assert outcome["pid"] != os.getpid()
    assert outcome["message_id"] == message.message_id


def test_async_actor_defined_in_a_function_runs_on_ray(stub_broker, ray_local, start_worker) -> None:
    stub_broker.add_middleware(AsyncIO())
    stub_broker.add_middleware(Results(backend=StubBackend()))
    stub_broker.add_middleware(RayExecutionMiddleware())

    @dramatiq.actor(broker=stub_broker, store_results=True)
    async def pid_after_sleep() -> int:
        await asyncio.sleep(0.01)
        return os.getpid()

    start_worker(stub_broker)
    assert pid_after_sleep.send().get_result(block=True, timeout=RESULT_TIMEOUT_MS) != os.getpid()


def test_generic_actor_runs_on_ray(app, start_worker) -> None:
    assert not target_for(app.Triple.__actor__).by_value
    start_worker(app.broker)

    outcome = app.Triple.send(3).get_result(block=True, timeout=RESULT_TIMEOUT_MS)

    assert outcome["tripled"] == 9
    assert outcome["helper"] == "method"
    assert outcome["pid"] != os.getpid()


def test_generic_actor_called_directly_runs_locally(app) -> None:
    assert app.Triple(2)["pid"] == os.getpid()
