"""Waiting for a result from asyncio code without blocking the event loop.

Each waiter looks for its result with a short non-blocking read (``get_result(block=False)``: one ``LINDEX`` on
Redis) run in the loop's default executor, then sleeps on the loop with a backoff that grows from 5 ms to
:data:`POLL_CAP` seconds. A thread is used only for the duration of one look, never for the whole wait, so
thousands of waiters share the executor's few threads, and ``asyncio.gather`` over a group's messages waits for
them concurrently. When the result is there, reading it (and reading a spilled result from its blob store,
verifying and decoding it) happens in that same executor call, off the loop.
"""

from __future__ import annotations

import asyncio
from typing import Any

import dramatiq
from dramatiq.results import ResultBackend, ResultMissing, ResultTimeout
from dramatiq.results.backend import DEFAULT_TIMEOUT

from ..errors import ConfigurationError
from ..results.backend import AnyMessage

__all__ = ["POLL_CAP", "get_result_async"]

#: The first pause between two looks, in seconds.
POLL_START = 0.005
#: The longest pause between two looks, in seconds: the most a result can wait unseen once it is stored.
POLL_CAP = 0.25


async def get_result_async(
    message: AnyMessage, *, backend: ResultBackend | None = None, timeout: int | None = None
) -> Any:
    """Wait for ``message``'s result in a coroutine, as ``message.get_result(block=True)`` does in a thread.

    Example::

        results = await asyncio.gather(*(get_result_async(m, timeout=30_000) for m in messages))

    Parameters:
      message: The message whose result to wait for.
      backend: The result backend (default: the global broker's, as ``message.get_result`` uses); a
        ``SpillingBackend`` (what ``dramatiq_ray.Results`` installs) reads spilled results back.
      timeout: How long to wait, in milliseconds (default 10 s, as Dramatiq). ``0`` looks once.

    Returns:
      The result, read from the store when it was spilled.

    Raises:
      ResultTimeout: no result was stored within ``timeout``.
      ResultFailure: the actor failed (after its last retry).
      ConfigurationError: ``timeout`` is negative or not a number of milliseconds, or the broker has no
        results backend.
      DigestOnlyResultError, BlobReadError (and subclasses): as ``message.get_result`` for spilled results.
    """
    if timeout is None:
        timeout = DEFAULT_TIMEOUT
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout < 0:
        raise ConfigurationError(f"get_result_async: timeout must be a number of milliseconds >= 0, got {timeout!r}.")
    if backend is None:
        try:
            backend = dramatiq.get_broker().get_results_backend()
        except RuntimeError as error:
            raise ConfigurationError(
                "get_result_async needs a result backend: pass backend=..., or add a Results middleware to the broker."
            ) from error
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout / 1000
    pause = POLL_START
    while True:
        try:
            return await asyncio.to_thread(backend.get_result, message, block=False)
        except ResultMissing:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise ResultTimeout(message) from None  # type: ignore[no-untyped-call]
        await asyncio.sleep(min(pause, remaining))
        pause = min(pause * 2, POLL_CAP)
