"""``python -m examples.webhooks``: start a webhook receiver and a dramatiq worker, send messages, check, stop."""

from __future__ import annotations

import os
import sys
from urllib.parse import urlsplit

from dramatiq_ray.execution.local_head import free_port

from .._workers import dramatiq_workers, redis_answers, say


def main() -> int:
    # The receiver listens on a free port; the workers (and tasks.py here) learn its URL from WEBHOOK_URL.
    url = os.environ.setdefault("WEBHOOK_URL", f"http://127.0.0.1:{free_port()}/hooks/dramatiq")
    from . import send
    from .receiver import Receiver
    from .tasks import REDIS_URL

    if not redis_answers(REDIS_URL):
        return 2
    say(f"Receiver: {url} (verifies each signature, deduplicates on webhook-id, answers 503 once).")
    try:
        with (
            Receiver(urlsplit(url).port or 80, fail_first=True) as receiver,
            dramatiq_workers("examples.webhooks.tasks", processes=1, threads=4, env={"WEBHOOK_URL": url}),
        ):
            return send.main(receiver)
    except RuntimeError as error:
        say(f"FAILED: {error}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
