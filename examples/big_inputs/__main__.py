"""``python -m examples.big_inputs``: start a dramatiq worker process, send messages, print results, stop."""

from __future__ import annotations

import sys
from pathlib import Path

from .._workers import dramatiq_workers, redis_answers, say


def main() -> int:
    from . import send
    from .tasks import NAMESPACE, REDIS_URL, STORE_DIR

    if not redis_answers(REDIS_URL):
        return 2
    say(f"Broker: Redis at {REDIS_URL} (keys under {NAMESPACE!r}). Arguments over 64 KiB go to {STORE_DIR}/args.")
    try:
        with dramatiq_workers("examples.big_inputs.tasks", processes=1, threads=2):
            status = send.main()
    except RuntimeError as error:
        say(f"FAILED: {error}")
        return 1
    left = send.argument_blobs()
    say(f"Argument blobs left once every message is done: {len(left)}.")
    if status == 0 and left:
        say(f"UNEXPECTED: {len(left)} argument blobs were not released: {[str(Path(p).name) for p in left]}")
        return 1
    return status


if __name__ == "__main__":
    sys.exit(main())
