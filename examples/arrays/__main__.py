"""``python -m examples.arrays``: start a dramatiq worker process, send messages, print results, stop."""

from __future__ import annotations

import sys

from .._workers import dramatiq_workers, redis_answers, say


def main() -> int:
    try:
        import numpy  # noqa: F401
    except ImportError:
        say("This example needs numpy: pip install numpy (in the same environment as dramatiq-ray).")
        return 2
    from . import send
    from .tasks import NAMESPACE, REDIS_URL, RESULTS_DIR

    if not redis_answers(REDIS_URL):
        return 2
    say(f"Broker: Redis at {REDIS_URL} (keys under {NAMESPACE!r}). Large arrays go to {RESULTS_DIR} as .npy.")
    try:
        with dramatiq_workers("examples.arrays.tasks", processes=1, threads=4):
            return send.main()
    except RuntimeError as error:
        say(f"FAILED: {error}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
