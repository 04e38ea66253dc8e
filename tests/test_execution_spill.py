"""Oversized results are written to the blob store from inside the Ray task: only the pointer comes back."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import dramatiq
import pytest
from dramatiq.results.backends import StubBackend

from dramatiq_ray import FilesystemStore, RayExecutionMiddleware, Results, SpilledResult

RESULT_TIMEOUT_MS = 120_000
BIG = 5 * 1024 * 1024


@pytest.fixture
def spilling_broker(stub_broker: Any, ray_local: Any, tmp_path: Path) -> tuple[Any, RayExecutionMiddleware, Path]:
    store_dir = tmp_path / "blobs"
    store_dir.mkdir()
    stub_broker.add_middleware(Results(backend=StubBackend(), store=FilesystemStore(store_dir), max_inline_bytes=1024))
    middleware = RayExecutionMiddleware()
    stub_broker.add_middleware(middleware)
    return stub_broker, middleware, store_dir


def spy_on_ray_returns(middleware: RayExecutionMiddleware) -> list[Any]:
    """Record what each Ray task hands back to the worker (a spy on the real path, nothing replaced)."""
    returned: list[Any] = []
    runner = middleware._runner
    run = runner.run

    def recording(call: Any) -> Any:
        value = run(call)
        returned.append(value)
        return value

    runner.run = recording  # type: ignore[method-assign]
    return returned


def test_oversized_result_is_spilled_in_the_ray_task_so_its_pointer_returns(spilling_broker, start_worker) -> None:
    broker, middleware, store_dir = spilling_broker
    returned = spy_on_ray_returns(middleware)

    @dramatiq.actor(broker=broker, store_results=True)
    def big() -> str:
        return "x" * BIG

    start_worker(broker)
    value = big.send().get_result(block=True, timeout=RESULT_TIMEOUT_MS)

    assert value == "x" * BIG
    assert len(returned) == 1
    assert isinstance(returned[0], SpilledResult)
    assert sum(path.stat().st_size for path in store_dir.rglob("*") if path.is_file()) > BIG


def test_small_result_comes_back_inline_from_the_ray_task(spilling_broker, start_worker) -> None:
    broker, middleware, _ = spilling_broker
    returned = spy_on_ray_returns(middleware)

    @dramatiq.actor(broker=broker, store_results=True)
    def small() -> str:
        return "tiny"

    start_worker(broker)

    assert small.send().get_result(block=True, timeout=RESULT_TIMEOUT_MS) == "tiny"
    assert returned == ["tiny"]


def test_result_of_an_actor_without_store_results_is_not_spilled(spilling_broker, start_worker) -> None:
    broker, middleware, store_dir = spilling_broker
    returned = spy_on_ray_returns(middleware)

    @dramatiq.actor(broker=broker, max_retries=0)
    def big_unstored() -> str:
        return "y" * (64 * 1024)

    start_worker(broker)
    big_unstored.send()
    broker.join(big_unstored.queue_name, fail_fast=True, timeout=RESULT_TIMEOUT_MS)

    assert returned == ["y" * (64 * 1024)]
    assert not any(path.is_file() for path in store_dir.rglob("*"))


@pytest.mark.parametrize("ray_first", [True, False], ids=["ray-before-results", "ray-after-results"])
def test_actor_defined_in_a_function_runs_on_ray_and_spills_whatever_the_middleware_order(
    stub_broker, ray_local, tmp_path, start_worker, ray_first: bool
) -> None:
    # Given Results and RayExecutionMiddleware added in either order, and an actor Ray can only get by value
    results = Results(backend=StubBackend(), store=FilesystemStore(tmp_path), max_inline_bytes=1024)
    ordered = [RayExecutionMiddleware(), results] if ray_first else [results, RayExecutionMiddleware()]
    for middleware in ordered:
        stub_broker.add_middleware(middleware)

    @dramatiq.actor(store_results=True)
    def produce(n: int) -> str:
        return "x" * n

    start_worker(stub_broker)
    # When it runs, then the user's function (not a wrapper) is what Ray ran, and its large result spilled
    small, big = produce.send(10), produce.send(BIG)
    assert small.get_result(block=True, timeout=RESULT_TIMEOUT_MS) == "x" * 10
    assert big.get_result(block=True, timeout=RESULT_TIMEOUT_MS) == "x" * BIG
    assert list(tmp_path.rglob("*.json"))
