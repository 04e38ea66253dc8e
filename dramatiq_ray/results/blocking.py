"""A blocking read over any Dramatiq result backend that ends within a few tens of milliseconds of its timeout.

A backend that blocks natively (Redis: a blocking pop) is asked in slices of whole seconds, at most
:data:`BLOCK_SLICE` each (client libraries put a socket timeout under each read, and Redis rounds a blocking
read's timeout down to whole seconds); a backend that cannot block, and every backend in a wait's last second, is
looked at with pauses that double from 2 ms up to :data:`POLL_CAP`.
"""

from __future__ import annotations

import time
from typing import Any

from dramatiq.results import ResultBackend, ResultMissing, ResultTimeout
from dramatiq.results.backend import DEFAULT_TIMEOUT

__all__ = ["BLOCK_SLICE", "POLL_CAP", "wait_for_result"]

#: The longest single blocking read on a wrapped backend that blocks natively (Redis), in milliseconds: client
#: libraries put a socket timeout under each read (redis-py 8 defaults to 5 s).
BLOCK_SLICE = 2_000
#: The longest pause between two looks at a backend that cannot block, or in a wait's last second, in seconds.
POLL_CAP = 0.02


def wait_for_result(backend: ResultBackend, message: Any, timeout: int | None) -> Any:
    """What ``backend.get_result(message)`` returns once the result is stored, waiting up to ``timeout``
    milliseconds (``None``: Dramatiq's default, 10 s).

    Raises:
      ResultTimeout: waiting timed out.
      Exception: whatever ``backend.get_result`` raised besides ``ResultMissing`` and ``ResultTimeout``.
    """
    deadline = time.monotonic() + (DEFAULT_TIMEOUT if timeout is None else timeout) / 1000
    blocks_natively = type(backend).get_result is not ResultBackend.get_result
    pause = 0.002
    while True:
        remaining = deadline - time.monotonic()
        if blocks_natively and remaining >= 1:
            # Whole seconds only: Redis rounds a blocking read's timeout down.
            slice_ms = min(int(remaining) * 1000, BLOCK_SLICE)
            try:
                return backend.get_result(message, block=True, timeout=slice_ms)
            except ResultTimeout:
                continue
        try:
            return backend.get_result(message, block=False)
        except ResultMissing:
            if remaining <= 0:
                raise ResultTimeout(message) from None  # type: ignore[no-untyped-call]
        time.sleep(min(pause, max(remaining, 0)))
        pause = min(pause * 2, POLL_CAP)
