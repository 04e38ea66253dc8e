"""``python -m examples.inference``: start a dramatiq worker process, send messages, print results, stop."""

from __future__ import annotations

import sys

from .._workers import dramatiq_workers, redis_answers, say


def main() -> int:
    from . import send
    from .tasks import NAMESPACE, REDIS_URL

    if not redis_answers(REDIS_URL):
        return 2
    say(f"Broker: Redis at {REDIS_URL} (keys under {NAMESPACE!r}). The model loads once per warm replica.")
    try:
        with dramatiq_workers("examples.inference.tasks", processes=1, threads=4):
            return send.main()
    except RuntimeError as error:
        say(f"FAILED: {error}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
