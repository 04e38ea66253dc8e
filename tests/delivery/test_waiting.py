"""get_result_async: waiting for results in a coroutine without blocking the event loop or holding a thread per
waiter, reading spilled results off the loop, and gathering a group's results concurrently."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import dramatiq
import pytest
from dramatiq.results import ResultFailure, ResultTimeout
from dramatiq.results.backends import RedisBackend, StubBackend

from dramatiq_ray import ConfigurationError, FilesystemStore, Results, SpillingBackend, get_result_async
from dramatiq_ray.payloads.pointers import Pointer

TTL = 60_000


def message_for(n: int = 0) -> dramatiq.Message[Any]:
    return dramatiq.Message(queue_name="default", actor_name=f"waited-{n}", args=(), kwargs={}, options={})


def test_get_result_async_returns_the_result_once_it_is_stored() -> None:
    backend = StubBackend()
    message = message_for()

    async def main() -> Any:
        waiter = asyncio.create_task(get_result_async(message, backend=backend, timeout=10_000))
        await asyncio.sleep(0)
        assert not waiter.done()
        await asyncio.to_thread(backend.store_result, message, {"answer": 42}, TTL)
        return await waiter

    assert asyncio.run(main()) == {"answer": 42}


def test_get_result_async_raises_result_timeout_when_nothing_is_stored() -> None:
    with pytest.raises(ResultTimeout):
        asyncio.run(get_result_async(message_for(), backend=StubBackend(), timeout=50))


def test_get_result_async_raises_result_failure_for_a_failed_message() -> None:
    backend = StubBackend()
    message = message_for()
    backend.store_exception(message, ValueError("bad frame"), TTL)

    with pytest.raises(ResultFailure, match="bad frame"):
        asyncio.run(get_result_async(message, backend=backend, timeout=1_000))


def test_get_result_async_with_a_negative_timeout_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="milliseconds"):
        asyncio.run(get_result_async(message_for(), backend=StubBackend(), timeout=-1))


def test_get_result_async_holds_no_thread_per_waiter() -> None:
    # Given an event loop whose executor has 2 threads, and 20 waiters
    backend = StubBackend()
    messages = [message_for(n) for n in range(20)]

    async def main() -> list[Any]:
        asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(max_workers=2))
        waiters = [asyncio.create_task(get_result_async(m, backend=backend, timeout=30_000)) for m in messages]
        await asyncio.sleep(0)
        # When only the last message's result is stored
        backend.store_result(messages[-1], "last", TTL)
        # Then the last waiter finishes while the first ones still wait: none of them holds a thread meanwhile
        assert await asyncio.wait_for(waiters[-1], timeout=20) == "last"
        assert not any(w.done() for w in waiters[:-1])
        for n, message in enumerate(messages[:-1]):
            backend.store_result(message, n, TTL)
        return await asyncio.gather(*waiters)

    assert asyncio.run(main()) == [*range(19), "last"]


class GatedStore(FilesystemStore):
    """A filesystem store whose reads wait for a gate, to show where they run."""

    def __init__(self, path: str) -> None:
        super().__init__(path)
        self.entered = threading.Event()
        self.gate = threading.Event()

    def get(self, pointer: Pointer) -> bytes:
        self.entered.set()
        assert self.gate.wait(20), "the read ran on the event loop: the loop could not open the gate"
        return super().get(pointer)


def test_get_result_async_reads_a_spilled_result_off_the_event_loop(tmp_path: Any) -> None:
    # Given a spilled result whose store read blocks until the event loop opens a gate
    store = GatedStore(str(tmp_path))
    backend = SpillingBackend(StubBackend(), store=store, max_inline_bytes=0)
    message = message_for()
    backend.store_result(message, ["large", "value"], TTL)

    async def main() -> Any:
        waiter = asyncio.create_task(get_result_async(message, backend=backend))
        # When the read has started, the loop still runs: it waits for the read to start, then opens the gate
        await asyncio.to_thread(store.entered.wait, 20)
        assert not waiter.done()
        store.gate.set()
        return await waiter

    # Then the value comes back, read, verified and decoded in a thread
    assert asyncio.run(main()) == ["large", "value"]


def test_get_result_async_gathers_a_groups_results_from_a_worker(stub_broker, start_worker) -> None:
    stub_broker.add_middleware(Results(backend=StubBackend()))

    @dramatiq.actor(store_results=True)
    def square(n: int) -> int:
        return n * n

    start_worker(stub_broker)
    group = dramatiq.group(square.message(n) for n in range(8)).run()

    async def main() -> list[Any]:
        return await asyncio.gather(*(get_result_async(m, timeout=10_000) for m in group.children))

    assert asyncio.run(main()) == [n * n for n in range(8)]


def test_get_result_async_reads_a_spilled_result_through_a_redis_backend(
    redis_client: Any, redis_namespace: str, tmp_path: Any
) -> None:
    backend = SpillingBackend(
        RedisBackend(client=redis_client, namespace=f"{redis_namespace}-results"),
        store=FilesystemStore(str(tmp_path)),
        max_inline_bytes=10,
    )
    small, large = message_for(1), message_for(2)

    async def main() -> list[Any]:
        waiters = asyncio.gather(get_result_async(small, backend=backend), get_result_async(large, backend=backend))
        await asyncio.to_thread(backend.store_result, small, 1, TTL)
        await asyncio.to_thread(backend.store_result, large, "x" * 1000, TTL)
        return list(await waiters)

    assert asyncio.run(main()) == [1, "x" * 1000]
