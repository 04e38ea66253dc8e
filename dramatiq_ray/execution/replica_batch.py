"""Micro-batching on a replica (``Replicas(batch=Batch(...))``), as Ray Serve's ``@serve.batch`` does.

Calls that arrive together are gathered, up to ``max_size`` or for at most ``max_wait_ms`` after the first, into
one call of the body with the list of their single arguments. The body returns a list of as many results: each
message gets its own element (after its own spill plan), or, when the body raised, that exception. A result that
is not a list of the right length fails every message of the batch.
"""

from __future__ import annotations

import asyncio
import inspect
from concurrent.futures import Executor
from typing import Any

from ..callpath.crossing import portable
from ..errors import ReplicaError
from ..payloads.plan import SpillPlan

__all__ = ["Batcher"]


class Batcher:
    """Gathers one replica's calls into batches and runs each batch in a thread of the replica's executor."""

    def __init__(self, spec: Any, executor: Executor) -> None:
        self.spec = spec
        self.executor = executor
        self.batch = spec.batch
        self.queue: list[tuple[Any, Any, SpillPlan | None, asyncio.Future[Any]]] = []
        self.timer: asyncio.TimerHandle | None = None
        self.running: set[asyncio.Future[None]] = set()  # referenced until done, so none is collected mid-batch

    async def submit(self, item: Any, message: Any, plan: SpillPlan | None) -> Any:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self.queue.append((item, message, plan, future))
        if len(self.queue) >= self.batch.max_size:
            self._flush()
        elif self.timer is None:
            self.timer = loop.call_later(self.batch.max_wait_ms / 1000, self._flush)
        return await future

    def _flush(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        batch, self.queue = self.queue[: self.batch.max_size], self.queue[self.batch.max_size :]
        if self.queue:
            self.timer = asyncio.get_running_loop().call_later(self.batch.max_wait_ms / 1000, self._flush)
        if batch:
            task = asyncio.ensure_future(self._run(batch))
            self.running.add(task)
            task.add_done_callback(self.running.discard)

    async def _run(self, batch: list[tuple[Any, Any, SpillPlan | None, asyncio.Future[Any]]]) -> None:
        loop = asyncio.get_running_loop()
        try:
            results = await loop.run_in_executor(self.executor, self._call, [entry[:3] for entry in batch])
        except BaseException as error:
            for *_, future in batch:
                if not future.done():
                    future.set_exception(error)
            return
        for (*_, future), result in zip(batch, results, strict=True):
            if not future.done():
                if isinstance(result, BaseException):
                    future.set_exception(result)
                else:
                    future.set_result(result)

    def _call(self, entries: list[tuple[Any, Any, SpillPlan | None]]) -> list[Any]:
        actor_name = self.spec.target.actor_name
        items = []
        for item, _message, plan in entries:
            items.append(plan.read_inputs((item,), {})[0][0] if plan is not None else item)
        try:
            results = self.spec.target.resolve()(items)
            if inspect.isawaitable(results):
                results = asyncio.run(_await(results))
        except Exception as error:
            crossed = portable(error, actor_name)  # as one message's exception crosses (callpath/crossing.py)
            if crossed is error:
                raise
            raise crossed from None
        if not isinstance(results, list | tuple) or len(results) != len(items):
            got = f"a list of {len(results)}" if isinstance(results, list | tuple) else type(results).__name__
            raise ReplicaError(
                f"Actor {actor_name!r} batches its messages and must return a list with one result per input: it "
                f"was given {len(items)} and returned {got}. Every message of the batch failed."
            )
        out: list[Any] = []
        for result, (_, _, plan) in zip(results, entries, strict=True):
            try:
                out.append(plan.apply(result) if plan is not None else result)
            except Exception as error:  # one result that cannot be stored fails its own message only
                out.append(error)
        return out


async def _await(awaitable: Any) -> Any:
    return await awaitable
