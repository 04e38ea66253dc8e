"""``python -m examples.basic``: start two dramatiq worker processes, send messages, print results, stop."""

from __future__ import annotations

import sys

from .._workers import dramatiq_workers, redis_answers, say
from . import send
from .tasks import NAMESPACE, REDIS_URL, RESULTS_DIR


def main() -> int:
    if not redis_answers(REDIS_URL):
        return 2
    say(f"Broker: Redis at {REDIS_URL} (keys under {NAMESPACE!r}). Large results go to {RESULTS_DIR}.")
    say("Ray: no address given, so the workers share one local Ray head that they start and stop themselves.")
    try:
        with dramatiq_workers("examples.basic.tasks", processes=2, threads=4):
            return send.main()
    except RuntimeError as error:
        say(f"FAILED: {error}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
