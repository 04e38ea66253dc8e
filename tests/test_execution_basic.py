"""RayExecutionMiddleware on an in-process worker: where bodies run, options, results."""

from __future__ import annotations

import os
from typing import Any

import dramatiq
import pytest
from dramatiq.results import Results
from dramatiq.results.backends import StubBackend

from dramatiq_ray import RayExecutionMiddleware, current_message
from tests.conftest import RAY_TEST_RESOURCE

RESULT_TIMEOUT_MS = 120_000


@pytest.fixture
def broker(stub_broker: Any, ray_local: Any) -> Any:
    """A stub broker with results and Ray execution, on the test run's local Ray."""
    stub_broker.add_middleware(Results(backend=StubBackend()))
    stub_broker.add_middleware(RayExecutionMiddleware())
    return stub_broker


def test_actor_body_runs_in_a_ray_worker_process(broker, start_worker) -> None:
    @dramatiq.actor(broker=broker, store_results=True)
    def where(value: int) -> list[int]:
        return [os.getpid(), value * 2]

    start_worker(broker)
    pid, doubled = where.send(21).get_result(block=True, timeout=RESULT_TIMEOUT_MS)

    assert doubled == 42
    assert pid != os.getpid()


def test_actor_called_directly_runs_in_the_calling_process(broker) -> None:
    @dramatiq.actor(broker=broker)
    def where() -> int:
        return os.getpid()

    assert where() == os.getpid()


def test_actor_with_ray_false_runs_in_the_worker_process(broker, start_worker) -> None:
    @dramatiq.actor(broker=broker, store_results=True, ray=False)
    def where() -> int:
        return os.getpid()

    start_worker(broker)
    assert where.send().get_result(block=True, timeout=RESULT_TIMEOUT_MS) == os.getpid()


def test_middleware_disabled_by_default_runs_only_actors_that_opt_in(stub_broker, ray_local, start_worker) -> None:
    stub_broker.add_middleware(Results(backend=StubBackend()))
    stub_broker.add_middleware(RayExecutionMiddleware(enabled_by_default=False))

    @dramatiq.actor(broker=stub_broker, store_results=True)
    def local() -> int:
        return os.getpid()

    @dramatiq.actor(broker=stub_broker, store_results=True, ray=True)
    def remote() -> int:
        return os.getpid()

    start_worker(stub_broker)
    assert local.send().get_result(block=True, timeout=RESULT_TIMEOUT_MS) == os.getpid()
    assert remote.send().get_result(block=True, timeout=RESULT_TIMEOUT_MS) != os.getpid()


def test_actor_ray_options_resources_reach_the_ray_task(broker, start_worker) -> None:
    # Given an actor asking for a custom resource only the test Ray node advertises
    @dramatiq.actor(broker=broker, store_results=True, ray_options={"resources": {RAY_TEST_RESOURCE: 1.5}})
    def assigned() -> dict[str, float]:
        import ray

        return dict(ray.get_runtime_context().get_assigned_resources())

    start_worker(broker)
    resources = assigned.send().get_result(block=True, timeout=RESULT_TIMEOUT_MS)

    assert resources[RAY_TEST_RESOURCE] == 1.5


def test_message_ray_options_override_actor_ray_options(broker, start_worker) -> None:
    @dramatiq.actor(broker=broker, store_results=True, ray_options={"num_cpus": 1})
    def assigned() -> dict[str, float]:
        import ray

        return dict(ray.get_runtime_context().get_assigned_resources())

    start_worker(broker)
    message = assigned.send_with_options(ray_options={"num_cpus": 2, "resources": {RAY_TEST_RESOURCE: 1}})
    resources = message.get_result(block=True, timeout=RESULT_TIMEOUT_MS)

    assert resources["CPU"] == 2
    assert resources[RAY_TEST_RESOURCE] == 1


def test_middleware_runtime_env_reaches_the_ray_task(stub_broker, ray_local, start_worker) -> None:
    stub_broker.add_middleware(Results(backend=StubBackend()))
    stub_broker.add_middleware(RayExecutionMiddleware(runtime_env={"env_vars": {"DRAMATIQ_RAY_PROBE": "middleware"}}))

    @dramatiq.actor(broker=stub_broker, store_results=True, ray_options={"runtime_env": {"env_vars": {"B": "actor"}}})
    def env() -> list[str | None]:
        return [os.environ.get("DRAMATIQ_RAY_PROBE"), os.environ.get("B")]

    start_worker(stub_broker)
    assert env.send().get_result(block=True, timeout=RESULT_TIMEOUT_MS) == ["middleware", "actor"]


def test_current_message_inside_the_ray_task_is_the_processed_message(broker, start_worker) -> None:
    @dramatiq.actor(broker=broker, store_results=True)
    def describe(value: int, *, flag: str) -> dict[str, Any]:
        message = current_message()
        assert message is not None
        return {
            "id": message.message_id,
            "actor": message.actor_name,
            "args": list(message.args),
            "kwargs": message.kwargs,
            "retries": message.options.get("retries", 0),
            "pid": os.getpid(),
        }

    start_worker(broker)
    message = describe.send(3, flag="x")
    seen = message.get_result(block=True, timeout=RESULT_TIMEOUT_MS)

    assert seen["id"] == message.message_id
    assert seen["actor"] == "describe"
    assert seen["args"] == [3]
    assert seen["kwargs"] == {"flag": "x"}
    assert seen["retries"] == 0
    assert seen["pid"] != os.getpid()


def test_current_message_in_a_worker_thread_is_the_processed_message(broker, start_worker) -> None:
    @dramatiq.actor(broker=broker, store_results=True, ray=False)
    def describe() -> str | None:
        message = current_message()
        return message.message_id if message else None

    start_worker(broker)
    message = describe.send()
    assert message.get_result(block=True, timeout=RESULT_TIMEOUT_MS) == message.message_id


def test_current_message_outside_any_message_is_none() -> None:
    assert current_message() is None


def test_actor_body_runs_in_a_ray_worker_over_a_redis_broker(
    redis_broker, redis_url, redis_namespace, ray_local, start_worker
) -> None:
    from dramatiq.results.backends import RedisBackend

    redis_broker.add_middleware(Results(backend=RedisBackend(url=redis_url, namespace=f"{redis_namespace}-results")))
    redis_broker.add_middleware(RayExecutionMiddleware())

    @dramatiq.actor(broker=redis_broker, store_results=True)
    def where(value: int) -> list[int]:
        return [os.getpid(), value + 1]

    start_worker(redis_broker, threads=2)
    messages = [where.send(value) for value in range(4)]
    outcomes = [message.get_result(block=True, timeout=RESULT_TIMEOUT_MS) for message in messages]

    assert [value for _, value in outcomes] == [1, 2, 3, 4]
    assert os.getpid() not in {pid for pid, _ in outcomes}


def test_max_in_flight_bounds_the_ray_tasks_of_a_worker_process(stub_broker, ray_local, start_worker, tmp_path) -> None:
    # Given one slot for Ray tasks and two worker threads
    stub_broker.add_middleware(RayExecutionMiddleware(max_in_flight=1))

    @dramatiq.actor(broker=stub_broker)
    def hold(name: str) -> None:
        import time

        (tmp_path / f"{name}.start").write_text(repr(time.time()))
        time.sleep(1)
        (tmp_path / f"{name}.end").write_text(repr(time.time()))

    start_worker(stub_broker, threads=2)
    hold.send("a")
    hold.send("b")
    stub_broker.join(hold.queue_name, fail_fast=True, timeout=RESULT_TIMEOUT_MS)

    # Then the two bodies ran one after the other, not side by side
    start = {name: float((tmp_path / f"{name}.start").read_text()) for name in "ab"}
    end = {name: float((tmp_path / f"{name}.end").read_text()) for name in "ab"}
    first, second = sorted("ab", key=start.__getitem__)
    assert end[first] <= start[second]


@pytest.mark.parametrize(
    "arguments",
    [{"max_in_flight": 0}, {"max_in_flight": True}, {"ray_init_kwargs": {"address": "auto"}}, {"address": ""}],
)
def test_invalid_middleware_settings_are_refused(arguments) -> None:
    from dramatiq_ray import ConfigurationError

    with pytest.raises(ConfigurationError):
        RayExecutionMiddleware(**arguments)


def test_message_ray_option_overrides_the_actor(broker, start_worker) -> None:
    @dramatiq.actor(broker=broker, store_results=True)
    def where() -> int:
        return os.getpid()

    start_worker(broker)
    message = where.send_with_options(ray=False)

    assert message.get_result(block=True, timeout=RESULT_TIMEOUT_MS) == os.getpid()


def test_remote_function_is_created_once_per_actor_and_reused(stub_broker, ray_local, start_worker) -> None:
    stub_broker.add_middleware(Results(backend=StubBackend()))
    middleware = RayExecutionMiddleware()
    stub_broker.add_middleware(middleware)

    @dramatiq.actor(broker=stub_broker, store_results=True)
    def double(value: int) -> int:
        return value * 2

    start_worker(stub_broker)
    assert double.send(1).get_result(block=True, timeout=RESULT_TIMEOUT_MS) == 2
    first = middleware._runner._remotes["double"][1]
    message = double.send_with_options(args=(2,), ray_options={"num_cpus": 2})
    assert message.get_result(block=True, timeout=RESULT_TIMEOUT_MS) == 4

    assert middleware._runner._remotes["double"][1] is first
