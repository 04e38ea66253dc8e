"""Plain functions that tests declare as actors run by the ``ray_job`` runner; each Ray job imports this module.

They leave their side effects in files the test names, since a job runs in another process.
"""

from __future__ import annotations

import time
from pathlib import Path


def add(a: int, b: int) -> int:
    return a + b


def fail(text: str) -> None:
    raise ValueError(text)


def count_then_wait(counter: str, release: str, result: str) -> str:
    """Record one run in ``counter``, then wait silently until ``release`` exists (at most ten minutes)."""
    with open(counter, "a") as file:
        file.write("ran\n")
    deadline = time.monotonic() + 600
    while not Path(release).exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    return result


def repeat(text: str, times: int) -> str:
    return text * times


def raw_bytes(size: int) -> bytes:
    return b"\x07" * size


def a_set() -> set[int]:
    """A result no JSON encoder takes."""
    return {1, 2}


def log_then_fail(text: str) -> None:
    """Log at INFO, then raise: the record must still come back."""
    import logging

    logging.getLogger("tests.apps.job_body").info("logged before failing: %s", text)
    raise ValueError(text)


def log_and_add(a: int, b: int) -> int:
    import logging

    logging.getLogger("tests.apps.job_body").info("adding %d and %d", a, b)
    return a + b
