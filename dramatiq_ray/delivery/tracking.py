"""What Webhooks keeps of a message between the hooks of one processing: when it started (and which attempt it
is), and, once it succeeded, when it finished and its result section, until its ack or nack."""

from __future__ import annotations

import logging
import threading
from typing import Any

__all__ = ["MAX_TRACKED", "Tracking"]

# The logger users set for webhooks (the middleware's module).
logger = logging.getLogger("dramatiq_ray.delivery.webhooks")

#: The most messages whose start and success are kept, per middleware: an entry goes at the message's ack or
#: nack, and at worker shutdown; one whose ack never came (an error in another middleware's before_ack) goes,
#: oldest first, once there are more than this.
MAX_TRACKED = 10_000


class Tracking:
    """Per message id: ``running`` (started ms, attempt) and ``succeeded`` (finished ms, result section), bounded
    by :data:`MAX_TRACKED` each, safe between worker threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.running: dict[str, tuple[int, int]] = {}
        self.succeeded: dict[str, tuple[int, dict[str, Any]]] = {}

    def start(self, message_id: str, started: int, attempt: int) -> None:
        with self._lock:
            self.running[message_id] = (started, attempt)
            _bound(self.running)

    def succeed(self, message_id: str, finished: int, result: dict[str, Any]) -> None:
        with self._lock:
            self.succeeded[message_id] = (finished, result)
            _bound(self.succeeded)

    def take(self, message_id: str) -> tuple[tuple[int, int] | None, tuple[int, dict[str, Any]] | None]:
        """Forget ``message_id``, returning what was kept of it."""
        with self._lock:
            return self.running.pop(message_id, None), self.succeeded.pop(message_id, None)

    def clear(self) -> None:
        with self._lock:
            self.running.clear()
            self.succeeded.clear()


def _bound(entries: dict[str, Any]) -> None:
    """Drop the oldest entries over :data:`MAX_TRACKED` (a dict keeps insertion order)."""
    while len(entries) > MAX_TRACKED:
        message_id = next(iter(entries))
        del entries[message_id]
        logger.debug("Webhooks forgets message %r, never acked nor nacked here.", message_id)
